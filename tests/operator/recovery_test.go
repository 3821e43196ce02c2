package operator

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestListIDRepairsATruncatedFile (issue 19.8): list -i repairs a
// truncated operation file from its copy, as plain list does (the man
// page says so for both): the damaged file goes to .broken/ and the next
// list -i has nothing to warn about.
func TestListIDRepairsATruncatedFile(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 2)
	id := reencipher(t, r, aes)
	main := filepath.Join(r.Layout.MKChangeDir(), id)
	b, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(main, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	res := r.Run("pkcshsm_mk_change", "", "list", "-i", id)
	if res.Code != 0 || !strings.Contains(res.Stderr, "warning:") || !strings.Contains(res.Stdout, "Operation:       "+id) {
		t.Fatalf("list -i on a truncated file: exit %d\n%s", res.Code, res.Out())
	}
	if again, _ := os.ReadFile(main); string(again) != string(b) {
		t.Errorf("list -i did not rewrite %s from its copy (%d bytes, want %d)", main, len(again), len(b))
	}
	if moved, _ := filepath.Glob(filepath.Join(r.Layout.MKChangeDir(), ".broken", id+"*")); len(moved) == 0 {
		t.Errorf("the damaged file was not kept in .broken/")
	}
	if res := r.Run("pkcshsm_mk_change", "", "list", "-i", id); res.Code != 0 || res.Stderr != "" {
		t.Errorf("second list -i: exit %d\n%s", res.Code, res.Out())
	}
}

// TestRollbackSaysCanceledAfterItsProgress (issue 19.8): a reencipher that
// a token fails rolls back with its progress lines first, and says "the
// master key change is canceled" only after them, once it is.
func TestRollbackSaysCanceledAfterItsProgress(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 3)
	cmd := r.Cmd("pkcshsm_mk_change", "--progress", "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	cmd.Path = testenv.Bin(t, "pkcshsm_mk_change", "failpoints")
	cmd.Env = append(cmd.Env, failpoint.EnvSpec+"=cli.pass.reencipher.list=error")
	cmd.Stdin = strings.NewReader(testenv.PIN(testenv.UserPIN))
	out, _ := cmd.CombinedOutput()
	got := string(out)
	heading := strings.Index(got, "At least one token failed to perform the key re-encryption; the master key change is canceled.")
	canceling := strings.Index(got, "Canceling, please wait...")
	lastProgress := strings.LastIndex(got, "progress: ")
	if cmd.ProcessState.ExitCode() == 0 || heading < 0 || canceling < 0 || lastProgress < 0 || canceling > lastProgress || heading < lastProgress {
		t.Errorf("exit %d: want the rollback's progress between 'Canceling, please wait...' and the heading:\n%s", cmd.ProcessState.ExitCode(), got)
	}
}

// TestInterruptAtAQuestionEndsTheLine (issue 19.8): ^C at "Continue
// [y/N]?" leaves the error on a line of its own, with a hint.
func TestInterruptAtAQuestionEndsTheLine(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2), testenv.CCA(3))
	r.NoEvents()
	r.Token(2, 1) // slot 3 has no token: reencipher asks whether to go on
	aes := r.LoadNew(mkvpAES, 7, testenv.CCAAPQNs...)
	term := r.Terminal("pkcshsm_mk_change", "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	term.WaitFor("Continue [y/N]? ")
	term.Type("\x03")
	code, shown := term.Wait()
	if code != 130 || !regexp.MustCompile(`(?m)^pkcshsm_mk_change: error: interrupted\r?$`).MatchString(shown) ||
		!strings.Contains(shown, "pkcshsm_mk_change: hint: ") {
		t.Errorf("exit %d:\n%q", code, shown)
	}
}
