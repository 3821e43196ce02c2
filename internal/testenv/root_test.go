package testenv

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCopy: a copy of a root has the original's tokens, and its
// configuration names the copy's adapters, not the original's; a change
// in the copy leaves the original alone.
func TestCopy(t *testing.T) {
	r := NewRootParallel(t, CCA(2), Slot{ID: 3, Type: "ep11", Label: "strict", Options: "STRICT_MODE\n"})
	r.Token(2, 3)
	c := r.Copy(t)
	conf, err := os.ReadFile(c.Layout.GlobalConf())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "simulator-dir = "+c.Layout.SimDir()+"\n") || strings.Contains(string(conf), r.Layout.Root) {
		t.Fatalf("the copy's pkcshsm.conf:\n%s", conf)
	}
	if b, err := os.ReadFile(c.Layout.ConfDir() + "/strict.conf"); err != nil || !strings.HasSuffix(string(b), "END\nSTRICT_MODE\n") {
		t.Fatalf("strict.conf: %q %v", b, err)
	}
	res := c.Run("pkcshsm", PIN(UserPIN), "keys", "list", "--slot", "2")
	if res.Code != 0 || !strings.Contains(res.Stdout, "3 keys") {
		t.Fatalf("keys list in the copy: %d\n%s", res.Code, res.Out())
	}
	if res := c.Run("pkcshsm", PIN(UserPIN), "keys", "delete", "--slot", "2", "--label", "k0", "--yes"); res.Code != 0 {
		t.Fatalf("delete in the copy: %d\n%s", res.Code, res.Out())
	}
	if res := r.Run("pkcshsm", PIN(UserPIN), "keys", "list", "--slot", "2"); !strings.Contains(res.Stdout, "3 keys") {
		t.Fatalf("the original changed with the copy:\n%s", res.Out())
	}
}

// TestDialog: a line-answering process answers each line, and Close
// returns its exit status.
func TestDialog(t *testing.T) {
	d := StartDialog(t, exec.Command("bash", "-c", `while read -r l; do [ "$l" = quit ] && exit 3; echo "got $l"; done`))
	if got := d.Ask("one"); got != "got one" {
		t.Fatalf("answer %q", got)
	}
	if got := d.Ask("two"); got != "got two" {
		t.Fatalf("answer %q", got)
	}
	d.Send("quit")
	var ee *exec.ExitError
	if err := d.Close(); err == nil || !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Close: %v, want exit status 3", err)
	}
}
