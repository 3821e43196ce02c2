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
	"fmt"
	"io"

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
