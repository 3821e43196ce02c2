package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/state"
)

// newInterruptEnv is a temporary root with a CCA token (slot 2) holding n
// public AES keys, and a slot 3 whose token is not initialized, so that
// reencipher asks "Continue [y/N]?" before the PIN.
func newInterruptEnv(t *testing.T, n int) *crashEnv {
	r := testenv.NewRoot(t, testenv.CCA(2), testenv.Slot{ID: 3, Type: "cca", Label: "spare"})
	r.NoEvents()
	r.Token(2, n)
	return &crashEnv{t: t, layout: r.Layout, hsm: r.Sim(), root: r}
}

// terminal runs the tool on a pseudo terminal (testenv.Terminal).
type terminal = testenv.Terminal

func (e *crashEnv) startOnTerminal(args ...string) *terminal {
	return e.root.Terminal("pkcshsm_mk_change", args...)
}

// startWith is startOnTerminal with some of the standard files replaced:
// stdio returns stdin, stdout and stderr (nil: the terminal).
func (e *crashEnv) startWith(stdio func(tty *os.File) (in io.Reader, out, errw *os.File), args ...string) *terminal {
	return e.root.TerminalWith(func(tty *os.File, cmd *exec.Cmd) {
		in, out, errw := stdio(tty)
		if in != nil {
			cmd.Stdin = in
		}
		if out != nil {
			cmd.Stdout = out
		}
		if errw != nil {
			cmd.Stderr = errw
		}
	}, "pkcshsm_mk_change", args...)
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
		term.WaitFor("Continue [y/N]? ")
		term.Type("\x03")
		code, shown := term.Wait()
		if code != 130 || !strings.Contains(shown, "interrupted") {
			t.Fatalf("exit %d, want 130; terminal:\n%s", code, shown)
		}
		if !term.EchoOn() || len(e.opIDs()) != 0 || len(e.history()) != 0 {
			t.Fatalf("echo %v, operations %v, history %v", term.EchoOn(), e.opIDs(), e.history())
		}
	})
	t.Run("^C at the PIN prompt", func(t *testing.T) {
		term := e.startOnTerminal(reencipher...)
		term.WaitFor("Continue [y/N]? ")
		term.Type("y\n")
		term.WaitFor("Enter the USER PIN for slot 2: ")
		if term.EchoOn() {
			t.Fatal("echo on at the PIN prompt")
		}
		term.Type("1234")
		term.Type("\x03")
		code, shown := term.Wait()
		if code != 130 || strings.Contains(shown, "1234") {
			t.Fatalf("exit %d, want 130 (or PIN shown); terminal:\n%s", code, shown)
		}
		if !term.EchoOn() {
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
		term.WaitFor("Continue [y/N]? ")
		term.Type("y\n")
		term.WaitFor("Enter the USER PIN for slot 2: ")
		term.Type(userPIN + "\n")
		term.WaitFor("Re-enciphering, please wait...")
		term.Type("\x03")
		code, shown := term.Wait()
		if code != 130 || !strings.Contains(shown, "Interrupted; the master key change is canceled.") ||
			!strings.Contains(shown, "master key change rolled back") {
			t.Fatalf("exit %d, want 130 and a rollback; terminal:\n%s", code, shown)
		}
		if !term.EchoOn() || len(e.opIDs()) != 0 {
			t.Fatalf("echo %v, operations %v", term.EchoOn(), e.opIDs())
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
		term.WaitFor("Continue [y/N]? ")
		term.Type("y\n")
		term.WaitFor("Enter the USER PIN for slot 2: ")
		term.Type(userPIN + "\n")
		code, shown := term.Wait()
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
		term.WaitFor("Enter the USER PIN for slot 2: ")
		term.Cmd.Process.Signal(syscall.SIGTERM)
		code, shown := term.Wait()
		if code != 143 || !term.EchoOn() {
			t.Fatalf("exit %d, want 143; echo %v; terminal:\n%s", code, term.EchoOn(), shown)
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
	term.WaitFor("WARNING: The following slots have no token present:")
	term.WaitFor("Continue [y/N]? ")
	term.Type("y\n")
	term.WaitFor("Enter the USER PIN for slot 2: ")
	term.Type(userPIN + "\n")
	code, shown := term.Wait()
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
	code, shown = term.Wait()
	if code != 0 || !strings.Contains(shown, "\r10 of 10 key objects checked") {
		t.Fatalf("cancel: exit %d, terminal:\n%q", code, shown)
	}
}
