package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

const (
	aesNew  = "7D10D17BC8A409C4"
	wkNew   = "EF92899EBE57291EC8E8716D850EE2F7"
	aesOld  = "1111111111111111"
	cliAPQN = "01.0033,02.0033"
)

func reencipherCCA(e *env) (int, string, string) {
	e.stdin = "1234\n"
	return e.run("reencipher", "-a", cliAPQN, "--cca-aes-mkvp", aesNew)
}

func TestReencipherFinalize(t *testing.T) {
	e := newEnv(t)
	e.tokens.current[2] = map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: mustPattern(t, mkvp.CCAAES, aesOld)}
	code, out, errs := reencipherCCA(e)
	if code != 0 {
		t.Fatalf("reencipher exit %d\n%s\n%s", code, out, errs)
	}
	ops := e.ops()
	if len(ops) != 1 {
		t.Fatalf("%d operations", len(ops))
	}
	op := ops[0]
	for _, want := range []string{
		"The following tokens are affected by this master key change:\n  Slot 2: Label: cca\n",
		"Re-enciphering, please wait...\nSlot 2: 3 secure keys re-enciphered under the new master key (the current blob stays in use until finalize).\nCompleted.\n",
		"Master key change operation '" + string(op.ID) + "' created.",
		"Run 'pkcshsm_mk_change finalize --id " + string(op.ID) + "'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errs, "Enter the USER PIN for slot 2: ") || strings.Contains(errs+out, "1234") {
		t.Errorf("PIN prompt missing or PIN echoed: %q", errs)
	}
	if op.State != state.Reenciphered || len(op.Slots) != 1 || op.Slots[0].ID != 2 || op.Slots[0].Objects != 3 ||
		op.Slots[0].Current[mkvp.CCAAES].String() != aesOld {
		t.Fatalf("stored op = %+v", op)
	}
	if got := e.daemon.types(); !slices.Equal(got, []string{"mkchange.reencipher"}) {
		t.Fatalf("events = %v", got)
	}
	ev := e.daemon.events[0]
	if ev.OpID != string(op.ID) || !ev.Target.ExcludeCaller || !slices.Equal(ev.Target.Types, []event.TokenType{event.CCA}) || ev.Timeout != event.TimeoutOf(2*time.Minute) {
		t.Fatalf("event = %+v target %+v", ev, ev.Target)
	}
	if got := e.tokens.mutations(); !slices.Equal(got, []string{"pass reencipher 2"}) {
		t.Fatalf("passes = %v", got)
	}

	// list shows it in upstream's layout.
	code, out, _ = e.run("list", "-i", string(op.ID))
	if code != 0 || !strings.Contains(out, "Operation:       "+string(op.ID)+"\n    State:       Key objects have been re-enciphered,\n                 new master key(s) can now be set/activated\n") ||
		!strings.Contains(out, "    APQNs:\n        01.0033\n        02.0033\n") ||
		!strings.Contains(out, "        Type:    CCA AES\n        MKVP:    "+aesNew+"\n") ||
		!strings.Contains(out, "        Slot: 2 Label: cca\n            Current master key verification patterns:\n                Type:    CCA AES\n                MKVP:    "+aesOld+"\n") {
		t.Fatalf("list:\n%s", out)
	}
	code, out, _ = e.run("list", "--json")
	var listed []state.Op
	if code != 0 || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 || listed[0].ID != op.ID {
		t.Fatalf("list --json: %d %s", code, out)
	}

	e.stdin = "1234\n"
	code, out, errs = e.run("finalize", "-i", string(op.ID))
	if code != 0 || !strings.Contains(out, "Finalizing, please wait...\n") ||
		!strings.Contains(out, "Master key change operation '"+string(op.ID)+"' successfully finalized.") {
		t.Fatalf("finalize exit %d\n%s\n%s", code, out, errs)
	}
	if got := e.tokens.mutations(); !slices.Equal(got, []string{"pass finalize 2", "pass finalize 2", "pass reencipher 2"}) {
		t.Fatalf("passes = %v", got)
	}
	if got := e.daemon.types(); !slices.Equal(got, []string{"mkchange.reencipher", "mkchange.finalize"}) {
		t.Fatalf("events = %v", got)
	}
	if len(e.ops()) != 0 {
		t.Fatal("operation not removed")
	}
	d, _ := state.Open(e.layout().MKChangeDir(), state.Options{})
	defer d.Close()
	hist, _, _ := d.History(context.Background())
	if len(hist) != 1 || hist[0].Outcome != state.Finalized || hist[0].Op.ID != op.ID {
		t.Fatalf("history = %+v", hist)
	}
	if code, out, _ := e.run("list"); code != 0 || out != "" {
		t.Fatalf("list after finalize: %d %q", code, out)
	}
}

func TestReencipherCancelEP11(t *testing.T) {
	e := newEnv(t)
	e.stdin = "5678\n"
	code, out, errs := e.run("reencipher", "--apqns", "06.0033 0e.0033", "-e", "0x"+wkNew+"00112233445566778899aabbccddeeff")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "warning: option -e/--ep11-wkvp specifies more than 16 bytes, the remaining 16 bytes are ignored") {
		t.Errorf("no truncation warning: %s", errs)
	}
	op := e.ops()[0]
	if op.New[mkvp.EP11WK].String() != wkNew || op.Slots[0].ID != 4 {
		t.Fatalf("op = %+v", op)
	}
	e.stdin = "5678\n"
	code, out, errs = e.run("cancel", "--id", string(op.ID))
	if code != 0 || !strings.Contains(out, "Canceling, please wait...") || !strings.Contains(out, "successfully canceled.") {
		t.Fatalf("cancel exit %d\n%s\n%s", code, out, errs)
	}
	if got := e.tokens.mutations(); !slices.Equal(got, []string{"pass cancel 4", "pass cancel 4", "pass reencipher 4"}) {
		t.Fatalf("passes = %v", got)
	}
	if got := e.daemon.events[1].Target.Types; !slices.Equal(got, []event.TokenType{event.EP11}) {
		t.Fatalf("cancel target = %v", got)
	}
}

func TestReencipherFailureRollsBack(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(e *env)
		code     int
		mentions string
	}{
		{"token pass fails", func(e *env) {
			e.tokens.passErr[state.ActReencipher] = errclass.New(errclass.Unavailable, "APQN 01.0033 offline")
		}, 9, "slot 2 (cca): APQN 01.0033 offline"},
		{"process fails", func(e *env) {
			e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.reencipher": {{PID: 77, Program: "payments",
				Outcome: event.Replied, Results: []event.TokenResult{{Slot: 2, Result: event.Failed, Error: "wrong master key"}}}}}
		}, 9, "process 77 (payments), slot 2: wrong master key"},
		{"process hangs", func(e *env) {
			e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.reencipher": {{PID: 78, Program: "batch", Outcome: event.TimedOut}}}
		}, 9, "process 78 (batch) did not answer within"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tt.setup(e)
			code, out, errs := reencipherCCA(e)
			if code != tt.code || !strings.Contains(errs, tt.mentions) || !strings.Contains(errs, "rolled back") {
				t.Fatalf("exit %d, want %d mentioning %q\n%s\n%s", code, tt.code, tt.mentions, out, errs)
			}
			if len(e.ops()) != 0 {
				t.Fatal("operation left behind")
			}
			if !slices.Contains(e.daemon.types(), "mkchange.cancel") {
				t.Fatalf("no cancel broadcast: %v", e.daemon.types())
			}
			if tt.name != "token pass fails" && !slices.Contains(e.tokens.mutations(), "pass cancel 2") {
				t.Fatalf("no cancel pass: %v", e.tokens.mutations())
			}
		})
	}
}

func TestDisconnectedProcessOnlyWarns(t *testing.T) {
	e := newEnv(t)
	e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.reencipher": {{PID: 79, Program: "gone", Outcome: event.Disconnected}}}
	code, _, errs := reencipherCCA(e)
	if code != 0 || !strings.Contains(errs, "warning: 1 process disconnected during the reencipher step (process 79 (gone))") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// storeOp writes an operation in the given state, as a crashed or
// interrupted run leaves it.
func storeOp(t *testing.T, e *env, st state.State, types map[mkvp.Type]string, slots ...uint) state.ID {
	t.Helper()
	path := map[state.State][]state.State{
		state.Initial:       nil,
		state.Reenciphering: {state.Reenciphering},
		state.Reenciphered:  {state.Reenciphering, state.Reenciphered},
		state.Finalizing:    {state.Reenciphering, state.Reenciphered, state.Finalizing},
		state.Canceling:     {state.Reenciphering, state.Canceling},
		state.Error:         {state.Reenciphering, state.Reenciphered, state.Finalizing, state.Error},
	}[st]
	return storeOpVia(t, e, path, types, slots...)
}

// storeOpVia writes an operation that went through the given states.
func storeOpVia(t *testing.T, e *env, path []state.State, types map[mkvp.Type]string, slots ...uint) state.ID {
	t.Helper()
	d, err := state.Open(e.layout().MKChangeDir(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	l, _ := apqn.ParseList(cliAPQN)
	op := &state.Op{APQNs: l, New: map[mkvp.Type]mkvp.Pattern{}}
	for typ, s := range types {
		op.New[typ] = mustPattern(t, typ, s)
	}
	op, err = d.Create(context.Background(), op)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Update(context.Background(), op.ID, func(o *state.Op) error {
		for _, sl := range slots {
			o.Slots = append(o.Slots, state.Slot{ID: sl, Label: "cca", TokenType: "cca"})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range path {
		if _, err := d.Update(context.Background(), op.ID, func(o *state.Op) error { return o.Move(s, time.Now()) }); err != nil {
			t.Fatal(err)
		}
	}
	return op.ID
}

func TestResume(t *testing.T) {
	errorOfCancel := []state.State{state.Reenciphering, state.Canceling, state.Error}
	cases := []struct {
		from   state.State
		via    []state.State
		cmd    string
		passes []string
	}{
		{state.Finalizing, nil, "finalize", []string{"pass finalize 2", "pass finalize 2"}},
		{state.Error, nil, "finalize", []string{"pass finalize 2", "pass finalize 2"}},
		{state.Error, errorOfCancel, "cancel", []string{"pass cancel 2", "pass cancel 2"}},
		{state.Canceling, nil, "cancel", []string{"pass cancel 2", "pass cancel 2"}},
		{state.Reenciphering, nil, "cancel", []string{"pass cancel 2", "pass cancel 2"}},
		{state.Initial, nil, "cancel", []string{"pass cancel 2", "pass cancel 2"}},
	}
	for _, tt := range cases {
		t.Run(tt.cmd+" from "+tt.from.String(), func(t *testing.T) {
			e := newEnv(t)
			slots := []uint{2}
			if tt.from == state.Initial {
				slots = nil
			}
			var id state.ID
			if tt.via != nil {
				id = storeOpVia(t, e, tt.via, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, slots...)
			} else {
				id = storeOp(t, e, tt.from, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, slots...)
			}
			e.stdin = "1234\n"
			code, out, errs := e.run(tt.cmd, "-i", string(id))
			if code != 0 || !strings.Contains(out, "successfully") {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			if got := e.tokens.mutations(); !slices.Equal(got, tt.passes) {
				t.Fatalf("passes = %v", got)
			}
			if len(e.ops()) != 0 {
				t.Fatal("operation not removed")
			}
		})
	}
}

func TestFinalizeFailureKeepsError(t *testing.T) {
	e := newEnv(t)
	id := storeOp(t, e, state.Reenciphered, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, 2)
	e.tokens.passErr[state.ActFinalize] = errclass.New(errclass.Unavailable, "disk full")
	e.stdin = "1234\n"
	code, _, errs := e.run("finalize", "-i", string(id))
	if code != 6 || !strings.Contains(errs, "disk full") || !strings.Contains(errs, "hint: fix the problem, then run 'pkcshsm_mk_change finalize --id "+string(id)) {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// The intent was recorded before the pass: the failed finalize is an
	// ERROR of a finalize, which only finalize completes.
	ops := e.ops()
	if len(ops) != 1 || ops[0].State != state.Error || ops[0].Step != state.StepFirstPass || !strings.Contains(ops[0].LastError, "disk full") {
		t.Fatalf("op = %+v", ops[0])
	}
	if code, out, _ := e.run("list"); code != 0 || !strings.Contains(out, "Last error:  token-object pass failed: slot 2 (cca): disk full") ||
		!strings.Contains(out, "Next:        run 'pkcshsm_mk_change finalize --id "+string(id)+"' to complete it") {
		t.Fatalf("list does not show the error and the way out: %s", out)
	}
	e.stdin = "1234\n"
	if code, _, errs := e.run("cancel", "-i", string(id)); code != 4 || !strings.Contains(errs, "can not be canceled") {
		t.Fatalf("cancel of a failed finalize: exit %d: %s", code, errs)
	}
	// Fixed: the retry completes.
	delete(e.tokens.passErr, state.ActFinalize)
	e.stdin = "1234\n"
	if code, out, errs := e.run("finalize", "-i", string(id)); code != 0 {
		t.Fatalf("retry exit %d\n%s\n%s", code, out, errs)
	}
}

func TestMissingTokenPrompt(t *testing.T) {
	e := newEnv(t)
	e.tokens.slots = append([]Slot{{ID: 0, Present: false, Reason: "not a member of group 'ccagrp'"}}, e.tokens.slots...)
	e.stdin = "y\n1234\n"
	code, _, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew)
	if code != 0 || !strings.Contains(errs, "WARNING: The following slots have no token present:\n  Slot 0 (not a member of group 'ccagrp')\n") ||
		strings.Contains(errs, "current user 'admin'") || !strings.Contains(errs, "Continue [y/N]? ") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestDryRun(t *testing.T) {
	e := newEnv(t)
	e.tokens.current[2] = map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: mustPattern(t, mkvp.CCAAES, aesOld)}
	code, out, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew, "--dry-run")
	if code != 0 || !strings.Contains(out, "Dry run: all checks passed, nothing was changed.") ||
		!strings.Contains(out, "Slot 2: Label: cca\n        CCA AES: "+aesOld+" -> "+aesNew) {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if len(e.snapshot()) != 0 || len(e.tokens.mutations()) != 0 || len(e.daemon.events) != 0 {
		t.Fatalf("dry run changed something: %v %v %v", e.snapshot(), e.tokens.calls, e.daemon.events)
	}
	if !strings.Contains(out, "WARNING: no USER PIN given for slot 2") || !slices.Contains(e.tokens.calls, "check-store 2") {
		t.Fatalf("a dry run without PINs must check the database and say the keys were not checked:\n%s\n%v", out, e.tokens.calls)
	}
	// Given the PIN, the dry run logs in and checks the key objects.
	e.stdin = "1234\n"
	code, out, errs = e.run("reencipher", "-a", cliAPQN, "-A", aesNew, "--dry-run")
	if code != 0 || strings.Contains(out, "WARNING: no USER PIN") || !slices.Contains(e.tokens.calls, "check 2") {
		t.Fatalf("exit %d\n%s\n%s\n%v", code, out, errs, e.tokens.calls)
	}
}

// TestDryRunAsksNothing: with a slot whose token is absent and standard
// input closed, the dry run reports the slot instead of asking whether to
// go on, and reaches the same verdict as the real run would.
func TestDryRunAsksNothing(t *testing.T) {
	e := newEnv(t)
	e.tokens.slots = append(e.tokens.slots, Slot{ID: 7, Reason: "token not initialized"})
	e.stdin = "" // closed
	code, out, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew, "--dry-run")
	if code != 0 || strings.Contains(out+errs, "Continue") ||
		!strings.Contains(out, "WARNING: This slot has no token present; the real run asks whether to go on without it:\n    Slot 7 (token not initialized)\n") ||
		!strings.Contains(out, "Token that would be re-enciphered (a USER PIN is needed for each):\n    Slot 2: Label: cca") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	// The daemon must be reachable for the real run: the dry run checks it.
	e.daemon.dialErr = errclass.New(errclass.Unavailable, "connection refused")
	if code, _, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew, "--dry-run"); code != 6 ||
		!strings.Contains(errs, "failed to connect to the pkcshsmd admin socket") {
		t.Fatalf("dry run without the daemon: exit %d\n%s", code, errs)
	}
}

func TestDisjointOperationsSideBySide(t *testing.T) {
	e := newEnv(t)
	if code, _, errs := reencipherCCA(e); code != 0 {
		t.Fatal(errs)
	}
	e.stdin = "1234\n"
	if code, _, errs := e.run("reencipher", "-a", cliAPQN, "-p", aesNew); code != 0 {
		t.Fatalf("APKA next to AES: %s", errs)
	}
	e.stdin = "1234\n"
	if code, _, errs := e.run("reencipher", "-a", "03.0033", "-A", aesNew); code != 0 {
		t.Fatalf("other APQN: %s", errs)
	}
	if n := len(e.ops()); n != 3 {
		t.Fatalf("%d operations", n)
	}
}

// TestOfflineAPQNWarnsAtReencipher: an APQN of --apqns that is offline
// (and used by no affected token) is named in a warning; the change goes
// ahead, and the operation records the APQN in canonical form.
func TestOfflineAPQNWarnsAtReencipher(t *testing.T) {
	e := newEnv(t)
	e.tokens.queues[2].Online = false // 03.0033
	e.stdin = "1234\n"
	code, out, errs := e.run("reencipher", "-a", "1.33,2.33,3.33", "-A", aesNew)
	if code != 0 || !strings.Contains(errs, "pkcshsm_mk_change: warning: APQN 03.0033 is offline or checkstopped; tokens that use it cannot take part") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	ops := e.ops()
	if len(ops) != 1 || ops[0].APQNs.String() != "01.0033,02.0033,03.0033" {
		t.Fatalf("operations %+v", ops)
	}
}

// TestQueryErrorPrintedOnce: a token's refusal appears once, in the error,
// not also as a line of its own before it.
func TestQueryErrorPrintedOnce(t *testing.T) {
	e := newEnv(t)
	e.tokens.queryErr[2] = errclass.Newh(errclass.FailedPrecondition, "ask the officer", "no NEW CCA AES master key is set on APQN 01.0033")
	code, _, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew)
	if code != 4 || strings.Count(errs, "no NEW CCA AES master key is set") != 1 || strings.Count(errs, "hint: ask the officer") != 1 ||
		!strings.Contains(errs, "error: at least one token is unable to perform the master key change, aborting:\n  Token in slot 2 is unable") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
}

// The USER PIN is wiped as soon as the login is done, whether it succeeded
// or not: the fake keeps the very slices it was given and the test looks
// at them after the command.
func TestUserPINWipedAfterLogin(t *testing.T) {
	for _, c := range []struct {
		name, pin string
		code      int
	}{{"right PIN", "1234", 0}, {"wrong PIN", "9999", 1}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.stdin = c.pin + "\n"
			code, out, errs := e.run("reencipher", "-a", cliAPQN, "--cca-aes-mkvp", aesNew)
			if (code == 0) != (c.code == 0) {
				t.Fatalf("reencipher exit %d\n%s\n%s", code, out, errs)
			}
			if len(e.tokens.heldPINs) != 1 {
				t.Fatalf("%d logins", len(e.tokens.heldPINs))
			}
			for _, pin := range e.tokens.heldPINs {
				if len(pin) != len(c.pin) {
					t.Fatalf("login got a PIN of %d bytes, want %d", len(pin), len(c.pin))
				}
				for _, b := range pin {
					if b != 0 {
						t.Fatalf("the USER PIN was not wiped after login: %q", pin)
					}
				}
			}
		})
	}
}

// A damaged token database (a file cut short) is refused by the dry run
// and by reencipher before anything is recorded: no operation file, no
// event, no pass, so nothing is left to cancel.
func TestDamagedStoreRefusedUpFront(t *testing.T) {
	for _, dry := range []bool{true, false} {
		t.Run(fmt.Sprintf("dry-run=%v", dry), func(t *testing.T) {
			e := newEnv(t)
			e.tokens.checkErr = map[uint]error{2: errclass.Newh(errclass.DataLoss, "restore the token from its last backup",
				"token store /x/token.db failed its integrity check: database disk image is malformed")}
			args := []string{"reencipher", "-a", cliAPQN, "-A", aesNew}
			if dry {
				args = append(args, "--dry-run")
			} else {
				e.stdin = "1234\n"
			}
			code, out, errs := e.run(args...)
			if code != 8 || !strings.Contains(errs, "slot 2 (cca): token store /x/token.db failed its integrity check") ||
				!strings.Contains(errs, "hint: restore the token from its last backup") || strings.Contains(out, "all checks passed") {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			if len(e.ops()) != 0 || len(e.daemon.events) != 0 || len(e.tokens.mutations()) != 0 {
				t.Fatalf("something was recorded: %v %v %v", e.ops(), e.daemon.types(), e.tokens.mutations())
			}
		})
	}
}

// LOST keys (under a master key that is neither current nor new) are named
// and refused before anything is recorded, by the dry run given the PIN and
// by reencipher, with the command that removes them.
func TestLostKeysRefusedUpFront(t *testing.T) {
	for _, dry := range []bool{true, false} {
		t.Run(fmt.Sprintf("dry-run=%v", dry), func(t *testing.T) {
			e := newEnv(t)
			e.tokens.lost = map[uint][]string{2: {`key 7 label "pay-1" under CCA AES master key 2222222222222222`}}
			args := []string{"reencipher", "-a", cliAPQN, "-A", aesNew}
			if dry {
				args = append(args, "--dry-run")
			}
			e.stdin = "1234\n"
			code, out, errs := e.run(args...)
			if code != 4 || !strings.Contains(errs, "slot 2 (cca): 1 key object is under a master key that is neither") ||
				!strings.Contains(errs, `key 7 label "pay-1" under CCA AES master key 2222222222222222`) ||
				!strings.Contains(errs, "hint: delete the LOST ones with 'pkcshsm keys delete --slot N --lost' (slot 2;") {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			if len(e.ops()) != 0 || len(e.daemon.events) != 0 || len(e.tokens.mutations()) != 0 {
				t.Fatalf("something was recorded: %v %v %v", e.ops(), e.daemon.types(), e.tokens.mutations())
			}
		})
	}
}

// TestManyDisconnectedProcessesOneWarning (issue 19.11): 313 processes that
// ended during a step make one warning line that counts them and names a
// few, not 313 lines.
func TestManyDisconnectedProcessesOneWarning(t *testing.T) {
	e := newEnv(t)
	var procs []event.ProcessResult
	for i := range 313 {
		procs = append(procs, event.ProcessResult{PID: int32(5000 + i), Program: "app", Outcome: event.Disconnected})
	}
	procs = append(procs, event.ProcessResult{PID: 4242, Program: "app", Outcome: event.Replied,
		Results: []event.TokenResult{{Slot: 2, Result: event.Affected, Objects: 5}}})
	e.daemon.outcomes = map[string][]event.ProcessResult{}
	for _, a := range []state.Action{state.ActReencipher, state.ActFinalize, state.ActCancel} {
		e.daemon.outcomes[a.EventType()] = procs
	}
	e.stdin = "1234\n"
	code, _, errs := e.run("reencipher", "-a", cliAPQN, "-A", aesNew)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	if n := strings.Count(errs, "disconnected"); n != 1 || !strings.Contains(errs, "313 processes disconnected during the reencipher step") ||
		!strings.Contains(errs, "and 310 more") {
		t.Errorf("%d lines about disconnected processes:\n%.2000s", n, errs)
	}
}
