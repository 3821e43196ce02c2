package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
)

// list names, for every state an interrupted command can leave, the one
// command that completes it (two only for REENCIPHERED), and warns in
// capitals exactly where setting the new master keys would lose keys.
func TestListAdvicePerState(t *testing.T) {
	const warning = "WARNING:     DO NOT SET/ACTIVATE THE NEW MASTER KEYS"
	cases := []struct {
		name    string
		via     []state.State
		next    string
		notNext string
		warn    bool
	}{
		{"initial", nil, "cancel --id %s' to undo the interrupted reencipher", "finalize", true},
		{"reenciphering", []state.State{state.Reenciphering}, "cancel --id %s' to undo the interrupted reencipher", "finalize", true},
		{"reenciphered", []state.State{state.Reenciphering, state.Reenciphered},
			"once every APQN has the new master keys set/activated, run\n                 'pkcshsm_mk_change finalize --id %s'", "", false},
		{"finalizing", []state.State{state.Reenciphering, state.Reenciphered, state.Finalizing},
			"finalize --id %s' to complete the interrupted finalize", "cancel", false},
		{"canceling", []state.State{state.Reenciphering, state.Reenciphered, state.Canceling},
			"cancel --id %s' to complete the interrupted cancel", "finalize", true},
		{"error of finalize", []state.State{state.Reenciphering, state.Reenciphered, state.Finalizing, state.Error},
			"finalize --id %s' to complete it", "cancel", false},
		{"error of cancel", []state.State{state.Reenciphering, state.Canceling, state.Error},
			"cancel --id %s' to complete it", "finalize", true},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			id := storeOpVia(t, e, tt.via, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, 2)
			code, out, errs := e.run("list")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			if !strings.Contains(out, "    Next:        run 'pkcshsm_mk_change "+fmt.Sprintf(tt.next, id)) &&
				!strings.Contains(out, "    Next:        "+fmt.Sprintf(tt.next, id)) {
				t.Errorf("list lacks the advice %q:\n%s", fmt.Sprintf(tt.next, id), out)
			}
			next := out[strings.Index(out, "Next:"):strings.Index(out, "APQNs:")]
			if tt.notNext != "" && strings.Contains(next, tt.notNext) {
				t.Errorf("list also advises %s:\n%s", tt.notNext, out)
			}
			if strings.Contains(out, warning) != tt.warn {
				t.Errorf("warning shown = %v, want %v:\n%s", !tt.warn, tt.warn, out)
			}
			code, out, _ = e.run("list", "--json")
			var got []struct {
				ID           state.ID `json:"id"`
				Next         []string `json:"next"`
				SetLosesKeys bool     `json:"set_loses_keys"`
			}
			if code != 0 || json.Unmarshal([]byte(out), &got) != nil || len(got) != 1 || got[0].ID != id || got[0].SetLosesKeys != tt.warn || len(got[0].Next) == 0 {
				t.Fatalf("list --json: %d %s", code, out)
			}
		})
	}
}

// A second command on a claimed operation is refused with the holder's
// pid and changes nothing; list shows who is running.
func TestClaimedOperationRefused(t *testing.T) {
	e := newEnv(t)
	id := storeOp(t, e, state.Reenciphered, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, 2)
	d, err := state.Open(e.layout().MKChangeDir(), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Claim(context.Background(), id, "finalize")
	if err != nil {
		t.Fatal(err)
	}
	before := e.snapshot()
	for _, cmd := range []string{"cancel", "finalize"} {
		e.stdin = "1234\n"
		code, _, errs := e.run(cmd, "-i", string(id))
		if code != 5 || !strings.Contains(errs, fmt.Sprintf("is in use by 'finalize' (pid %d", os.Getpid())) {
			t.Fatalf("%s of a claimed operation: exit %d: %s", cmd, code, errs)
		}
	}
	if len(e.tokens.calls) != 0 {
		t.Fatalf("a refused command touched the tokens: %v", e.tokens.calls)
	}
	if after := e.snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("a refused command changed the state directory")
	}
	_, out, _ := e.run("list")
	if !strings.Contains(out, fmt.Sprintf("Running:     'finalize' (pid %d", os.Getpid())) {
		t.Fatalf("list does not show the running command:\n%s", out)
	}
	c.Release()
	e.stdin = "1234\n"
	if code, _, errs := e.run("cancel", "-i", string(id)); code != 0 {
		t.Fatalf("cancel after the claim was released: %s", errs)
	}
}

// An operation whose file and copy are both damaged: list prints the
// others and exits 8 with the repair hint; finalize and cancel exit 8
// before touching a token.
func TestListReportsUnreadableOperation(t *testing.T) {
	e := newEnv(t)
	id := storeOp(t, e, state.Reenciphered, map[mkvp.Type]string{mkvp.CCAAES: aesNew}, 2)
	dir := e.layout().MKChangeDir()
	for _, name := range []string{string(id), string(id) + ".copy"} {
		os.WriteFile(filepath.Join(dir, name), []byte("pkcshsm-mk-change-op 2\n{"), 0o640)
	}
	code, _, errs := e.run("list")
	if code != 8 || !strings.Contains(errs, "error: master key change operation '"+string(id)+"' is unreadable") ||
		!strings.Contains(errs, "hint: restore ") {
		t.Fatalf("list: exit %d: %s", code, errs)
	}
	for _, cmd := range []string{"cancel", "finalize"} {
		e.stdin = "1234\n"
		code, _, errs := e.run(cmd, "-i", string(id))
		if code != 8 || strings.Count(errs, "error: master key change operation '"+string(id)+"' is unreadable") != 1 {
			t.Fatalf("%s: exit %d, want the error once: %s", cmd, code, errs)
		}
	}
	if len(e.tokens.calls) != 0 {
		t.Fatalf("tokens touched: %v", e.tokens.calls)
	}
}
