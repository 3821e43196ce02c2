package operator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestStateDirErrorsSayWhere (issue 19.7): when the operation directory
// becomes unwritable during a reencipher (here: read-only; disk full and
// EACCES take the same path), the error says the operation could not be
// saved, once, with a hint about the directory, and is not headed "At
// least one token failed".
func TestStateDirErrorsSayWhere(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 3)
	if err := os.MkdirAll(r.Layout.MKChangeDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := r.Cmd("pkcshsm_mk_change", "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	cmd.Path = testenv.Bin(t, "pkcshsm_mk_change", "failpoints")
	cmd.Env = append(cmd.Env, failpoint.EnvSpec+"=cli.reencipher.after-save-REENCIPHERING.broadcast=sleep:2s", failpoint.EnvTrace+"="+trace)
	cmd.Stdin = strings.NewReader(testenv.PIN(testenv.UserPIN))
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(trace)
		if strings.Contains(string(b), "after-save-REENCIPHERING.broadcast") {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("never reached:\n%s\n%s", b, out.String())
		}
		time.Sleep(5 * time.Millisecond) // polling a file the tool writes
	}
	readOnly(t, r.Layout.MKChangeDir())
	cmd.Wait()
	got := out.String()
	t.Logf("exit %d\n%s", cmd.ProcessState.ExitCode(), got)
	if cmd.ProcessState.ExitCode() == 0 || strings.Contains(got, "At least one token failed") ||
		strings.Count(got, "failed to save") != 1 || !strings.Contains(got, "read-only file system") {
		t.Errorf("exit %d:\n%s", cmd.ProcessState.ExitCode(), got)
	}
}
