package testenv

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Dialog is a long-lived test program that answers each line written to
// its standard input with one line on its standard output (an application
// holding a token or the simulator open between the test's steps).
type Dialog struct {
	Cmd *exec.Cmd
	t   testing.TB
	in  io.WriteCloser
	out *bufio.Scanner

	once sync.Once
	err  error
}

// StartDialog starts cmd with pipes on its standard input and output (its
// standard error goes to the test's unless set). At cleanup its standard
// input is closed and it gets 30 seconds to exit before it is killed.
func StartDialog(t testing.TB, cmd *exec.Cmd) *Dialog {
	t.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	d := &Dialog{Cmd: cmd, t: t, in: in, out: sc}
	t.Cleanup(func() {
		kill := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
		defer kill.Stop()
		d.Close()
	})
	return d
}

// Send writes one line to the program.
func (d *Dialog) Send(line string) {
	d.t.Helper()
	if _, err := io.WriteString(d.in, line+"\n"); err != nil {
		d.t.Fatalf("%s: %v", d.Cmd.Path, err)
	}
}

// Ask writes one line and returns the program's answer line (without its
// end of line).
func (d *Dialog) Ask(line string) string {
	d.t.Helper()
	d.Send(line)
	if !d.out.Scan() {
		d.t.Fatalf("%s gave no answer to %q: %v", d.Cmd.Path, line, d.out.Err())
	}
	return strings.TrimSpace(d.out.Text())
}

// Close closes the program's standard input and waits for its exit: the
// error of exec.Cmd.Wait.
func (d *Dialog) Close() error {
	d.once.Do(func() {
		d.in.Close()
		d.err = d.Cmd.Wait()
	})
	return d.err
}
