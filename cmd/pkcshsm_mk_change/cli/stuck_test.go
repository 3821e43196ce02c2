package cli

import (
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// TestStuckProcessPolicy checks what each step does with a process that
// does not answer, and what --exclude-pid changes, against the scripted
// daemon.
func TestStuckProcessPolicy(t *testing.T) {
	silent := []event.ProcessResult{{PID: 78, Program: "batch", Command: "python3", Outcome: event.TimedOut}}

	t.Run("reencipher fails, the automatic cancel skips the silent process", func(t *testing.T) {
		e := newEnv(t)
		e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.reencipher": silent, "mkchange.cancel": silent}
		code, out, errs := reencipherCCA(e)
		if code != 9 || !strings.Contains(errs, "process 78 (batch, running python3) did not answer within") ||
			!strings.Contains(errs, "hint: ") || !strings.Contains(errs, "--exclude-pid 78") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		if len(e.ops()) != 0 {
			t.Fatal("operation left behind")
		}
		evs := e.daemon.events
		if len(evs) != 2 || evs[1].Type != "mkchange.cancel" || !slices.Contains(evs[1].Target.ExcludePIDs, 78) ||
			slices.Contains(evs[0].Target.ExcludePIDs, 78) {
			t.Fatalf("events %+v", evs)
		}
		// The events address the operation's tokens by serial and label.
		for _, ev := range evs {
			if len(ev.Target.Tokens) != 1 || ev.Target.Tokens[0] != (event.TokenID{Serial: "CCA0001", Label: "cca"}) {
				t.Errorf("%s addresses tokens %+v", ev.Type, ev.Target.Tokens)
			}
		}
	})

	t.Run("a process failing reencipher is left out of the automatic cancel", func(t *testing.T) {
		e := newEnv(t)
		hostile := []event.ProcessResult{{PID: 77, Program: "payments", Outcome: event.Replied,
			Results: []event.TokenResult{{Slot: 2, Serial: "CCA0001", Result: event.Failed, Error: "no"}}}}
		// The scripted daemon does not filter by target: the cancel event's
		// target is checked below.
		e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.reencipher": hostile}
		code, out, errs := reencipherCCA(e)
		if code != 9 || !strings.Contains(errs, "rolled back") || !strings.Contains(errs, "--exclude-pid 77") {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		if len(e.ops()) != 0 {
			t.Fatal("operation left behind")
		}
		if evs := e.daemon.events; len(evs) != 2 || !slices.Contains(evs[1].Target.ExcludePIDs, 77) {
			t.Fatalf("events %+v", evs)
		}
	})

	t.Run("exclude-pid", func(t *testing.T) {
		e := newEnv(t)
		e.daemon.outcomes = map[string][]event.ProcessResult{}
		e.stdin = "1234\n"
		code, out, errs := e.run("reencipher", "-a", cliAPQN, "--cca-aes-mkvp", aesNew, "--exclude-pid", "78,4711", "--exclude-pid", "99")
		if code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		if got := e.daemon.events[0].Target.ExcludePIDs; !slices.Equal(got, []int32{78, 4711, 99}) {
			t.Errorf("excluded %v", got)
		}
		if !strings.Contains(errs, "not addressing excluded process(es) 78,4711,99") {
			t.Errorf("no warning about the excluded processes:\n%s", errs)
		}
	})

	for _, a := range []string{"finalize", "cancel"} {
		t.Run(a+" only warns", func(t *testing.T) {
			e := newEnv(t)
			if code, out, errs := reencipherCCA(e); code != 0 {
				t.Fatalf("reencipher: exit %d\n%s\n%s", code, out, errs)
			}
			id := e.ops()[0].ID
			e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange." + a: silent}
			e.stdin = "1234\n"
			code, out, errs := e.run(a, "-i", string(id))
			if code != 0 || !strings.Contains(errs, "warning: process 78 (batch, running python3) did not answer the "+a+" step") {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			if len(e.ops()) != 0 {
				t.Fatal("operation left behind")
			}
		})
	}

	for _, bad := range []string{"abc", "0", "-5", "2147483648", "12,x"} {
		t.Run("bad pid "+bad, func(t *testing.T) {
			e := newEnv(t)
			code, _, errs := e.run("cancel", "-i", "abcdef", "--exclude-pid", bad)
			if code != 2 || !strings.Contains(errs, "is not a process id") || !strings.Contains(errs, "hint: ") {
				t.Fatalf("exit %d\n%s", code, errs)
			}
		})
	}
	t.Run("not on list", func(t *testing.T) {
		e := newEnv(t)
		code, _, errs := e.run("list", "--exclude-pid", "5")
		if code != 2 || !strings.Contains(errs, "only valid for the 'reencipher', 'finalize' or 'cancel' command") {
			t.Fatalf("exit %d\n%s", code, errs)
		}
	})
}
