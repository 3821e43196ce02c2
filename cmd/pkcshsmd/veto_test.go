package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// TestHostileProcessCannotVeto runs a whole change with the real daemon, the
// real CLI and a real application while hostile clients are connected that
// say hello and then never read or answer anything:
//
//   - one claims made-up tokens (a made-up serial, a real serial under a
//     wrong label): it is never addressed, reencipher completes;
//   - one holds the real EP11 token and answers every step with a failure:
//     the EP11 reencipher fails, and its automatic cancel completes
//     without asking that process again;
//   - one copies the real EP11 token's serial and label from the daemon's
//     status: the EP11 reencipher fails, names it by pid and program with
//     the way forward, and the automatic cancel completes without it (no
//     CANCELING left); reencipher --exclude-pid PID then completes, and
//     finalize does not wait on it;
//
// and the application has zero failed operations with every key under the
// new master keys at the end.
func TestHostileProcessCannotVeto(t *testing.T) {
	s := newStack(t)
	app := s.startLoad("app1")

	var real event.Token
	for _, p := range s.status().Processes {
		if p.PID != app.pid() {
			continue
		}
		if p.Command != "p11load" {
			t.Errorf("status names pid %d's command %q, want p11load", p.PID, p.Command)
		}
		for _, tok := range p.Tokens {
			if tok.Type == event.EP11 {
				real = tok
			}
		}
	}
	if real.Serial == "" {
		t.Fatalf("the application announced no EP11 token: %+v", s.status())
	}
	liar := s.hostile([]event.Token{
		{Slot: 2, Serial: "FAKE0001", Label: "tok2", Type: event.CCA},
		{Slot: 4, Serial: real.Serial, Label: "not-tok4", Type: event.EP11},
		{Slot: 7, Serial: "FAKE0007", Label: "tok7", Type: event.EP11},
	})

	newAES := s.loadNew(ccaAPQN, "AES")
	code, out, ccaOp := s.reencipher(false, newAES, "--timeout", "5s")
	if code != 0 || ccaOp == "" {
		t.Fatalf("CCA reencipher with a made-up claim connected: exit %d\n%s", code, out)
	}
	if strings.Contains(out, strconv.Itoa(int(liar.pid()))) {
		t.Errorf("reencipher output mentions the process with made-up claims:\n%s", out)
	}

	// A process that holds the real EP11 token and refuses every step
	// fails the reencipher, but not the automatic cancel.
	js, _ := json.Marshal([]event.Token{real})
	refuser := startApp(t, s.sb, "-claims", string(js), "-fail")
	waitFor(t, "the refusing process to connect", func() bool {
		for _, p := range s.status().Processes {
			if p.PID == refuser.pid() {
				return true
			}
		}
		return false
	})
	wk := s.loadNew(ep11AP, "WK")
	code, out, _ = s.reencipher(true, wk, "--timeout", "5s")
	rpid := strconv.Itoa(int(refuser.pid()))
	if code != 9 || !strings.Contains(out, "process "+rpid+" (fakeapp), slot 4: refused by fakeapp -fail") ||
		!strings.Contains(out, "master key change rolled back") || strings.Contains(out, "failed the cancel step") ||
		!strings.Contains(out, "--exclude-pid "+rpid) {
		t.Fatalf("EP11 reencipher with a process refusing it: exit %d, want 9 and a completed automatic cancel\n%s", code, out)
	}
	if ops := s.listOps(); len(ops) != 1 {
		t.Fatalf("after the rolled back EP11 reencipher, list shows %v", ops)
	}
	refuser.cmd.Process.Kill()
	<-refuser.done

	copycat := s.hostile([]event.Token{real})
	cpid := strconv.Itoa(int(copycat.pid()))
	start := time.Now()
	code, out, _ = s.reencipher(true, wk, "--timeout", "2s")
	took := time.Since(start)
	if code != 9 {
		t.Fatalf("EP11 reencipher with a silent process holding the token: exit %d, want 9 (rolled back)\n%s", code, out)
	}
	for _, want := range []string{
		fmt.Sprintf("process %s (hostile, running fakeapp) did not answer within 2s", cpid),
		"master key change rolled back",
		"--exclude-pid " + cpid,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("reencipher output lacks %q:\n%s", want, out)
		}
	}
	// The automatic cancel must not address the silent process again.
	if strings.Contains(out, "did not answer the cancel step") {
		t.Errorf("the automatic cancel waited for the silent process again:\n%s", out)
	}
	if took > 20*time.Second {
		t.Errorf("the failed reencipher took %s: the automatic cancel waited for the silent process", took)
	}
	if ops := s.listOps(); len(ops) != 1 || ops[ccaOp] != "REENCIPHERED" {
		t.Fatalf("after the rolled back EP11 reencipher, list shows %v, want only %s in REENCIPHERED", ops, ccaOp)
	}
	for _, k := range s.keys("4") {
		if k.HasReenc {
			t.Errorf("EP11 key %d (%s) kept a REENC blob after the automatic cancel", k.Handle, k.Label)
		}
	}

	code, out, ep11Op := s.reencipher(true, wk, "--timeout", "5s", "--exclude-pid", cpid)
	if code != 0 || ep11Op == "" {
		t.Fatalf("EP11 reencipher --exclude-pid %s: exit %d\n%s", cpid, code, out)
	}
	if !strings.Contains(out, "not addressing excluded process(es) "+cpid) {
		t.Errorf("reencipher --exclude-pid does not say what it leaves out:\n%s", out)
	}

	s.must("", "hsmsim", "set", "--apqns", ccaAPQN, "--type", "AES")
	s.must("", "hsmsim", "set", "--apqns", ep11AP, "--type", "WK")
	s.must(userPIN+"\n", "pkcshsm_mk_change", "finalize", "-i", ccaOp)
	code, out = s.run(userPIN+"\n", "pkcshsm_mk_change", "finalize", "-i", ep11Op, "--timeout", "2s")
	if code != 0 {
		t.Fatalf("EP11 finalize with a silent process holding the token: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, fmt.Sprintf("process %s (hostile, running fakeapp) did not answer the finalize step", cpid)) {
		t.Errorf("finalize does not report the silent process:\n%s", out)
	}
	if ops := s.listOps(); len(ops) != 0 {
		t.Errorf("operations left: %v", ops)
	}

	rep := s.stopLoad(app, 20*time.Second)
	if rep.Failed != 0 || rep.Ops == 0 {
		t.Errorf("application: %d of %d operations failed", rep.Failed, rep.Ops)
	}
	checkKeys(t, s, "4", "EP11 WK", wk)
	checkKeys(t, s, "2", "CCA AES", newAES)
}

// checkKeys requires every key of mkType in slot to be under pattern, with
// no REENC blob left, and at least one such key.
func checkKeys(t *testing.T, s *stack, slot, mkType, pattern string) {
	t.Helper()
	n := 0
	for _, k := range s.keys(slot) {
		if k.HasReenc {
			t.Errorf("slot %s key %d (%s): REENC blob left", slot, k.Handle, k.Label)
		}
		if k.MKType != mkType {
			continue
		}
		n++
		if !strings.EqualFold(k.MKVP, pattern[:min(len(pattern), len(k.MKVP))]) {
			t.Errorf("slot %s key %d (%s): under %s, want %s", slot, k.Handle, k.Label, k.MKVP, pattern)
		}
	}
	if n == 0 {
		t.Errorf("slot %s has no %s key", slot, mkType)
	}
}

// TestStoppedApplicationExcludedCatchesUp: a real application stopped
// with SIGSTOP fails the EP11 reencipher by its silence, the automatic
// cancel completes without it, reencipher --exclude-pid completes, and the
// application, resumed before the new wrapping key is set, re-enciphers
// its session keys from the operation file by itself: after the set and
// finalize, neither application has a failed operation.
func TestStoppedApplicationExcludedCatchesUp(t *testing.T) {
	s := newStack(t)
	running := s.startLoad("running")
	// It makes no new keys: a key it was making at the instant it stopped
	// could be stored after the token-object pass without a blob under
	// the new master key (see STUCK PROCESSES), which this test does not
	// race for.
	stopped := s.startLoad("stopped", "-new-keys=false")
	spid := strconv.Itoa(int(stopped.pid()))
	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the application to be stopped", func() bool { return procState(stopped.pid()) == "T" })

	wk := s.loadNew(ep11AP, "WK")
	code, out, _ := s.reencipher(true, wk, "--timeout", "2s")
	if code != 9 || !strings.Contains(out, "process "+spid+" (p11load) did not answer within 2s") ||
		!strings.Contains(out, "--exclude-pid "+spid) || strings.Contains(out, "did not answer the cancel step") {
		t.Fatalf("EP11 reencipher with a stopped application: exit %d\n%s", code, out)
	}
	// The running application shares the APQNs with the stopped one; it
	// must not be reported (issue 19.11: a stopped process made a healthy
	// one look stuck).
	if rpid := strconv.Itoa(int(running.pid())); strings.Contains(out, "process "+rpid+" ") {
		t.Fatalf("the running application %s is reported too:\n%s", rpid, out)
	}
	if ops := s.listOps(); len(ops) != 0 {
		t.Fatalf("operations left by the automatic cancel: %v", ops)
	}
	code, out, id := s.reencipher(true, wk, "--timeout", "10s", "--exclude-pid", spid)
	if code != 0 || id == "" {
		t.Fatalf("reencipher --exclude-pid %s: exit %d\n%s", spid, code, out)
	}

	if err := stopped.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Its agent finds the events queued while it was stopped past their
	// deadlines and reconciles from the operation file instead.
	s.waitLogLine(stopped, "session keys in line with the operation", id, "REENCIPHERED")
	s.must("", "hsmsim", "set", "--apqns", ep11AP, "--type", "WK")
	s.must(userPIN+"\n", "pkcshsm_mk_change", "finalize", "-i", id, "--timeout", "10s")
	for _, a := range []*loadApp{running, stopped} {
		rep := s.stopLoad(a, 20*time.Second)
		if rep.Failed != 0 || rep.Ops == 0 {
			t.Errorf("pid %d: %d of %d operations failed", a.pid(), rep.Failed, rep.Ops)
		}
	}
	checkKeys(t, s, "4", "EP11 WK", wk)
}
