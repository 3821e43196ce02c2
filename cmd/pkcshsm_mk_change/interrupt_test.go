package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// newInterruptEnv is a temporary root with a CCA token (slot 2) holding n
// public AES keys, and a slot 3 whose token is not initialized, so that
// reencipher asks "Continue [y/N]?" before the PIN.
func newInterruptEnv(t *testing.T, n int) *crashEnv {
	layout := paths.Layout{Root: t.TempDir()}
	if err := sim.Init(layout.SimDir(), sim.Topology{Groups: []sim.Group{{Mode: apqn.ModeCCA, APQNs: []apqn.ID{q1, q2}}}}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(layout.ConfDir(), 0o755)
	files := map[string]string{
		"pkcshsm.conf": "hsm-backend = simulator\ndisable-event-support\n" +
			"slot 2 {\n\ttoken-type = cca\n\ttokname = cca\n\tconfname = ccatok.conf\n}\n" +
			"slot 3 {\n\ttoken-type = cca\n\ttokname = spare\n\tconfname = ccatok.conf\n}\n",
		"ccatok.conf": "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(layout.ConfDir(), name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(paths.EnvRoot, layout.Root)
	lib, err := tokenlib.Open(tokenlib.Options{Layout: layout, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	if err := lib.InitToken(2, []byte(soPIN), "cca"); err != nil {
		t.Fatal(err)
	}
	s, _ := lib.OpenSession(2, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err := lib.Login(s, ck.CKU_SO, []byte(soPIN)); err != nil {
		t.Fatal(err)
	}
	if err := lib.InitPIN(s, []byte(userPIN)); err != nil {
		t.Fatal(err)
	}
	lib.Logout(s)
	if err := lib.Login(s, ck.CKU_USER, []byte(userPIN)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := lib.GenerateKey(s, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN}, []tokenlib.Attribute{
			tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.Bool(ck.CKA_PRIVATE, false),
			tokenlib.String(ck.CKA_LABEL, fmt.Sprint("k", i)),
		}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &crashEnv{t: t, layout: layout, hsm: h}
}

// terminal runs the tool on a pseudo terminal, as an operator at a shell
// would: the tool's stdin, stdout and stderr are the terminal, which is
// also its controlling terminal, so ^C typed there is a SIGINT from the
// kernel's line discipline.
type terminal struct {
	t           *testing.T
	master, tty *os.File
	cmd         *exec.Cmd

	mu     sync.Mutex
	shown  bytes.Buffer
	update chan struct{} // gets a value after every read from the terminal
}

func (e *crashEnv) startOnTerminal(args ...string) *terminal {
	return e.startWith(nil, args...)
}

// startWith is startOnTerminal with some of the standard files replaced:
// stdio gets the terminal and returns stdin, stdout and stderr (nil: the
// terminal).
func (e *crashEnv) startWith(stdio func(tty *os.File) (in io.Reader, out, errw *os.File), args ...string) *terminal {
	t := e.t
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo terminal: %v", err)
	}
	term := &terminal{t: t, master: master, tty: tty, update: make(chan struct{}, 1)}
	t.Cleanup(func() { master.Close(); tty.Close() })
	term.cmd = exec.Command(tool(t), args...)
	term.cmd.Env = append(os.Environ(), paths.EnvRoot+"="+e.layout.Root)
	term.cmd.Stdin, term.cmd.Stdout, term.cmd.Stderr = tty, tty, tty
	if stdio != nil {
		in, out, errw := stdio(tty)
		if in != nil {
			term.cmd.Stdin = in
		}
		if out != nil {
			term.cmd.Stdout = out
		}
		if errw != nil {
			term.cmd.Stderr = errw
		}
	}
	// The terminal is also the child's fd 3, which makes it the
	// controlling terminal whatever fds 0-2 are.
	term.cmd.ExtraFiles = []*os.File{tty}
	term.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 3}
	if err := term.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.shown.Write(buf[:n])
			term.mu.Unlock()
			select {
			case term.update <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return term
}

// waitFor waits until the terminal has shown want (after the offset of
// what was already consumed by earlier waits).
func (term *terminal) waitFor(want string) {
	term.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		term.mu.Lock()
		got := term.shown.String()
		term.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-term.update:
		case <-deadline:
			term.t.Fatalf("terminal never showed %q; it shows:\n%s", want, got)
		}
	}
}

func (term *terminal) typeIn(s string) {
	if _, err := term.master.Write([]byte(s)); err != nil {
		term.t.Fatal(err)
	}
}

// wait waits for the tool's exit and returns its exit code and everything
// the terminal showed.
func (term *terminal) wait() (int, string) {
	term.t.Helper()
	err := term.cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		term.t.Fatal(err)
	}
	// The tool is gone; what it wrote is in the terminal's buffer. A marker
	// written now arrives after all of it.
	term.tty.Write([]byte("<exited>"))
	term.waitFor("<exited>")
	term.mu.Lock()
	defer term.mu.Unlock()
	return code, term.shown.String()
}

func (term *terminal) echoOn() bool {
	tio, err := unix.IoctlGetTermios(int(term.tty.Fd()), unix.TCGETS)
	if err != nil {
		term.t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

func (e *crashEnv) files() map[string]string {
	out := map[string]string{}
	dir := e.layout.MKChangeDir()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".lock") {
			b, _ := os.ReadFile(p)
			out[strings.TrimPrefix(p, dir)] = string(b)
		}
		return nil
	})
	return out
}

func (e *crashEnv) history() []state.HistoryEntry {
	d, err := state.Open(e.layout.MKChangeDir(), state.Options{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) || (err != nil && strings.Contains(err.Error(), "not found")) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	h, _, err := d.History(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// opIDs lists the operation files (by name).
func (e *crashEnv) opIDs() []string {
	var ids []string
	ents, _ := os.ReadDir(e.layout.MKChangeDir())
	for _, en := range ents {
		if _, err := state.ParseID(en.Name()); err == nil {
			ids = append(ids, en.Name())
		}
	}
	return ids
}

// TestInterruptAtEveryPrompt types ^C (or sends SIGTERM) at each prompt
// and during the re-encipher pass of the real tool on a real terminal: the
// exit code is 128+signal, the terminal echoes again, and the operation
// directory is as the tool promises: no operation and no history entry
// when no key was touched; a rolled-back operation in the history when
// the change had started; an unchanged operation when cancel was
// interrupted before it touched anything.
func TestInterruptAtEveryPrompt(t *testing.T) {
	const nKeys = 100
	e := newInterruptEnv(t, nKeys)
	p := e.loadNewAES()
	reencipher := []string{"reencipher", "-a", "1.33,2.33", "-A", p.String()}

	t.Run("^C at Continue", func(t *testing.T) {
		term := e.startOnTerminal(reencipher...)
		term.waitFor("Continue [y/N]? ")
		term.typeIn("\x03")
		code, shown := term.wait()
		if code != 130 || !strings.Contains(shown, "interrupted") {
			t.Fatalf("exit %d, want 130; terminal:\n%s", code, shown)
		}
		if !term.echoOn() || len(e.opIDs()) != 0 || len(e.history()) != 0 {
			t.Fatalf("echo %v, operations %v, history %v", term.echoOn(), e.opIDs(), e.history())
		}
	})
	t.Run("^C at the PIN prompt", func(t *testing.T) {
		term := e.startOnTerminal(reencipher...)
		term.waitFor("Continue [y/N]? ")
		term.typeIn("y\n")
		term.waitFor("Enter the USER PIN for slot 2: ")
		if term.echoOn() {
			t.Fatal("echo on at the PIN prompt")
		}
		term.typeIn("1234")
		term.typeIn("\x03")
		code, shown := term.wait()
		if code != 130 || strings.Contains(shown, "1234") {
			t.Fatalf("exit %d, want 130 (or PIN shown); terminal:\n%s", code, shown)
		}
		if !term.echoOn() {
			t.Fatal("echo not restored after ^C at the PIN prompt")
		}
		if ids := e.opIDs(); len(ids) != 0 {
			t.Fatalf("operation left behind: %v", ids)
		}
		if h := e.history(); len(h) != 0 {
			t.Fatalf("history after an aborted reencipher: %+v", h)
		}
	})
	t.Run("^C during the re-encipher pass", func(t *testing.T) {
		// Every HSM call of the pass takes 50ms, so the pass of 100 keys
		// lasts seconds; the interrupt cancels the sleeping call.
		e.latency(50 * time.Millisecond)
		defer e.latency(0)
		term := e.startOnTerminal(reencipher...)
		term.waitFor("Continue [y/N]? ")
		term.typeIn("y\n")
		term.waitFor("Enter the USER PIN for slot 2: ")
		term.typeIn(userPIN + "\n")
		term.waitFor("Re-enciphering, please wait...")
		term.typeIn("\x03")
		code, shown := term.wait()
		if code != 130 || !strings.Contains(shown, "Interrupted; the master key change is canceled.") ||
			!strings.Contains(shown, "master key change rolled back") {
			t.Fatalf("exit %d, want 130 and a rollback; terminal:\n%s", code, shown)
		}
		if !term.echoOn() || len(e.opIDs()) != 0 {
			t.Fatalf("echo %v, operations %v", term.echoOn(), e.opIDs())
		}
		h := e.history()
		if len(h) != 1 || h[0].Outcome != state.RolledBack {
			t.Fatalf("history = %+v, want one rolled-back entry", h)
		}
		if reenc, old := e.count(); reenc != 0 || old != 0 {
			t.Fatalf("after the rollback %d keys have REENC, %d OLD", reenc, old)
		}
	})
	var id string
	t.Run("reencipher to the end", func(t *testing.T) {
		term := e.startOnTerminal(reencipher...)
		term.waitFor("Continue [y/N]? ")
		term.typeIn("y\n")
		term.waitFor("Enter the USER PIN for slot 2: ")
		term.typeIn(userPIN + "\n")
		code, shown := term.wait()
		if code != 0 || len(e.opIDs()) != 1 {
			t.Fatalf("exit %d, operations %v; terminal:\n%s", code, e.opIDs(), shown)
		}
		id = e.opIDs()[0]
		if reenc, _ := e.count(); reenc != nKeys {
			t.Fatalf("%d of %d keys re-enciphered", reenc, nKeys)
		}
	})
	t.Run("SIGTERM at cancel's PIN prompt", func(t *testing.T) {
		if id == "" {
			t.Skip("no operation")
		}
		before := e.files()
		term := e.startOnTerminal("cancel", "-i", id)
		term.waitFor("Enter the USER PIN for slot 2: ")
		term.cmd.Process.Signal(syscall.SIGTERM)
		code, shown := term.wait()
		if code != 143 || !term.echoOn() {
			t.Fatalf("exit %d, want 143; echo %v; terminal:\n%s", code, term.echoOn(), shown)
		}
		after := e.files()
		if len(after) != len(before) || after["/"+id] != before["/"+id] {
			t.Fatalf("cancel interrupted before any change changed the operation files")
		}
		if reenc, _ := e.count(); reenc != nKeys {
			t.Fatalf("%d of %d keys keep REENC", reenc, nKeys)
		}
	})
}

// TestPromptsGoToTheTerminal: with standard output and standard error
// redirected to files, the warning about absent tokens, the question and
// the PIN prompt still reach the person at the terminal, and the files get
// neither them nor \r progress. With answers from a pipe and standard
// error on the terminal, progress is redrawn with \r there.
func TestPromptsGoToTheTerminal(t *testing.T) {
	e := newInterruptEnv(t, 10)
	p := e.loadNewAES()
	dir := t.TempDir()
	outFile, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	errFile, err := os.Create(filepath.Join(dir, "err"))
	if err != nil {
		t.Fatal(err)
	}
	term := e.startWith(func(*os.File) (io.Reader, *os.File, *os.File) { return nil, outFile, errFile },
		"reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	term.waitFor("WARNING: The following slots have no token present:")
	term.waitFor("Continue [y/N]? ")
	term.typeIn("y\n")
	term.waitFor("Enter the USER PIN for slot 2: ")
	term.typeIn(userPIN + "\n")
	code, shown := term.wait()
	stdout, _ := os.ReadFile(outFile.Name())
	stderr, _ := os.ReadFile(errFile.Name())
	if code != 0 || !strings.Contains(string(stdout), "created") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nterminal: %s", code, stdout, stderr, shown)
	}
	for _, prompt := range []string{"WARNING: The following slots", "Continue [y/N]?", "Enter the USER PIN"} {
		if strings.Contains(string(stderr), prompt) || strings.Contains(string(stdout), prompt) {
			t.Errorf("%q went to a redirected file, not the terminal", prompt)
		}
	}
	if strings.Contains(string(stderr), "\r") || strings.Contains(string(stderr), "key objects checked") || strings.Contains(shown, userPIN) {
		t.Errorf("progress in a file without --progress, or PIN shown:\nstderr %q\nterminal %q", stderr, shown)
	}

	// Cancel with the PIN from a pipe: progress on the terminal (stderr).
	id := e.opIDs()[0]
	term = e.startWith(func(*os.File) (io.Reader, *os.File, *os.File) { return strings.NewReader(userPIN + "\n"), nil, nil },
		"cancel", "-i", id)
	code, shown = term.wait()
	if code != 0 || !strings.Contains(shown, "\r10 of 10 key objects checked") {
		t.Fatalf("cancel: exit %d, terminal:\n%q", code, shown)
	}
}
