package cli

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// withNewAES gives the fake bus's CCA APQNs a loaded NEW AES register.
func withNewAES(e *env) {
	for i := range e.tokens.queues[:2] {
		e.tokens.queues[i].MK = map[mkvp.Type]hsm.Registers{mkvp.CCAAES: {
			New:     hsm.Register{State: apqn.StateFull, Pattern: mustPat(mkvp.CCAAES, aesNew)},
			Current: hsm.Register{State: apqn.StateValid, Pattern: mustPat(mkvp.CCAAES, aesOld)},
		}}
	}
}

func mustPat(t mkvp.Type, s string) mkvp.Pattern {
	p, _, err := mkvp.Parse(t, s)
	if err != nil {
		panic(err)
	}
	return p
}

func TestVerifyBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify"}, "option -a/--apqns or -i/--id is required"},
		{[]string{"verify", "-i", "Ab12Cd", "-a", "01.0033"}, "option --apqns cannot be combined with -i/--id"},
		{[]string{"verify", "-a", "01.0033", "-t", "bogus"}, "unknown master key type"},
		{[]string{"verify", "-a", "09.0033"}, "APQN 09.0033 is not on the AP bus"},
		{[]string{"verify", "-a", "01.0033", "-A", "12"}, "option -A/--cca-aes-mkvp"},
		{[]string{"verify", "-i", "bad id"}, "invalid"},
	} {
		e := newEnv(t)
		code, out, errs := e.run(tc.args...)
		if code != 2 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "hint:") || out != "" {
			t.Errorf("%v: exit %d, want 2 with %q and a hint:\n%s%s", tc.args, code, tc.want, out, errs)
		}
	}
}

// The JSON answer has exactly the shared contract's fields, counts token
// and session keys, and names the fix; exit 4 when keys would be lost.
func TestVerifyJSONContract(t *testing.T) {
	e := newEnv(t)
	withNewAES(e)
	e.tokens.census = map[uint]CensusResult{2: {Affected: true, Keys: 5, MissingNew: 2}}
	e.daemon.outcomes = map[string][]event.ProcessResult{"mkchange.census": {{PID: 77, Program: "app", Outcome: event.Replied,
		Results: []event.TokenResult{{Slot: 2, Serial: "CCA0001", Result: event.Affected, Objects: 4, ObjectsFailed: 3}}}}}
	code, out, errs := e.run("verify", "-a", "01.0033,02.0033", "--json")
	if code != 4 || !strings.Contains(errs, "not ready: DO NOT SET") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"apqns", "fix", "problems", "ready", "slots", "types"}) {
		t.Fatalf("top-level fields %v", keys)
	}
	var slots []map[string]any
	json.Unmarshal(raw["slots"], &slots)
	if len(slots) != 1 {
		t.Fatalf("slots %s", raw["slots"])
	}
	var sk []string
	for k := range slots[0] {
		sk = append(sk, k)
	}
	slices.Sort(sk)
	if !slices.Equal(sk, []string{"keys", "lost", "missing_new", "reasons", "session_keys_missing_new", "slot", "token", "token_type"}) {
		t.Fatalf("slot fields %v", sk)
	}
	if slots[0]["missing_new"] != 2.0 || slots[0]["session_keys_missing_new"] != 3.0 || slots[0]["keys"] != 5.0 || slots[0]["token_type"] != "cca" {
		t.Fatalf("slot %v", slots[0])
	}
	var types []string
	json.Unmarshal(raw["types"], &types)
	if string(raw["ready"]) != "false" || !slices.Equal(types, []string{"CCA AES"}) ||
		!strings.Contains(string(raw["fix"]), "pkcshsm_mk_change reencipher -a 01.0033,02.0033 -A "+aesNew) {
		t.Fatalf("answer %s", out)
	}
	ev := e.daemon.events[len(e.daemon.events)-1]
	if ev.Type != "mkchange.census" || !ev.Target.ExcludeCaller || !strings.Contains(string(ev.Payload), aesNew) {
		t.Fatalf("census event %+v", ev)
	}

	// Nothing missing anywhere: ready, exit 0, no fix.
	e.tokens.census = map[uint]CensusResult{2: {Affected: true, Keys: 5}}
	e.daemon.outcomes = nil
	code, out, errs = e.run("verify", "-a", "01.0033,02.0033", "--json")
	if code != 0 || !strings.Contains(out, `"ready": true`) || !strings.Contains(out, `"fix": ""`) {
		t.Fatalf("ready: exit %d\n%s%s", code, out, errs)
	}
	// A given pattern that is not what the NEW registers hold.
	code, out, _ = e.run("verify", "-a", "01.0033,02.0033", "-A", aesOld)
	if code != 4 || !strings.Contains(out, "the NEW CCA AES register on 01.0033, 02.0033 holds "+aesNew+", not "+aesOld) {
		t.Fatalf("pattern mismatch: exit %d\n%s", code, out)
	}
}
