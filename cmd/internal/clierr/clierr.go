// Package clierr turns errors into what the pkcshsm command line tools
// print and return: "<prog>: error: ..." and "<prog>: hint: ..." lines on
// standard error, and an exit code chosen by the error's class.
//
// # Exit codes
//
// Every pkcshsm tool uses the same codes, documented in its man page:
//
//	0   success
//	1   internal or unclassified error
//	2   invalid argument (bad option, APQN, pattern, id ...)
//	3   not found (operation, slot, key)
//	4   failed precondition (wrong register or operation state)
//	5   conflict (an intersecting operation is active)
//	6   unavailable (daemon not running, APQN offline)
//	7   permission denied (wrong PIN, not an administrator)
//	8   data loss (corrupt state or store)
//	9   aborted (answered no, end of input at a prompt, rolled back)
//	10  deadline exceeded (a process or lock did not answer in time)
package clierr

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

var codes = map[errclass.Class]int{
	errclass.Unknown:            1,
	errclass.Internal:           1,
	errclass.InvalidArgument:    2,
	errclass.NotFound:           3,
	errclass.FailedPrecondition: 4,
	errclass.Conflict:           5,
	errclass.Unavailable:        6,
	errclass.PermissionDenied:   7,
	errclass.DataLoss:           8,
	errclass.Aborted:            9,
	errclass.DeadlineExceeded:   10,
}

// ExitCode returns the exit code for err (0 for nil).
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	if c, ok := codes[errclass.Of(err)]; ok {
		return c
	}
	return 1
}

// Print writes err as "<prog>: error: ..." and its hint, if any, as
// "<prog>: hint: ...".
func Print(w io.Writer, prog string, err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(w, "%s: error: %v\n", prog, err)
	if h := errclass.Hint(err); h != "" {
		fmt.Fprintf(w, "%s: hint: %s\n", prog, h)
	}
}

// Warn writes "<prog>: warning: ..." to w.
func Warn(w io.Writer, prog, format string, args ...any) {
	fmt.Fprintf(w, "%s: warning: %s\n", prog, fmt.Sprintf(format, args...))
}

// Output is standard output that remembers its first write error, so a
// command whose output was lost (a full disk, a closed descriptor, a
// reader gone) does not exit 0 as if the operator had seen it.
type Output struct {
	w   io.Writer
	err error
}

// NewOutput wraps w.
func NewOutput(w io.Writer) *Output { return &Output{w: w} }

// Write writes to the wrapped writer; after the first error it writes
// nothing more and returns that error.
func (o *Output) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	n, err := o.w.Write(p)
	if err != nil {
		o.err = err
	}
	return n, err
}

// Unwrap returns the wrapped writer (to ask whether it is a terminal or a
// pipe).
func (o *Output) Unwrap() io.Writer { return o.w }

// Err is the error of the first failed write, as the error a command
// returns: "failed to write to standard output: ..." with a hint.
func (o *Output) Err() error {
	if o == nil || o.err == nil {
		return nil
	}
	return errclass.Newh(errclass.Internal, "give standard output a file system with space, a terminal or a reader that stays, and run the command again",
		"failed to write to standard output: %v", o.err)
}

// OutputErr is w's Err when w is an Output, else nil.
func OutputErr(w io.Writer) error {
	if o, ok := w.(*Output); ok {
		return o.Err()
	}
	return nil
}

// errClosed is the write error of a standard output closed at start.
var errClosed = errors.New("standard output is closed (>&-)")

type closedWriter struct{}

func (closedWriter) Write([]byte) (int, error) { return 0, errClosed }

// Stdout is os.Stdout, unless descriptor 1 was closed when the program
// started (`cmd >&-`): then it is a writer that fails every write with
// "standard output is closed". The Go runtime puts /dev/null, opened
// read-write, on a standard descriptor found closed at start (so no file
// opened later becomes descriptor 1; runtime/fds_unix.go, checkfds); a
// shell's >/dev/null opens it write-only. So /dev/null open read-write on
// descriptor 1 is taken as "closed".
func Stdout() io.Writer {
	fl, err := unix.FcntlInt(1, unix.F_GETFL, 0)
	if err != nil {
		return closedWriter{}
	}
	var st, null unix.Stat_t
	if fl&unix.O_ACCMODE == unix.O_RDWR && unix.Fstat(1, &st) == nil && unix.Stat("/dev/null", &null) == nil &&
		st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == null.Rdev {
		return closedWriter{}
	}
	return os.Stdout
}
