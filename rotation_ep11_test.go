package pkcshsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestRotationEP11SessionModes is the end-to-end master key rotation on
// EP11 tokens that bind their keys to EP11 sessions: STRICT_MODE (slot 5),
// VHSM_MODE (slot 6) and both (slot 7), with two applications (p11load)
// using session and token keys of all three throughout, the real daemon and
// the real tools. It checks zero failed application operations, that every
// key ends under the new wrapping key with its previous blob kept, and that
// no EP11 session is left once the applications ended.
func TestRotationEP11SessionModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A root of internal/testenv (the simulated EP11 APQNs 06.0033 and
	// 0e.0033; its CCA APQNs hold no EP11 session) with an EP11 token per
	// session mode.
	r := testenv.NewRootParallel(t,
		testenv.Slot{ID: 5, Type: "ep11", Label: "ep11-5", Options: "STRICT_MODE\n"},
		testenv.Slot{ID: 6, Type: "ep11", Label: "ep11-6", Options: "VHSM_MODE\n"},
		testenv.Slot{ID: 7, Type: "ep11", Label: "ep11-7", Options: "STRICT_MODE\nVHSM_MODE\n"})
	const user, so, apqns = testenv.UserPIN, testenv.SOPIN, "06.0033,0e.0033"
	run := func(stdin string, name string, args ...string) string {
		t.Helper()
		res := r.Run(name, stdin, args...)
		if res.Code != 0 {
			t.Fatalf("%s %v: exit %d\n%s%s", name, args, res.Code, res.Stdout, res.Stderr)
		}
		return res.Stdout
	}
	lines := func(s ...string) string { return strings.Join(s, "\n") + "\n" }

	start := time.Now()
	defer func() { t.Logf("rotation took %s", time.Since(start).Round(time.Second)) }()
	for _, s := range []string{"5", "6", "7"} {
		run(lines(so, so), "pkcshsm", "token", "init", "--slot", s, "--label", "ep11-"+s)
		run(lines(so, user, user), "pkcshsm", "pin", "set", "--slot", s)
		if s != "5" {
			run(lines(user, "card-pin-"+s, "card-pin-"+s), "pkcshsm", "ep11-session", "vhsmpin", "--slot", s)
		}
		for _, typ := range []string{"aes", "ec"} {
			run(lines(user), "pkcshsm", "keys", "generate", "--slot", s, "--type", typ, "--label", typ+"-"+s)
		}
	}

	r.Daemon("--log-format", "text")
	var apps []*testenv.Process
	for i := range 2 {
		apps = append(apps, r.App([]uint{5, 6, 7},
			"-report", filepath.Join(dir, fmt.Sprintf("app%d.json", i)),
			"-log", filepath.Join(dir, fmt.Sprintf("app%d.log", i))))
	}
	for i := range apps {
		waitFor(t, fmt.Sprintf("application %d connected to pkcshsmd", i), func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("app%d.log", i)))
			return bytes.Contains(b, []byte("connected to pkcshsmd"))
		})
	}
	// Each application has a strict session on slots 5 and 7 and uses the
	// VHSM sessions of slots 6 and 7: the adapters hold them all.
	if n := simSessions(t, run); n != 2*(2+2+1+1) {
		t.Fatalf("%d EP11 sessions on the adapters with two applications, want 12", n)
	}

	rotate := func() string {
		t.Helper()
		loaded := run("", "hsmsim", "load-new", "--apqns", apqns, "--type", "WK")
		wk := strings.TrimPrefix(strings.Fields(strings.SplitN(loaded, "\n", 2)[0])[4], "0x")
		run("", "hsmsim", "commit", "--apqns", apqns)
		out := run(lines(user, user, user), "pkcshsm_mk_change", "reencipher", "-a", apqns, "-e", wk)
		m := regexp.MustCompile(`Master key change operation '(\w+)' created.`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("reencipher output:\n%s", out)
		}
		for _, q := range strings.Split(apqns, ",") {
			// From the keys: nothing is lost by the set (issue 16).
			run("", "pkcshsm_mk_change", "verify", "-a", q, "-t", "WK")
			run("", "hsmsim", "set", "--apqns", q, "--type", "WK")
		}
		run(lines(user, user, user), "pkcshsm_mk_change", "finalize", "-i", m[1])
		return wk
	}
	newWK := rotate()

	for i, app := range apps {
		code := app.Stop()
		rep, rerr := os.ReadFile(filepath.Join(dir, fmt.Sprintf("app%d.json", i)))
		if code != 0 || rerr != nil {
			t.Fatalf("application %d: exit %d, %v\n%s", i, code, rerr, app.Log)
		}
		var r struct{ Ops, Failed int }
		if err := json.Unmarshal(rep, &r); err != nil || r.Failed != 0 || r.Ops == 0 {
			t.Fatalf("application %d report: %s", i, rep)
		}
		t.Logf("application %d: %d operations, 0 failed", i, r.Ops)
	}
	checkKeys := func(wk string) {
		t.Helper()
		for _, s := range []string{"5", "6", "7"} {
			var keys []struct {
				Label string
				Blobs *struct{ Current, Old, Reenc *struct{ MKVP string } }
			}
			if err := json.Unmarshal([]byte(run(lines(user), "pkcshsm", "keys", "list", "--slot", s, "--json")), &keys); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, k := range keys {
				if k.Blobs == nil || k.Blobs.Current == nil {
					continue
				}
				n++
				if !strings.EqualFold(k.Blobs.Current.MKVP, wk[:32]) || k.Blobs.Reenc != nil ||
					(strings.HasSuffix(k.Label, "-"+s) && k.Blobs.Old == nil) {
					t.Errorf("slot %s key %s: blobs %+v, want CURRENT under the new WK %s (and the old blob kept)", s, k.Label, *k.Blobs, wk[:32])
				}
			}
			if n < 4 {
				t.Errorf("slot %s: %d secure keys, want the 2 made before and the applications' token keys", s, n)
			}
			var sess []json.RawMessage
			if err := json.Unmarshal([]byte(run(lines(user), "pkcshsm", "ep11-session", "show", "--slot", s, "--json")), &sess); err != nil || len(sess) != 0 {
				t.Errorf("slot %s: EP11 sessions left after the applications ended: %d (%v)", s, len(sess), err)
			}
		}
		if n := simSessions(t, run); n != 0 {
			t.Errorf("%d EP11 sessions left on the adapters", n)
		}
	}
	checkKeys(newWK)

	// A second rotation with no application running: the tools' own USER
	// logins log in the EP11 sessions the passes need (VHSM token keys are
	// bound to the card PIN's session), and everything still works after.
	wk2 := rotate()
	checkKeys(wk2)
	if res := r.Run("p11load", lines(user), "-slots", "5,6,7", "-duration", "1s"); res.Code != 0 || !strings.Contains(res.Out(), " 0 failed") {
		t.Fatalf("application after the second rotation: exit %d\n%s", res.Code, res.Out())
	}
}

// simSessions counts the EP11 sessions hsmsim show --json lists.
func simSessions(t *testing.T, run func(string, string, ...string) string) int {
	t.Helper()
	var qs []struct{ Sessions []json.RawMessage }
	if err := json.Unmarshal([]byte(run("", "hsmsim", "show", "--json")), &qs); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range qs {
		n += len(q.Sessions)
	}
	return n
}

// waitFor polls cond (a question to the process, not a sleep for it) for up
// to a minute.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("waited %s for %s", time.Since(start).Round(time.Millisecond), what) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(time.Minute)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
