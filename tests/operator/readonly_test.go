package operator

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// readOnly makes dir a read-only file system (a read-only bind mount of
// itself) until the test ends. It needs root and mount(8), as CI has.
func readOnly(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("mount", "--bind", dir, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot bind-mount (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro,bind", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v %s", err, out)
	}
}

// TestReadOnlyRoot (issue 19.6): on a read-only root (the state directory
// with the simulator, the tokens and the operations on a read-only file
// system) the commands that only read work: keys list, slots, list; the
// dry run shows its plan and names the read-only file system as what the
// real run would hit (not the simulator, not the token group).
func TestReadOnlyRoot(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 3)
	// An operation directory exists, as after an earlier change.
	id := reencipher(t, r, aes)
	if res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "cancel", "-i", id); res.Code != 0 {
		t.Fatalf("cancel: %d\n%s", res.Code, res.Out())
	}
	readOnly(t, r.Layout.StateDir())
	for _, c := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"pkcshsm", testenv.PIN(testenv.UserPIN), []string{"keys", "list", "--slot", "2"}, "k0"},
		{"pkcshsm", "", []string{"slots"}, "cca"},
		{"pkcshsm_mk_change", "", []string{"list"}, ""},
	} {
		res := r.Run(c.name, c.stdin, c.args...)
		if res.Code != 0 || !strings.Contains(res.Stdout, c.want) {
			t.Errorf("%s %v on a read-only root: exit %d\n%s", c.name, c.args, res.Code, res.Out())
		}
	}
	// The dry run checks everything and shows the plan, then says the
	// one thing the real run could not do, and how to fix it.
	res := r.Run("pkcshsm_mk_change", "", "reencipher", "--dry-run", "-a", "01.0033,02.0033", "-A", aes)
	if res.Code != 4 || !strings.Contains(res.Stdout, "Slot 2: Label: cca") ||
		!strings.Contains(res.Stderr, "read-only file system") || !strings.Contains(res.Stderr, "hint: remount the file system read-write") {
		t.Errorf("reencipher --dry-run on a read-only root: exit %d\n%s", res.Code, res.Out())
	}
}

// TestReadOnlyTokenStoreWrite (issue 19.7): a write to a token store on a
// read-only file system names the read-only file system and says to
// remount it, not to check the token group.
func TestReadOnlyTokenStoreWrite(t *testing.T) {
	t.Parallel()
	r, _ := cca(t, 1)
	readOnly(t, r.Layout.TokenDir("cca"))
	res := r.Run("pkcshsm", testenv.PIN(testenv.UserPIN), "keys", "generate", "--slot", "2", "--type", "aes", "--label", "new")
	if res.Code == 0 || !strings.Contains(res.Stderr, "read-only file system") || strings.Contains(res.Stderr, "token group") ||
		!strings.Contains(res.Stderr, "hint: remount the file system read-write") {
		t.Errorf("keys generate on a read-only token store: exit %d\n%s", res.Code, res.Out())
	}
}
