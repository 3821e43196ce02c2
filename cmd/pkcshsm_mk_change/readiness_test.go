package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The tests of issue 16's findings run the real pkcshsm_mk_change against
// real token stores and the simulated adapters. Each reproduces its
// finding on the code before the fix and passes after it.

// verifyJSON is `verify --json` as the shared contract defines it.
type verifyJSON struct {
	Ready bool     `json:"ready"`
	APQNs []string `json:"apqns"`
	Types []string `json:"types"`
	Slots []struct {
		Slot                  uint     `json:"slot"`
		Token                 string   `json:"token"`
		TokenType             string   `json:"token_type"`
		Keys                  int      `json:"keys"`
		MissingNew            int      `json:"missing_new"`
		SessionKeysMissingNew int      `json:"session_keys_missing_new"`
		Lost                  int      `json:"lost"`
		Reasons               []string `json:"reasons"`
	} `json:"slots"`
	Problems []string `json:"problems"`
	Fix      string   `json:"fix"`
}

func (e *crashEnv) verify(args ...string) (int, verifyJSON, string) {
	e.t.Helper()
	code, out := e.run(append([]string{"verify", "--json"}, args...)...)
	var v verifyJSON
	js := out
	if i := strings.LastIndex(out, "\n}\n"); i >= 0 {
		js = out[:i+3]
	}
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		e.t.Fatalf("verify --json %v: exit %d, not JSON: %v\n%s", args, code, err, out)
	}
	return code, v, out
}

// Issue 16, finding 1: an operation file restored from an older copy.
// The file and its copy are saved at REENCIPHERED; a cancel is killed
// after dropping the REENC blobs of two batches of 50; the saved files are
// put back, as the man page advised. Before the fix list said "new master
// key(s) can now be set/activated" with no warning (verify did not
// exist), although 100 keys had no blob under the new master key.
func TestReadinessFinding1RestoredOperationFile(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := string(e.op().ID)
	if code, v, out := e.verify("-i", id); code != 0 || !v.Ready || len(v.Slots) != 1 || v.Slots[0].Keys != findKeys || v.Slots[0].MissingNew != 0 {
		t.Fatalf("verify after the reencipher: exit %d %+v\n%s", code, v, out)
	}
	dir := e.layout.MKChangeDir()
	saved := map[string][]byte{}
	for _, n := range []string{id, id + ".copy"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		saved[n] = b
	}
	r := e.runFP(pageSpec+",cli.pass.cancel.after-batch-commit=kill@2", "cancel", "-i", id)
	if !r.killed {
		t.Fatalf("cancel was not killed: exit %d\n%s", r.code, r.out)
	}
	if reenc, _ := e.count(); reenc != findKeys-100 {
		t.Fatalf("%d keys keep REENC after two batches, want %d", reenc, findKeys-100)
	}
	// Both files damaged, then restored from the backup.
	for n, b := range saved {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if op := e.op(); op.State.String() != "REENCIPHERED" {
		t.Fatalf("restored file says %s", op.State)
	}

	out := e.mustRun("list")
	for _, want := range []string{
		"WARNING:     THE KEYS DISAGREE WITH THE OPERATION FILE: DO NOT SET/ACTIVATE THE NEW",
		"100 KEY OBJECTS HAVE NO BLOB UNDER THE NEW MASTER KEY",
		"operation " + id + " says REENCIPHERED, but the keys say otherwise",
		"Next:        run 'pkcshsm_mk_change cancel --id " + id + " && pkcshsm_mk_change reencipher -a 01.0033,02.0033 -A " + p.String() + "'",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "can now be set") {
		t.Errorf("list says the keys can be set:\n%s", out)
	}
	code, v, vout := e.verify("-i", id)
	if code != 4 || v.Ready || len(v.Slots) != 1 || v.Slots[0].MissingNew != 100 || v.Slots[0].Keys != findKeys ||
		!strings.HasPrefix(v.Fix, "pkcshsm_mk_change cancel --id "+id) {
		t.Fatalf("verify -i of the restored file: exit %d %+v\n%s", code, v, vout)
	}
	// The store's journal: a cancel of this operation has begun.
	journal := "WARNING: slot 2: the token store says a cancel of this operation has begun, not completed, but the operation file says REENCIPHERED"
	if len(v.Problems) != 1 || !strings.HasPrefix(v.Problems[0], journal) {
		t.Fatalf("verify -i does not report the journal: %q", v.Problems)
	}
	// A finalize over the half-done cancel is refused up front (before
	// the fix it finalized 200 keys and stopped at ERROR on the others).
	code, fout := e.run("finalize", "-i", id)
	if code != 4 || !strings.Contains(fout, "the token stores say a cancel of master key change operation '"+id+"' has begun") ||
		!strings.Contains(fout, "hint: run 'pkcshsm_mk_change cancel --id "+id+"' (what the token stores say)") {
		t.Fatalf("finalize over a half-done cancel: exit %d\n%s", code, fout)
	}
	if reenc, old := e.count(); reenc != findKeys-100 || old != 0 {
		t.Fatalf("the refused finalize changed keys: %d REENC, %d OLD", reenc, old)
	}
	code, v, vout = e.verify("-a", "01.0033,02.0033", "-A", p.String())
	if code != 4 || v.Ready || v.Slots[0].MissingNew != 100 {
		t.Fatalf("verify -a of the restored file: exit %d %+v\n%s", code, v, vout)
	}
	if code, tout := e.run("verify", "-i", id); code != 4 || !strings.Contains(tout, "NOT READY: DO NOT SET/ACTIVATE THE NEW MASTER KEYS ON 01.0033, 02.0033: 100 KEY OBJECTS WOULD BE LOST.") {
		t.Fatalf("verify text: exit %d\n%s", code, tout)
	}

	// The fix it names completes it: cancel, reencipher, then ready.
	e.mustRun("cancel", "-i", id)
	if reenc, _ := e.count(); reenc != 0 {
		t.Fatalf("%d REENC blobs after the cancel", reenc)
	}
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id2 := string(e.op().ID)
	if code, v, out := e.verify("-i", id2); code != 0 || !v.Ready || v.Slots[0].MissingNew != 0 || v.Fix != "" {
		t.Fatalf("verify after the fix: exit %d %+v\n%s", code, v, out)
	}
	if out := e.mustRun("list"); !strings.Contains(out, "can now be set") || strings.Contains(out, "WARNING") {
		t.Fatalf("list after the fix:\n%s", out)
	}
}
