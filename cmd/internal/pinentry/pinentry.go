// Package pinentry reads PINs and yes/no answers for the command line
// tools: from the terminal without echo, or line by line from standard
// input when it is not a terminal (scripts, tests). PINs never come from
// argv or the environment, and are never echoed or logged.
//
// # Where prompts go
//
// When the answers come from a terminal, the prompts (and the warnings
// that lead to a question, see [Reader.Prompts]) are written to the
// controlling terminal (/dev/tty), so the person typing sees them even when
// standard output and standard error are redirected to files. When the
// answers come from a pipe or a file, the prompts go to the writer given to
// [New] (standard error), so a script can keep or drop them.
//
// # PINs in memory
//
// A PIN is only ever held in byte slices that this package or its caller
// zeroes after use, never in a string: the terminal is read into a fixed
// buffer that is wiped after each line, and standard input goes through a
// line buffer owned by the Reader whose consumed bytes are wiped as each
// line is handed out. [Reader.NewPIN] wipes both copies of a new PIN on
// every path, also on a mismatch or a read error.
//
// # Interrupts
//
// A Reader given an interrupt channel (closed on SIGINT or SIGTERM) returns
// [ErrInterrupted] from a pending read at once and restores the terminal's
// echo before it does.
package pinentry

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// maxLine bounds one line of input (a PIN or an answer).
const maxLine = 4096

// ErrInterrupted is returned by a read that an interrupt ended. Its class
// is errclass.Aborted.
var ErrInterrupted = errclass.Newh(errclass.Aborted, "the question was not answered; run the command again when ready", "interrupted")

// Options configure a Reader.
type Options struct {
	// Interrupt, when closed, ends a pending read with ErrInterrupted.
	Interrupt <-chan struct{}
	// TTY is the controlling terminal prompts go to when the answers come
	// from a terminal; default /dev/tty.
	TTY string
}

// Reader asks questions and reads answers.
type Reader struct {
	fd        int // terminal fd of the input, or -1
	prompts   io.Writer
	interrupt <-chan struct{}

	mu     sync.Mutex // serializes reads; held across one question
	lines  *lineReader
	broken error // set once a read was abandoned (interrupt)

	// seen, when set (tests), is called with every slice that held a PIN
	// before it is handed out, so a test can check it was wiped.
	seen func([]byte)
}

// New returns a Reader over in that writes prompts to out (or the terminal,
// see the package documentation).
func New(in io.Reader, out io.Writer) *Reader { return NewWith(in, out, Options{}) }

// NewWith is New with options.
func NewWith(in io.Reader, out io.Writer, o Options) *Reader {
	r := &Reader{fd: -1, prompts: out, interrupt: o.Interrupt, lines: &lineReader{r: in, buf: make([]byte, maxLine)}}
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.fd = int(f.Fd())
		tty := o.TTY
		if tty == "" {
			tty = "/dev/tty"
		}
		if t, err := os.OpenFile(tty, os.O_WRONLY, 0); err == nil {
			r.prompts = t
		}
	}
	if r.prompts == nil {
		r.prompts = io.Discard
	}
	return r
}

// Interactive reports whether answers come from a terminal.
func (r *Reader) Interactive() bool { return r.fd >= 0 }

// Prompts is where questions, and the warnings that lead to them, are
// written.
func (r *Reader) Prompts() io.Writer { return r.prompts }

// ErrEndOfInput is wrapped by the error of a prompt that met the end of
// its input (class Aborted).
var ErrEndOfInput = errors.New("end of input at the prompt")

// PIN prints prompt and reads a PIN. An empty PIN is asked again, up to
// three times. End of input is errclass.Aborted. The caller clears the
// returned slice after use.
func (r *Reader) PIN(prompt string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range 3 {
		pin, err := r.readSecret(prompt)
		if r.fd >= 0 {
			fmt.Fprintln(r.prompts)
		}
		if err != nil {
			return nil, err
		}
		if len(pin) > 0 {
			return pin, nil
		}
		fmt.Fprintln(r.prompts, "Empty pin entered, try again.")
	}
	return nil, errclass.New(errclass.Aborted, "no PIN entered")
}

// NewPIN asks for a new PIN twice ("Enter the new <what>: ", "Re-enter the
// new <what>: ") and returns it when both agree. Both copies are wiped on
// every path but the returned one, which the caller clears.
func (r *Reader) NewPIN(what string) ([]byte, error) {
	p1, err := r.PIN("Enter the new " + what + ": ")
	if err != nil {
		return nil, err
	}
	p2, err := r.PIN("Re-enter the new " + what + ": ")
	if err != nil {
		clear(p1)
		return nil, err
	}
	same := subtle.ConstantTimeCompare(p1, p2) == 1
	clear(p2)
	if !same {
		clear(p1)
		return nil, errclass.Newh(errclass.InvalidArgument, "type the same PIN twice", "the new %ss do not match", what)
	}
	return p1, nil
}

// Confirm prints prompt and reports whether the answer starts with y or Y.
// End of input is errclass.Aborted.
func (r *Reader) Confirm(prompt string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprint(r.prompts, prompt)
	ans, err := r.await(r.lines.line)
	if err != nil {
		if r.fd >= 0 {
			// The terminal's cursor is after the question (and the
			// ^C it echoed): what follows starts on a line of its own.
			fmt.Fprintln(r.prompts)
		}
		return false, err
	}
	s := strings.TrimSpace(string(ans))
	return strings.HasPrefix(s, "y") || strings.HasPrefix(s, "Y"), nil
}

// readSecret prints prompt and reads a PIN. On a terminal the echo is off
// before the prompt appears, so nothing typed after it is shown.
func (r *Reader) readSecret(prompt string) ([]byte, error) {
	if r.fd < 0 {
		fmt.Fprint(r.prompts, prompt)
		pin, err := r.await(r.lines.line)
		if pin != nil && r.seen != nil {
			r.seen(pin)
		}
		return pin, err
	}
	old, err := unix.IoctlGetTermios(r.fd, unix.TCGETS)
	if err != nil {
		return nil, errclass.New(errclass.Aborted, "aborted: failed to read the terminal settings: %w", err)
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(r.fd, unix.TCSETS, &noEcho); err != nil {
		return nil, errclass.New(errclass.Aborted, "aborted: failed to turn off the terminal's echo: %w", err)
	}
	// Echo is restored here on every path, also when an interrupt
	// abandons the read below.
	defer unix.IoctlSetTermios(r.fd, unix.TCSETS, old)
	fmt.Fprint(r.prompts, prompt)
	fd := r.fd
	pin, err := r.await(func() ([]byte, error) { return readTerminalLine(fd) })
	if pin != nil && r.seen != nil {
		r.seen(pin)
	}
	return pin, err
}

// await runs read, returning early with ErrInterrupted on an interrupt.
// An abandoned read keeps running; whatever it returns later is wiped, and
// the Reader refuses further reads.
func (r *Reader) await(read func() ([]byte, error)) ([]byte, error) {
	if r.broken != nil {
		return nil, r.broken
	}
	if r.interrupt == nil {
		return read()
	}
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := read()
		ch <- result{b, err}
	}()
	select {
	case res := <-ch:
		return res.b, res.err
	case <-r.interrupt:
		r.broken = ErrInterrupted
		go func() { clear((<-ch).b) }()
		return nil, ErrInterrupted
	}
}

// readTerminalLine reads one line from a terminal in canonical mode into a
// fixed buffer, copies it out and wipes the buffer.
func readTerminalLine(fd int) ([]byte, error) {
	var buf [maxLine]byte
	defer clear(buf[:])
	n := 0
	for {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, errclass.New(errclass.Aborted, "aborted: failed to read the terminal: %w", err)
		}
		if m == 0 {
			if n == 0 {
				return nil, errclass.Newh(errclass.Aborted, "answer at the prompt", "aborted by user: %w", ErrEndOfInput)
			}
			break
		}
		n += m
		if buf[n-1] == '\n' {
			n--
			break
		}
		if n == len(buf) {
			return nil, errclass.New(errclass.InvalidArgument, "input line longer than %d bytes", maxLine)
		}
	}
	if n > 0 && buf[n-1] == '\r' {
		n--
	}
	out := make([]byte, n)
	copy(out, buf[:n])
	return out, nil
}

// lineReader hands out lines of r as fresh slices. Its buffer is its own:
// every byte of a line is wiped from it as the line is handed out, and
// whatever was read ahead is wiped when it is consumed.
type lineReader struct {
	r        io.Reader
	buf      []byte
	off, end int // unconsumed bytes are buf[off:end]
	err      error
}

func (l *lineReader) line() ([]byte, error) {
	if l.r == nil {
		return nil, errclass.Newh(errclass.Aborted, "answer on standard input, one line per question",
			"aborted by user: no input")
	}
	for {
		if i := bytes.IndexByte(l.buf[l.off:l.end], '\n'); i >= 0 {
			return l.take(i, i+1), nil
		}
		if l.err != nil {
			if l.off < l.end {
				n := l.end - l.off
				return l.take(n, n), nil
			}
			if errors.Is(l.err, io.EOF) {
				return nil, errclass.Newh(errclass.Aborted, "answer on standard input, one line per question",
					"aborted by user: %w", ErrEndOfInput)
			}
			return nil, errclass.New(errclass.Aborted, "aborted: failed to read input: %w", l.err)
		}
		if l.off > 0 {
			n := copy(l.buf, l.buf[l.off:l.end])
			clear(l.buf[n:l.end])
			l.off, l.end = 0, n
		}
		if l.end == len(l.buf) {
			clear(l.buf)
			l.off, l.end = 0, 0
			l.err = errclass.New(errclass.InvalidArgument, "input line longer than %d bytes", maxLine)
			return nil, l.err
		}
		m, err := l.r.Read(l.buf[l.end:])
		l.end += m
		if err != nil {
			l.err = err
		}
	}
}

// take hands out the next n bytes (without a trailing \r) and consumes and
// wipes skip bytes.
func (l *lineReader) take(n, skip int) []byte {
	b := l.buf[l.off : l.off+n]
	if len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	out := make([]byte, len(b))
	copy(out, b)
	clear(l.buf[l.off : l.off+skip])
	l.off += skip
	return out
}
