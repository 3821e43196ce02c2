package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Terminal is a command running on a pseudo terminal, as at an operator's
// shell: the terminal is its controlling terminal (so ^C typed there is a
// SIGINT from the line discipline, and /dev/tty is the terminal) and, unless
// Stdio replaced them, its stdin, stdout and stderr.
type Terminal struct {
	t           testing.TB
	Master, TTY *os.File
	Cmd         *exec.Cmd

	mu     sync.Mutex
	shown  bytes.Buffer
	update chan struct{}
	p      *Process
}

// Terminal starts the command name with args on a new pseudo terminal.
func (r *Root) Terminal(name string, args ...string) *Terminal {
	return r.TerminalWith(nil, name, args...)
}

// TerminalWith is Terminal with some standard files replaced: stdio gets the
// terminal's slave side and sets cmd.Stdin, Stdout or Stderr as it likes
// (those it leaves nil are the terminal).
func (r *Root) TerminalWith(stdio func(tty *os.File, cmd *exec.Cmd), name string, args ...string) *Terminal {
	t := r.T
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("no pseudo terminal: %v", err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	term := &Terminal{t: t, Master: master, TTY: tty, update: make(chan struct{}, 1)}
	cmd := r.Cmd(name, args...)
	if stdio != nil {
		stdio(tty, cmd)
	}
	if cmd.Stdin == nil {
		cmd.Stdin = tty
	}
	if cmd.Stdout == nil {
		cmd.Stdout = tty
	}
	if cmd.Stderr == nil {
		cmd.Stderr = tty
	}
	// The terminal is also fd 3, which makes it the controlling terminal
	// whatever fds 0-2 are.
	cmd.ExtraFiles = []*os.File{tty}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 3}
	term.Cmd = cmd
	term.p = r.start(cmd)
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

// WaitFor waits until the terminal has shown want.
func (term *Terminal) WaitFor(want string) {
	term.t.Helper()
	deadline := time.After(time.Minute)
	for {
		got := term.Shown()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-term.update:
		case <-deadline:
			term.t.Fatalf("the terminal never showed %q; it shows:\n%s", want, got)
		}
	}
}

// Shown is everything the terminal has shown so far.
func (term *Terminal) Shown() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.shown.String()
}

// Type types s at the terminal.
func (term *Terminal) Type(s string) {
	term.t.Helper()
	if _, err := term.Master.Write([]byte(s)); err != nil {
		term.t.Fatal(err)
	}
}

// Wait waits for the command's exit and returns its code and everything the
// terminal showed.
func (term *Terminal) Wait() (int, string) {
	term.t.Helper()
	code := term.p.Wait()
	// The command is gone; a marker written now arrives after all it wrote.
	term.TTY.Write([]byte("<exited>"))
	term.WaitFor("<exited>")
	return code, strings.TrimSuffix(term.Shown(), "<exited>")
}

// EchoOn reports whether the terminal echoes what is typed.
func (term *Terminal) EchoOn() bool {
	tio, err := unix.IoctlGetTermios(int(term.TTY.Fd()), unix.TCGETS)
	if err != nil {
		term.t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

// Shell runs the bash script on a new pseudo terminal, with the built
// binaries first on PATH (a pipeline as the operator types it).
func (r *Root) Shell(script string) *Terminal {
	r.T.Helper()
	dir, err := BinDir()
	if err != nil {
		r.T.Fatal(err)
	}
	return r.TerminalWith(func(_ *os.File, cmd *exec.Cmd) {
		cmd.Path, cmd.Args = "/bin/bash", []string{"bash", "-c", script}
		cmd.Env = append(cmd.Env, "PATH="+dir+":"+os.Getenv("PATH"))
		cmd.Dir = r.T.TempDir()
	}, "pkcshsm")
}
