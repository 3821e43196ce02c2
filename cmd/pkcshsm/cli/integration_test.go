package cli

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// binaries returns the built pkcshsm and the tokenclient test program
// (internal/testenv: built once per go test run).
func binaries(t *testing.T) (pkcshsmBin, clientBin string) {
	t.Helper()
	return testenv.Bin(t, "pkcshsm"), testenv.Program(t, "cmd/pkcshsm/cli/testdata/tokenclient")
}

// runBin runs the built pkcshsm as a separate process.
func runBin(t *testing.T, bin, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// client is a running tokenclient process.
type client struct{ *testenv.Dialog }

func (c *client) ask(t *testing.T, line string) string { return c.Ask(line) }

// TestTwoProcesses runs a long-lived process holding the token library
// (tokenclient, with its object cache) next to separate pkcshsm processes:
// each sees the other's new token keys, and a key deleted in one is gone
// in the other.
func TestTwoProcesses(t *testing.T) {
	newRoot(t) // sets PKCSHSM_ROOT, inherited by the child processes
	pk, cl := binaries(t)
	for _, args := range [][]string{
		{"token", "init", "--slot", "0", "--label", "shared"},
		{"pin", "set", "--slot", "0"},
	} {
		stdin := lines(soPIN, soPIN)
		if args[0] == "pin" {
			stdin = lines(soPIN, userPIN, userPIN)
		}
		if out, code := runBin(t, pk, stdin, args...); code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, code, out)
		}
	}
	c := &client{Dialog: testenv.StartDialog(t, exec.Command(cl, "0"))}
	if got := c.ask(t, userPIN); got != "ready" {
		t.Fatalf("tokenclient: %q", got)
	}
	if got := c.ask(t, "list"); got != "keys:" {
		t.Fatalf("initial list %q", got)
	}
	// Another process makes keys; the long-lived one sees them.
	for _, g := range [][]string{{"--type", "aes", "--label", "k1"}, {"--type", "ec", "--label", "k2"}} {
		if out, code := runBin(t, pk, lines(userPIN), append([]string{"keys", "generate", "--slot", "0"}, g...)...); code != 0 {
			t.Fatalf("generate: exit %d\n%s", code, out)
		}
	}
	if got := c.ask(t, "list"); got != "keys: k1,k2,k2" {
		t.Fatalf("after generate in another process: %q", got)
	}
	// The long-lived process deletes; a new process no longer sees it.
	if got := c.ask(t, "delete k1"); got != "deleted 1" {
		t.Fatalf("delete: %q", got)
	}
	out, code := runBin(t, pk, lines(userPIN), "keys", "list", "--slot", "0")
	if code != 0 || strings.Contains(out, "k1") || !strings.Contains(out, "k2") {
		t.Fatalf("after delete in another process (exit %d):\n%s", code, out)
	}
	// And a deletion by a separate process reaches the long-lived one:
	// generate and remove through the cache of the client again.
	if out, code := runBin(t, pk, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "rsa", "--label", "k3"); code != 0 {
		t.Fatalf("generate rsa: %d\n%s", code, out)
	}
	if got := c.ask(t, "list"); got != "keys: k2,k2,k3,k3" {
		t.Fatalf("after rsa: %q", got)
	}
	// Wrong PIN in a separate process is counted in the store, visible to
	// every process.
	if out, code := runBin(t, pk, lines("00000000"), "keys", "list", "--slot", "0"); code != 7 || !strings.Contains(out, "error:") {
		t.Fatalf("wrong PIN: exit %d\n%s", code, out)
	}
	if out, _ := runBin(t, pk, "", "slots"); !strings.Contains(out, "set (1 wrong)") {
		t.Fatalf("wrong PIN not counted:\n%s", out)
	}
	c.Send("quit")
	if err := c.Close(); err != nil {
		t.Fatalf("tokenclient exit: %v", err)
	}
}
