package cli

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
)

// TestBadInput runs every malformed or ill-timed command against a state
// directory that holds an operation, and asserts the message, the exit code
// and that neither the operation files nor any token changed.
func TestBadInput(t *testing.T) {
	const (
		ok16 = "7D10D17BC8A409C4"
		ok32 = "EF92899EBE57291EC8E8716D850EE2F7"
	)
	type tc struct {
		name  string
		args  []string
		stdin string
		setup func(e *env, id state.ID) // may change the fakes
		code  int
		msg   string
	}
	cases := []tc{
		// Usage.
		{name: "no command", args: []string{"frobnicate"}, code: 2, msg: `unknown command "frobnicate"`},
		{name: "stray argument", args: []string{"list", "extra"}, code: 2, msg: "unrecognized argument 'extra'"},
		{name: "unknown option", args: []string{"list", "--frob"}, code: 2, msg: "unknown flag: --frob"},
		{name: "bad verbose level", args: []string{"list", "-v", "loud"}, code: 2, msg: "invalid verbose level 'loud'"},
		{name: "zero timeout", args: []string{"list", "--timeout", "0s"}, code: 2, msg: "--timeout must be positive"},
		// Options on the wrong subcommand.
		{name: "apqns on finalize", args: []string{"finalize", "-a", "01.0033"}, code: 2, msg: "option -a/--apqns is only valid for the 'reencipher' or 'verify' command"},
		{name: "wkvp on cancel", args: []string{"cancel", "--ep11-wkvp", ok32}, code: 2, msg: "option -e/--ep11-wkvp is only valid for the 'reencipher' or 'verify' command"},
		{name: "aes on list", args: []string{"list", "-A", ok16}, code: 2, msg: "option -A/--cca-aes-mkvp is only valid"},
		{name: "id on reencipher", args: []string{"reencipher", "-i", "abcdef"}, code: 2, msg: "option -i/--id is only valid for the 'verify', 'finalize', 'cancel' or 'list' command"},
		{name: "json on finalize", args: []string{"finalize", "--json"}, code: 2, msg: "option --json is only valid for the 'verify' or 'list' command"},
		{name: "dry-run on cancel", args: []string{"cancel", "--dry-run"}, code: 2, msg: "option --dry-run is only valid for the 'reencipher' command"},
		// Missing required options.
		{name: "reencipher without apqns", args: []string{"reencipher", "-A", ok16}, code: 2, msg: "option -a/--apqns is required"},
		{name: "reencipher without pattern", args: []string{"reencipher", "-a", "01.0033"}, code: 2, msg: "at least one master key verification pattern must be specified"},
		{name: "finalize without id", args: []string{"finalize"}, code: 2, msg: "option -i/--id is required for the 'finalize' command"},
		{name: "cancel without id", args: []string{"cancel"}, code: 2, msg: "option -i/--id is required for the 'cancel' command"},
		// Bad APQNs.
		{name: "apqn without dot", args: []string{"reencipher", "-a", "010033", "-A", ok16}, code: 2, msg: `invalid APQN "010033"`},
		{name: "apqn card too big", args: []string{"reencipher", "-a", "100.0033", "-A", ok16}, code: 2, msg: "card"},
		{name: "apqn domain too big", args: []string{"reencipher", "-a", "01.10000", "-A", ok16}, code: 2, msg: "domain"},
		{name: "apqn not hex", args: []string{"reencipher", "-a", "0x.0033", "-A", ok16}, code: 2, msg: "not hexadecimal"},
		{name: "apqn empty entry", args: []string{"reencipher", "-a", "01.0033,,02.0033", "-A", ok16}, code: 2, msg: "empty entry"},
		{name: "apqn duplicate", args: []string{"reencipher", "-a", "01.0033", "-a", "01.0033", "-A", ok16}, code: 2, msg: "listed more than once"},
		{name: "apqn empty", args: []string{"reencipher", "-a", "", "-A", ok16}, code: 2, msg: "empty APQN list"},
		// Bad patterns.
		{name: "aes pattern short", args: []string{"reencipher", "-a", "01.0033", "-A", "7D10D17B"}, code: 2, msg: "-A/--cca-aes-mkvp: CCA AES pattern \"7D10D17B\" is too short"},
		{name: "aes pattern long", args: []string{"reencipher", "-a", "01.0033", "-A", ok16 + "00"}, code: 2, msg: "too long"},
		{name: "aes pattern odd", args: []string{"reencipher", "-a", "01.0033", "-A", ok16 + "0"}, code: 2, msg: "odd number"},
		{name: "sym pattern not hex", args: []string{"reencipher", "-a", "01.0033", "-s", "1g0E2053F18E5F4C"}, code: 2, msg: "not hexadecimal"},
		{name: "apka pattern empty", args: []string{"reencipher", "-a", "01.0033", "-p", ""}, code: 2, msg: "too short"},
		{name: "asym pattern prefix only", args: []string{"reencipher", "-a", "01.0033", "-S", "0x"}, code: 2, msg: "too short"},
		{name: "wkvp short", args: []string{"reencipher", "-a", "06.0033", "-e", ok16}, code: 2, msg: "EP11 pattern"},
		{name: "wkvp blank inside", args: []string{"reencipher", "-a", "06.0033", "-e", "EF92899EBE57291E C8E8716D850EE2F7"}, code: 2, msg: "not hexadecimal"},
		// Bad ids.
		{name: "id too short", args: []string{"finalize", "-i", "abc"}, code: 2, msg: "invalid operation id \"abc\""},
		{name: "id too long", args: []string{"cancel", "-i", "abcdefg"}, code: 2, msg: "want 6 characters"},
		{name: "id with path", args: []string{"finalize", "-i", "../../x"}, code: 2, msg: "invalid operation id \"../../x\""},
		{name: "id with path of six", args: []string{"finalize", "-i", "../etc"}, code: 2, msg: "is not a letter or digit"},
		{name: "id with slash", args: []string{"list", "-i", "ab/cde"}, code: 2, msg: "is not a letter or digit"},
		{name: "id with dot", args: []string{"cancel", "-i", ".lock0"}, code: 2, msg: "is not a letter or digit"},
		// Characters, not bytes: five characters in six bytes, six in seven.
		{name: "id of five characters in six bytes", args: []string{"list", "-i", "abcdé"}, code: 2, msg: "want 6 characters, got 5"},
		{name: "id of six characters in seven bytes", args: []string{"cancel", "-i", "abcdeé"}, code: 2, msg: "character 'é' is not a letter or digit"},
		{name: "unknown id finalize", args: []string{"finalize", "-i", "Zz0000"}, code: 3, msg: "operation 'Zz0000' not found"},
		{name: "unknown id list", args: []string{"list", "-i", "Zz0000"}, code: 3, msg: "not found"},
		// Wrong time.
		{name: "finalize before activation", args: []string{"finalize", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) {
				e.tokens.queryErr[2] = errclass.New(errclass.FailedPrecondition, "the NEW CCA AES master key register must be empty on APQN 01.0033")
			}, code: 4, msg: "Token in slot 2 is unable to perform the finalize action: the NEW CCA AES master key register must be empty"},
		{name: "cancel after activation", args: []string{"cancel", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) {
				e.tokens.queryErr[2] = errclass.New(errclass.FailedPrecondition, "the CURRENT CCA AES master key on APQN 01.0033 is already the new one")
			}, code: 4, msg: "unable to perform the cancel action"},
		{name: "token config not updated", args: []string{"finalize", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) {
				e.tokens.queryErr[2] = errclass.New(errclass.FailedPrecondition, "EXPECTED_MKVPS AES in ccatok.conf does not specify the new MKVP")
			}, code: 4, msg: "does not specify the new MKVP"},
		{name: "affected slots changed", args: []string{"finalize", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) { e.tokens.affected[4] = true }, code: 4, msg: "list of slots affected by this master key change has changed"},
		{name: "conflicting operation", args: []string{"reencipher", "-a", "02.0033", "-A", ok16}, stdin: "1234\n", code: 5,
			msg: "also affects APQN 02.0033 and MK type 'CCA AES'"},
		{name: "conflicting dry run", args: []string{"reencipher", "-a", "02.0033", "-A", ok16, "--dry-run"}, code: 5, msg: "intersecting"},
		// Tokens and people.
		{name: "wrong PIN", args: []string{"reencipher", "-a", "03.0033", "-A", ok16}, stdin: "9999\n", code: 7, msg: "failed to log in to slot 2: PIN incorrect"},
		{name: "EOF at PIN prompt", args: []string{"reencipher", "-a", "03.0033", "-A", ok16}, stdin: "", code: 9, msg: "end of input at the prompt"},
		{name: "EOF at finalize PIN", args: []string{"finalize", "-i", "ID"}, stdin: "", code: 9, msg: "end of input"},
		{name: "no at missing-token prompt", args: []string{"reencipher", "-a", "03.0033", "-A", ok16}, stdin: "n\n",
			setup: func(e *env, id state.ID) { e.tokens.slots = append(e.tokens.slots, Slot{ID: 7}) }, code: 9, msg: "aborted by user"},
		{name: "EOF at missing-token prompt", args: []string{"reencipher", "-a", "03.0033", "-A", ok16},
			setup: func(e *env, id state.ID) { e.tokens.slots = append(e.tokens.slots, Slot{ID: 7}) }, code: 9, msg: "end of input"},
		{name: "no affected token", args: []string{"reencipher", "-a", "03.0033", "-S", ok16}, code: 4, msg: "no token is affected by this master key change"},
		{name: "query fails at reencipher", args: []string{"reencipher", "-a", "03.0033", "-A", ok16},
			setup: func(e *env, id state.ID) {
				e.tokens.queryErr[2] = errclass.New(errclass.FailedPrecondition, "no NEW CCA AES master key is set on APQN 03.0033")
			}, code: 4, msg: "at least one token is unable to perform the master key change, aborting"},
		{name: "daemon not running", args: []string{"reencipher", "-a", "03.0033", "-A", ok16},
			setup: func(e *env, id state.ID) { e.daemon.dialErr = errclass.New(errclass.Unavailable, "connection refused") },
			code:  6, msg: "failed to connect to the pkcshsmd admin socket"},
		// APQNs that do not exist, or cannot be checked.
		{name: "apqn not on the bus", args: []string{"reencipher", "-a", "03.0033,2f.0033", "-A", ok16}, stdin: "1234\n", code: 2,
			msg: "APQN 2F.0033 is not on the AP bus"},
		{name: "apqns not on the bus", args: []string{"reencipher", "-a", "2f.33,30.1", "-A", ok16, "--dry-run"}, code: 2,
			msg: "APQNs 2F.0033, 30.0001 are not on the AP bus"},
		{name: "finalize with an offline apqn", args: []string{"finalize", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) { e.tokens.queues[1].Online = false }, code: 6,
			msg: "APQN 02.0033 is offline or checkstopped: the new master key cannot be verified there"},
		{name: "finalize with a vanished apqn", args: []string{"finalize", "-i", "ID"}, stdin: "1234\n",
			setup: func(e *env, id state.ID) { e.tokens.queues = busOf("01.0033") }, code: 2,
			msg: "APQN 02.0033 is not on the AP bus"},
		// Checks that must hold again under the lock of the create.
		{name: "registers changed while the PIN was typed", args: []string{"reencipher", "-a", "03.0033", "-A", ok16}, stdin: "1234\n",
			setup: func(e *env, id state.ID) {
				e.tokens.queryHook = func(n int) error {
					if n > 2 { // the second round of queries (two present slots)
						return errclass.New(errclass.FailedPrecondition, "no NEW CCA AES master key is set on APQN 03.0033")
					}
					return nil
				}
			}, code: 4, msg: "Token in slot 2 is unable to perform the master key change: no NEW CCA AES master key is set"},
		// The dry run refuses what the real run refuses.
		{name: "dry run next to a corrupt operation file", args: []string{"reencipher", "-a", "03.0033", "-A", ok16, "--dry-run"},
			setup: func(e *env, id state.ID) { corrupt(e, id) }, code: 8, msg: "refusing to start an operation next to an unreadable one"},
		{name: "real run next to a corrupt operation file", args: []string{"reencipher", "-a", "03.0033", "-A", ok16}, stdin: "1234\n",
			setup: func(e *env, id state.ID) { corrupt(e, id) }, code: 8, msg: "refusing to start an operation next to an unreadable one"},
		{name: "no slots", args: []string{"reencipher", "-a", "03.0033", "-A", ok16},
			setup: func(e *env, id state.ID) { e.tokens.slots = nil }, code: 4, msg: "no slots are configured"},
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			id := storeOp(t, e, state.Reenciphered, map[mkvp.Type]string{mkvp.CCAAES: ok16}, 2)
			if tt.setup != nil {
				tt.setup(e, id)
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "ID", string(id))
			}
			before := e.snapshot()
			e.stdin = tt.stdin
			code, out, errs := e.run(args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errs)
			}
			if !strings.Contains(errs, tt.msg) {
				t.Errorf("stderr lacks %q:\n%s", tt.msg, errs)
			}
			if !strings.Contains(errs, "pkcshsm_mk_change: error: ") {
				t.Errorf("no error line:\n%s", errs)
			}
			after := e.snapshot()
			// Nothing may change, not even the history: a refused command
			// never created an operation.
			if !maps.Equal(before, after) {
				t.Errorf("state changed:\nbefore %v\nafter  %v", keys(before), keys(after))
			}
			if m := e.tokens.mutations(); len(m) != 0 {
				t.Errorf("tokens changed: %v", m)
			}
		})
	}
}

// corrupt damages the stored operation's file and its copy, so that the
// operation cannot be recovered.
func corrupt(e *env, id state.ID) {
	for _, name := range []string{string(id), string(id) + ".copy"} {
		p := filepath.Join(e.layout().MKChangeDir(), name)
		b, err := os.ReadFile(p)
		if err != nil {
			e.t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(p, b, 0o600); err != nil {
			e.t.Fatal(err)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
