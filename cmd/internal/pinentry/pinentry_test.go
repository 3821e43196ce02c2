package pinentry

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestPIN(t *testing.T) {
	var out bytes.Buffer
	r := New(strings.NewReader("\n1234\r\n"), &out)
	if r.Interactive() {
		t.Fatal("a string reader is not a terminal")
	}
	pin, err := r.PIN("Enter the USER PIN for slot 4: ")
	if err != nil || string(pin) != "1234" {
		t.Fatalf("PIN = %q, %v", pin, err)
	}
	if got := out.String(); got != "Enter the USER PIN for slot 4: Empty pin entered, try again.\nEnter the USER PIN for slot 4: " {
		t.Fatalf("prompts = %q", got)
	}
	if strings.Contains(out.String(), "1234") {
		t.Fatal("PIN echoed")
	}
	if _, err := r.PIN("again: "); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("EOF: %v", err)
	}
	if _, err := New(strings.NewReader("\n\n\n"), &out).PIN("p: "); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("three empty PINs: %v", err)
	}
	// The last line need not end in a newline.
	if pin, err := New(strings.NewReader("99"), &out).PIN("p: "); err != nil || string(pin) != "99" {
		t.Fatalf("unterminated line: %q %v", pin, err)
	}
	if _, err := New(strings.NewReader(strings.Repeat("7", maxLine+1)), &out).PIN("p: "); errclass.Of(err) != errclass.InvalidArgument {
		t.Fatalf("overlong line: %v", err)
	}
	if _, err := New(iotest.ErrReader(errors.New("EIO")), &out).PIN("p: "); errclass.Of(err) != errclass.Aborted || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("read error: %v", err)
	}
}

func TestConfirm(t *testing.T) {
	cases := map[string]bool{"y\n": true, "yes\n": true, "Y\n": true, " y\n": true, "n\n": false, "\n": false, "sure\n": false}
	for in, want := range cases {
		got, err := New(strings.NewReader(in), &bytes.Buffer{}).Confirm("Continue [y/N]? ")
		if err != nil || got != want {
			t.Errorf("Confirm(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := New(strings.NewReader(""), &bytes.Buffer{}).Confirm("?"); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("EOF: %v", err)
	}
	if _, err := New(nil, &bytes.Buffer{}).Confirm("?"); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("no input: %v", err)
	}
}

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool { return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) }

// TestLineBufferWiped reads PINs from a pipe-like input that delivers two
// lines in one read: the Reader's own buffer must not keep any byte of a
// PIN once it has been handed out, and the read-ahead PIN is wiped once
// consumed.
func TestLineBufferWiped(t *testing.T) {
	r := New(strings.NewReader("31415926\n27182818\n"), io.Discard)
	p1, err := r.PIN("p: ")
	if err != nil || string(p1) != "31415926" {
		t.Fatalf("first PIN %q %v", p1, err)
	}
	if bytes.Contains(r.lines.buf, []byte("31415926")) || bytes.Contains(r.lines.buf, []byte("3141")) {
		t.Fatalf("first PIN still in the line buffer: %q", r.lines.buf[:r.lines.end])
	}
	if !bytes.Contains(r.lines.buf, []byte("27182818")) {
		t.Fatal("test premise: the second line is read ahead into the buffer")
	}
	p2, err := r.PIN("p: ")
	if err != nil || string(p2) != "27182818" {
		t.Fatalf("second PIN %q %v", p2, err)
	}
	if !allZero(r.lines.buf) {
		t.Fatalf("line buffer not wiped: %q", r.lines.buf[:32])
	}
	// One byte at a time (compaction path), with \r\n.
	r = New(iotest.OneByteReader(strings.NewReader("secret9\r\nx")), io.Discard)
	p, err := r.PIN("p: ")
	if err != nil || string(p) != "secret9" {
		t.Fatalf("PIN %q %v", p, err)
	}
	if bytes.Contains(r.lines.buf, []byte("secret")) {
		t.Fatalf("PIN left in buffer: %q", r.lines.buf[:16])
	}
}

// TestNewPINWipesBothCopies checks every path of new-PIN entry: the
// slices that held a PIN are zero afterwards, except the one returned.
func TestNewPINWipesBothCopies(t *testing.T) {
	cases := []struct {
		name, in string
		class    errclass.Class
	}{
		{"mismatch", "11111111\n22222222\n", errclass.InvalidArgument},
		{"read error on the second", "11111111\n", errclass.Aborted},
		{"match", "33333333\n33333333\n", errclass.Unknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := New(strings.NewReader(c.in), io.Discard)
			var held [][]byte
			r.seen = func(b []byte) { held = append(held, b) }
			pin, err := r.NewPIN("USER PIN")
			if c.class == errclass.Unknown {
				if err != nil || string(pin) != "33333333" {
					t.Fatalf("NewPIN = %q, %v", pin, err)
				}
				if len(held) != 2 || !allZero(held[1]) || &held[0][0] != &pin[0] {
					t.Fatalf("second copy not wiped or first not returned: %q", held)
				}
				return
			}
			if errclass.Of(err) != c.class || pin != nil {
				t.Fatalf("NewPIN = %q, %v; want class %v", pin, err, c.class)
			}
			if len(held) == 0 {
				t.Fatal("no PIN was read")
			}
			for i, b := range held {
				if !allZero(b) {
					t.Errorf("copy %d not wiped: %q", i, b)
				}
			}
			if !allZero(r.lines.buf) {
				t.Errorf("line buffer not wiped")
			}
		})
	}
}

func TestInterruptPipe(t *testing.T) {
	pr, pw := io.Pipe()
	intr := make(chan struct{})
	r := NewWith(pr, io.Discard, Options{Interrupt: intr})
	done := make(chan error, 1)
	go func() {
		_, err := r.PIN("p: ")
		done <- err
	}()
	close(intr)
	if err := <-done; !errors.Is(err, ErrInterrupted) || errclass.Of(err) != errclass.Aborted {
		t.Fatalf("interrupted read: %v", err)
	}
	// The abandoned read may still complete; the Reader stays closed.
	go pw.Write([]byte("late\n"))
	if _, err := r.Confirm("?"); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("read after interrupt: %v", err)
	}
}

// openPTY returns a pseudo terminal; the test reads what the "terminal"
// shows from master.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo terminal: %v", err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	return master, tty
}

func echoOn(t *testing.T, tty *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ECHO != 0
}

// readUntil reads master until it has shown want.
func readUntil(t *testing.T, master *os.File, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 256)
	for !bytes.Contains(got, []byte(want)) {
		n, err := master.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("terminal shows %q, waiting for %q: %v", got, want, err)
		}
	}
	return string(got)
}

func TestTerminalNoEchoAndInterrupt(t *testing.T) {
	master, tty := openPTY(t)
	if !echoOn(t, tty) {
		t.Fatal("test premise: a new pty echoes")
	}
	intr := make(chan struct{})
	var stderr bytes.Buffer
	r := NewWith(tty, &stderr, Options{Interrupt: intr, TTY: tty.Name()})
	if !r.Interactive() {
		t.Fatal("a pty is a terminal")
	}
	type res struct {
		pin []byte
		err error
	}
	done := make(chan res, 1)
	go func() { p, err := r.PIN("Enter the USER PIN: "); done <- res{p, err} }()
	readUntil(t, master, "Enter the USER PIN: ")
	if echoOn(t, tty) {
		t.Fatal("echo on while the PIN is read")
	}
	master.Write([]byte("24682468\n"))
	got := <-done
	if got.err != nil || string(got.pin) != "24682468" {
		t.Fatalf("PIN = %q, %v", got.pin, got.err)
	}
	if !echoOn(t, tty) {
		t.Fatal("echo not restored after the PIN")
	}
	// Everything the terminal showed up to a marker written after the PIN.
	tty.Write([]byte("<end>"))
	shown := readUntil(t, master, "<end>")
	if strings.Contains(shown, "2468") || stderr.Len() != 0 {
		t.Fatalf("PIN echoed (%q) or prompt on stderr (%q)", shown, stderr.String())
	}

	// An interrupt at the prompt restores the echo at once.
	go func() { p, err := r.PIN("Enter the USER PIN: "); done <- res{p, err} }()
	readUntil(t, master, "Enter the USER PIN: ")
	if echoOn(t, tty) {
		t.Fatal("echo on while the PIN is read")
	}
	close(intr)
	got = <-done
	if !errors.Is(got.err, ErrInterrupted) {
		t.Fatalf("interrupted PIN: %q %v", got.pin, got.err)
	}
	if !echoOn(t, tty) {
		t.Fatal("echo not restored after an interrupt")
	}
}
