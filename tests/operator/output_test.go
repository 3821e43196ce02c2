package operator

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// runTo runs pkcshsm_mk_change with stdout on the file and
// the USER PIN on stdin; it returns the exit code and stderr.
func runTo(t *testing.T, r *testenv.Root, stdout *os.File, args ...string) (int, string) {
	cmd := r.Cmd("pkcshsm_mk_change", args...)
	cmd.Stdin = strings.NewReader(testenv.PIN(testenv.UserPIN))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	cmd.Stdout = stdout
	err := cmd.Run()
	return cmd.ProcessState.ExitCode(), errb.String() + errString(err)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

// TestOutputErrorsAreFailures (issue 19.3): reencipher and list with a
// standard output that cannot be written exit non-zero with an error, and
// reencipher creates no operation the operator never saw.
func TestOutputErrorsAreFailures(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 5)
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	code, stderr := runTo(t, r, full, "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	if code == 0 || !strings.Contains(stderr, "error: failed to write to standard output") || !strings.Contains(stderr, "hint:") {
		t.Errorf("reencipher >/dev/full: exit %d:\n%s", code, stderr)
	}
	if res := r.Run("pkcshsm_mk_change", "", "list", "--json"); res.Code != 0 || strings.TrimSpace(res.Stdout) != "[]" {
		t.Errorf("reencipher >/dev/full left an operation: exit %d\n%s", res.Code, res.Out())
	}
	if res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "reencipher", "-a", "01.0033,02.0033", "-A", aes); res.Code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", res.Code, res.Out())
	}
	for _, args := range [][]string{{"list"}, {"list", "--json"}} {
		code, stderr := runTo(t, r, full, args...)
		if code != 1 || !strings.Contains(stderr, "failed to write to standard output") {
			t.Errorf("%v >/dev/full: exit %d:\n%s", args, code, stderr)
		}
	}
	// Standard output closed (>&-).
	if res := r.Bash("", "pkcshsm_mk_change list >&-"); res.Code != 1 || !strings.Contains(res.Stderr, "failed to write to standard output") {
		t.Errorf("list >&-: exit %d:\n%s", res.Code, res.Out())
	}
	if res := r.Bash("", "pkcshsm_mk_change list >/dev/null"); res.Code != 0 {
		t.Errorf("list >/dev/null: exit %d:\n%s", res.Code, res.Out())
	}
}
