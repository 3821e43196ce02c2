package cli

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds pkcshsm and the tokenclient test program once per test
// binary.
func binaries(t *testing.T) (pkcshsmBin, clientBin string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pkcshsm-cli-test")
		if buildErr != nil {
			return
		}
		// pkcshsm comes from internal/testenv (built once per go test
		// run); the test program of this package is built here.
		for name, pkg := range map[string]string{
			"tokenclient": "github.com/pkcshsm/pkcshsm/cmd/pkcshsm/cli/testdata/tokenclient",
		} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg).CombinedOutput()
			if err != nil {
				buildErr = &buildError{pkg, string(out), err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return testenv.Bin(t, "pkcshsm"), filepath.Join(binDir, "tokenclient")
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return "go build " + e.pkg + ": " + e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
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
type client struct {
	in  io.WriteCloser
	out *bufio.Reader
	cmd *exec.Cmd
}

func (c *client) ask(t *testing.T, line string) string {
	t.Helper()
	if _, err := io.WriteString(c.in, line+"\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("tokenclient: %v (%q)", err, resp)
	}
	return strings.TrimSpace(resp)
}

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
	cmd := exec.Command(cl, "0")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &client{in: in, out: bufio.NewReader(stdout), cmd: cmd}
	t.Cleanup(func() {
		in.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
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
	if _, err := io.WriteString(in, "quit\n"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tokenclient exit: %v", err)
	}
}
