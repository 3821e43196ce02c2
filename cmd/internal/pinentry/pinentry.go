// Package pinentry reads PINs and yes/no answers for the command line
// tools: from the terminal without echo, or line by line from standard
// input when it is not a terminal (scripts, tests). PINs never come from
// argv or the environment, and are never echoed or logged.
package pinentry

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Reader asks questions on out and reads answers from in.
type Reader struct {
	in  *bufio.Reader
	fd  int // terminal fd of in, or -1
	out io.Writer
}

// New returns a Reader over in and out. When in is a terminal, PINs are
// read without echo.
func New(in io.Reader, out io.Writer) *Reader {
	fd := -1
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd = int(f.Fd())
	}
	return &Reader{in: bufio.NewReader(in), fd: fd, out: out}
}

// Interactive reports whether answers come from a terminal.
func (r *Reader) Interactive() bool { return r.fd >= 0 }

// PIN prints prompt and reads a PIN. An empty PIN is asked again, up to
// three times. End of input is errclass.Aborted.
func (r *Reader) PIN(prompt string) ([]byte, error) {
	for range 3 {
		fmt.Fprint(r.out, prompt)
		pin, err := r.readSecret()
		if r.fd >= 0 {
			fmt.Fprintln(r.out)
		}
		if err != nil {
			return nil, err
		}
		if len(pin) > 0 {
			return pin, nil
		}
		fmt.Fprintln(r.out, "Empty pin entered, try again.")
	}
	return nil, errclass.New(errclass.Aborted, "no PIN entered")
}

func (r *Reader) readSecret() ([]byte, error) {
	if r.fd >= 0 {
		pin, err := term.ReadPassword(r.fd)
		if err != nil {
			return nil, errclass.New(errclass.Aborted, "aborted by user: %w", err)
		}
		return pin, nil
	}
	line, err := r.line()
	return []byte(line), err
}

// Confirm prints prompt and reports whether the answer starts with y or Y.
// End of input is errclass.Aborted.
func (r *Reader) Confirm(prompt string) (bool, error) {
	fmt.Fprint(r.out, prompt)
	ans, err := r.line()
	if err != nil {
		return false, err
	}
	ans = strings.TrimSpace(ans)
	return strings.HasPrefix(ans, "y") || strings.HasPrefix(ans, "Y"), nil
}

func (r *Reader) line() (string, error) {
	s, err := r.in.ReadString('\n')
	if errors.Is(err, io.EOF) && s == "" {
		return "", errclass.Newh(errclass.Aborted, "answer on standard input, one line per question",
			"aborted by user: end of input at the prompt")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return "", errclass.New(errclass.Aborted, "aborted: failed to read input: %w", err)
	}
	return strings.TrimRight(s, "\r\n"), nil
}
