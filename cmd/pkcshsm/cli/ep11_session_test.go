package cli

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/paths"
)

var ep11Q = testenv.EP11APQNs

// newEP11Root makes a root (internal/testenv) with EP11 tokens in slot 2
// (STRICT_MODE and VHSM_MODE) and slot 3 (STRICT_MODE only).
func newEP11Root(t *testing.T) paths.Layout {
	t.Helper()
	layout := testenv.NewRoot(t,
		testenv.Slot{ID: 2, Type: "ep11", Label: "both", Options: "STRICT_MODE\nVHSM_MODE\n"},
		testenv.Slot{ID: 3, Type: "ep11", Label: "strict", Options: "STRICT_MODE\n"}).Layout
	for _, slot := range []string{"2", "3"} {
		ok(t, lines(soPIN, soPIN), "token", "init", "--slot", slot, "--label", "t"+slot)
		ok(t, lines(soPIN, userPIN, userPIN), "pin", "set", "--slot", slot)
	}
	return layout
}

func simSessionCount(t *testing.T, layout paths.Layout) int {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	n := 0
	for _, q := range ep11Q {
		l, _, err := h.SessionList(q)
		if err != nil {
			t.Fatal(err)
		}
		n += len(l)
	}
	return n
}

// startClient starts a tokenclient on slot and waits for its login.
func startClient(t *testing.T, bin, slot string) (*client, string) {
	t.Helper()
	c := &client{Dialog: testenv.StartDialog(t, exec.Command(bin, slot))}
	return c, c.ask(t, userPIN)
}

func showJSON(t *testing.T, slot string) []ep11SessionJSON {
	t.Helper()
	var out []ep11SessionJSON
	if err := json.Unmarshal([]byte(ok(t, lines(userPIN), "ep11-session", "show", "--slot", slot, "--json")), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEP11SessionTool: the card PIN is set through the tool (bad ones
// refused), a running program's session is shown and protected, and after
// kill -9 the tool logs out what the program left.
func TestEP11SessionTool(t *testing.T) {
	layout := newEP11Root(t)
	_, cl := binaries(t)

	// VHSM_MODE without a card PIN: the program cannot log in.
	c0, got := startClient(t, cl, "2")
	if !strings.Contains(got, "no card PIN") || !strings.Contains(got, "slot 2") {
		t.Fatalf("login without a card PIN: %q", got)
	}
	c0.Close()
	for _, bad := range []struct{ pin, msg string }{
		{"short", "at least 8"}, {"seventeen-chars!!", "at most 16"}, {"tab\there-pin", "refuses"},
	} {
		r := pkcshsm(t, lines(userPIN, bad.pin, bad.pin), "ep11-session", "vhsmpin", "--slot", "2")
		if r.code == 0 || !strings.Contains(r.stderr, bad.msg) || !strings.Contains(r.stderr, "hint:") {
			t.Fatalf("card PIN %q: exit %d\n%s", bad.pin, r.code, r.stderr)
		}
	}
	if r := pkcshsm(t, lines(userPIN, "card-pin-1", "card-pin-2"), "ep11-session", "vhsmpin", "--slot", "2"); r.code == 0 {
		t.Fatal("mismatched card PINs accepted")
	}
	if out := ok(t, lines(userPIN, "card-pin-1", "card-pin-1"), "ep11-session", "vhsmpin", "--slot", "2"); !strings.Contains(out, "VHSM PIN successfully set.") {
		t.Fatalf("vhsmpin: %q", out)
	}
	if n := len(showJSON(t, "2")); n != 0 {
		t.Fatalf("%d sessions before any program ran (the tool logs in none)", n)
	}

	c1, got := startClient(t, cl, "2")
	if got != "ready" {
		t.Fatalf("tokenclient: %q", got)
	}
	c2, got := startClient(t, cl, "3")
	if got != "ready" {
		t.Fatalf("tokenclient on slot 3: %q", got)
	}
	pid := c1.Cmd.Process.Pid
	sess := showJSON(t, "2")
	if len(sess) != 1 || sess[0].PID != pid || !sess[0].Running || !sess[0].Strict || !sess[0].VHSM ||
		strings.Join(sess[0].APQNs, ",") != "06.0033,0E.0033" {
		t.Fatalf("show --json: %+v, want one running session of pid %d on both APQNs", sess, pid)
	}
	text := ok(t, lines(userPIN), "ep11-session", "show", "--slot", "2")
	for _, want := range []string{"Using slot #2...", strings.ToUpper(sess[0].ID) + ":", fmt.Sprintf("Pid:\t%d (still running)", pid), "1 EP11-Sessions displayed"} {
		if !strings.Contains(text, want) {
			t.Fatalf("show output lacks %q:\n%s", want, text)
		}
	}
	// strict+VHSM: a strict and the shared VHSM session on each APQN;
	// slot 3: a strict one on each.
	if n := simSessionCount(t, layout); n != 6 {
		t.Fatalf("%d EP11 sessions on the adapters, want 6", n)
	}
	// A live program's session is not logged out without --force.
	r := pkcshsm(t, lines(userPIN), "ep11-session", "logout", "--slot", "2", "--pid", fmt.Sprint(pid))
	if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf("process %d is still running", pid)) ||
		!strings.Contains(r.stderr, "slot 2") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("logout of a live session: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := len(showJSON(t, "2")); n != 1 || simSessionCount(t, layout) != 6 {
		t.Fatal("the refused logout changed something")
	}
	// Unknown id.
	r = pkcshsm(t, lines(userPIN), "ep11-session", "logout", "--slot", "2", "--id", strings.Repeat("ab", 16))
	if r.code == 0 || !strings.Contains(r.stderr, "no stored EP11 session has id abab") {
		t.Fatalf("unknown id: exit %d\n%s", r.code, r.stderr)
	}
	for _, args := range [][]string{{"--id", "xyz"}, {"--dead", "--pid", "3"}, {}} {
		if r := pkcshsm(t, lines(userPIN), append([]string{"ep11-session", "logout", "--slot", "2"}, args...)...); r.code == 0 || !strings.Contains(r.stderr, "hint:") {
			t.Fatalf("logout %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}

	// kill -9: the session stays behind until the tool cleans it up.
	if err := c1.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	sess = showJSON(t, "2")
	if len(sess) != 1 || sess[0].Running {
		t.Fatalf("after kill -9: %+v, want the session, not running", sess)
	}
	// The adapters still hold the killed program's sessions.
	if n := simSessionCount(t, layout); n != 6 {
		t.Fatalf("%d EP11 sessions on the adapters after kill -9, want 6", n)
	}
	out := ok(t, lines(userPIN), "ep11-session", "logout", "--slot", "2", "--dead")
	if !strings.Contains(out, strings.ToUpper(sess[0].ID)+": logged out") || !strings.Contains(out, "1 EP11-Sessions logged out") {
		t.Fatalf("logout --dead:\n%s", out)
	}
	if n := len(showJSON(t, "2")); n != 0 {
		t.Fatalf("%d sessions after logout --dead", n)
	}
	// Only slot 3's program's sessions are left on the adapters.
	if n := simSessionCount(t, layout); n != 2 {
		t.Fatalf("%d EP11 sessions left, want slot 3's 2", n)
	}
	if got := c2.ask(t, "list"); got != "keys:" {
		t.Fatalf("the other program after the cleanup: %q", got)
	}
}

// TestEP11SessionsExhausted: a login beyond the adapter's limit fails
// clearly; the programs already running are not disturbed.
func TestEP11SessionsExhausted(t *testing.T) {
	layout := newEP11Root(t)
	_, cl := binaries(t)
	limitSessions(t, layout, ep11Q[1], 1)
	c1, got := startClient(t, cl, "3")
	if got != "ready" {
		t.Fatalf("first program: %q", got)
	}
	_, got = startClient(t, cl, "3")
	if !strings.Contains(got, "slot 3") || !strings.Contains(got, "APQN 0E.0033 holds 1 EP11 sessions, its limit") {
		t.Fatalf("second program: %q", got)
	}
	if got := c1.ask(t, "list"); got != "keys:" {
		t.Fatalf("first program after the refused login: %q", got)
	}
	if n := simSessionCount(t, layout); n != 2 {
		t.Fatalf("%d EP11 sessions, want the first program's 2 (the refused login left none)", n)
	}
}

// TestEP11DeadSessionsLoggedOutAutomatically: a program killed with
// kill -9 leaves its EP11 sessions on the adapters; the next program that
// starts an EP11 session of the token logs them out itself, without an
// operator. With the adapter's limit at one session, the new program's
// login works only because of that.
func TestEP11DeadSessionsLoggedOutAutomatically(t *testing.T) {
	layout := newEP11Root(t)
	_, cl := binaries(t)
	limitSessions(t, layout, ep11Q[1], 1)
	c1, got := startClient(t, cl, "3")
	if got != "ready" {
		t.Fatalf("first program: %q", got)
	}
	dead := c1.Cmd.Process.Pid
	if err := c1.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	if sess := showJSON(t, "3"); len(sess) != 1 || sess[0].PID != dead || sess[0].Running {
		t.Fatalf("after kill -9: %+v, want the dead program's session", sess)
	}
	if n := simSessionCount(t, layout); n != 2 {
		t.Fatalf("%d EP11 sessions on the adapters after kill -9, want the dead program's 2", n)
	}
	c2, got := startClient(t, cl, "3")
	if got != "ready" {
		t.Fatalf("second program, with the dead one's session filling the adapter: %q", got)
	}
	sess := showJSON(t, "3")
	if len(sess) != 1 || sess[0].PID != c2.Cmd.Process.Pid || !sess[0].Running {
		t.Fatalf("sessions: %+v, want only the second program's", sess)
	}
	if n := simSessionCount(t, layout); n != 2 {
		t.Fatalf("%d EP11 sessions on the adapters, want the second program's 2", n)
	}
	if got := c2.ask(t, "list"); got != "keys:" {
		t.Fatalf("second program: %q", got)
	}
}

// limitSessions sets the EP11 session limit of q, as `hsmsim fault
// --max-sessions` does.
func limitSessions(t *testing.T, layout paths.Layout, q apqn.ID, n int) {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Do(t.Context(), func(tx *sim.Tx) error { return tx.SetMaxSessions(q, n) }); err != nil {
		t.Fatal(err)
	}
}
