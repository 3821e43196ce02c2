package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRegularFilesNeverBlock plants a FIFO, a dangling symlink and a
// socket, all with operation-id names, in the operations directory while an
// application runs and an operation is active, then checks with the real
// binaries that nothing waits on them: the running application's agent
// reports them, list and `pkcshsm keys list` answer, a new application
// starts, cancel gets its lock, and SIGTERM ends an application in bounded
// time.
func TestNonRegularFilesNeverBlock(t *testing.T) {
	s := newStack(t)
	app := s.startLoad("app1")
	newAES := s.loadNew(ccaAPQN, "AES")
	code, out, id := s.reencipher(false, newAES, "--timeout", "20s")
	if code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", code, out)
	}

	fifo := filepath.Join(s.ops, "FiFo12")
	if err := syscall.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	// A writer that never writes would not unblock a reader either; with
	// none at all, an open(2) without O_NONBLOCK waits forever.
	if err := os.Symlink(filepath.Join(s.sb.root, "nowhere"), filepath.Join(s.ops, "LiNk12")); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(s.ops, "SoCk12"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// The running application's agent saw the change and read past it.
	s.waitLog(app, "FiFo12")

	_, out = s.run("", "pkcshsm_mk_change", "list")
	if !strings.Contains(out, id) || !strings.Contains(out, "FiFo12") {
		t.Errorf("list does not show the operation and report the FIFO:\n%s", out)
	}
	if n := len(s.keys("2")); n == 0 {
		t.Error("keys list shows no key")
	}
	second := s.startLoad("app2")
	if rep := s.stopLoad(app, 20*time.Second); rep.Failed != 0 {
		t.Errorf("application: %d of %d operations failed", rep.Failed, rep.Ops)
	}
	code, out = s.run(userPIN+"\n", "pkcshsm_mk_change", "cancel", "-i", id, "--timeout", "20s")
	if code != 0 {
		t.Errorf("cancel: exit %d\n%s", code, out)
	}
	if rep := s.stopLoad(second, 20*time.Second); rep.Failed != 0 {
		t.Errorf("new application: %d of %d operations failed", rep.Failed, rep.Ops)
	}
	// The FIFO, the link and the socket are still there: nothing removed
	// or opened them as operation files.
	for _, n := range []string{"FiFo12", "LiNk12", "SoCk12"} {
		if _, err := os.Lstat(filepath.Join(s.ops, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}

	// In a token directory, a FIFO in place of one of the database's files
	// is refused at once with the reason, by the tools and by a new
	// application alike. No process has the store open now, so its shared
	// memory file may go.
	shm := filepath.Join(s.sb.root, "var", "lib", "pkcshsm", "tokens", "cca", "token.db-shm")
	if err := os.Remove(shm); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(shm, 0o660); err != nil {
		t.Fatal(err)
	}
	code, out = s.run(userPIN+"\n", "pkcshsm", "keys", "list", "--slot", "2")
	if code == 0 || !strings.Contains(out, "token.db-shm is not a regular file") {
		t.Errorf("keys list with a FIFO in the token directory: exit %d\n%s", code, out)
	}
	code, out = s.run(userPIN+"\n", "p11load", "-slots", "2", "-duration", "1s")
	if code == 0 || !strings.Contains(out, "token.db-shm is not a regular file") {
		t.Errorf("an application with a FIFO in the token directory: exit %d\n%s", code, out)
	}
}
