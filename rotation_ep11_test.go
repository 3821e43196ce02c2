package pkcshsm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
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
	// The binaries of this go test run, shared by every package
	// (internal/testenv).
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	env := append(os.Environ(), "PKCSHSM_ROOT="+root)
	const user, so, apqns = "12345678", "87654321", "06.0033,0e.0033"
	run := func(stdin string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Env, cmd.Stdin = env, strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s%s", name, args, err, out, stderr.String())
		}
		return string(out)
	}
	lines := func(s ...string) string { return strings.Join(s, "\n") + "\n" }

	run("", "hsmsim", "init", "--ep11", apqns)
	conf := filepath.Join(root, "etc", "pkcshsm")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"pkcshsm.conf": "hsm-backend = simulator\n"}
	slots := map[string]string{"5": "STRICT_MODE\n", "6": "VHSM_MODE\n", "7": "STRICT_MODE\nVHSM_MODE\n"}
	for s, modes := range slots {
		files["pkcshsm.conf"] += fmt.Sprintf("slot %s {\n\ttoken-type = ep11\n\ttokname = ep11-%s\n\tconfname = ep11-%s.conf\n}\n", s, s, s)
		files["ep11-"+s+".conf"] = "APQN_ALLOWLIST\n6 0x33\n14 0x33\nEND\n" + modes
	}
	start := time.Now()
	defer func() { t.Logf("rotation took %s", time.Since(start).Round(time.Second)) }()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
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

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	daemon := exec.CommandContext(ctx, filepath.Join(bin, "pkcshsmd"), "--log-format", "text", "--log-level", "warn")
	daemon.Env = env
	dlog, err := os.Create(filepath.Join(dir, "pkcshsmd.log"))
	if err != nil {
		t.Fatal(err)
	}
	daemon.Stdout, daemon.Stderr = dlog, dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		daemon.Wait()
	}()
	waitFor(t, "pkcshsmd's admin socket", func() bool {
		_, err := os.Stat(filepath.Join(root, "run", "pkcshsm", "admin.sock"))
		return err == nil
	})

	var apps []*exec.Cmd
	for i := range 2 {
		app := exec.Command(filepath.Join(bin, "p11load"), "-slots", "5,6,7",
			"-ready", filepath.Join(dir, fmt.Sprintf("app%d.ready", i)),
			"-report", filepath.Join(dir, fmt.Sprintf("app%d.json", i)),
			"-log", filepath.Join(dir, fmt.Sprintf("app%d.log", i)))
		app.Env, app.Stdin = env, strings.NewReader(lines(user))
		var out bytes.Buffer
		app.Stdout, app.Stderr = &out, &out
		if err := app.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if app.ProcessState == nil {
				app.Process.Kill()
				app.Wait()
			}
		}()
		apps = append(apps, app)
	}
	for i := range apps {
		waitFor(t, fmt.Sprintf("application %d connected to pkcshsmd", i), func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("app%d.log", i)))
			_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("app%d.ready", i)))
			return err == nil && bytes.Contains(b, []byte("connected to pkcshsmd"))
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
		app.Process.Signal(syscall.SIGTERM)
		err := app.Wait()
		rep, rerr := os.ReadFile(filepath.Join(dir, fmt.Sprintf("app%d.json", i)))
		if err != nil || rerr != nil {
			t.Fatalf("application %d: %v %v\n%s", i, err, rerr, app.Stdout)
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
	app := exec.Command(filepath.Join(bin, "p11load"), "-slots", "5,6,7", "-duration", "1s")
	app.Env, app.Stdin = env, strings.NewReader(lines(user))
	if out, err := app.CombinedOutput(); err != nil || !strings.Contains(string(out), " 0 failed") {
		t.Fatalf("application after the second rotation: %v\n%s", err, out)
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
