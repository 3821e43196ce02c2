package cli

import (
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/pkcshsm/pkcshsm/state"
)

// plural picks the singular or plural form for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// pastTense is what the passes of a command did to a slot's secure keys,
// for the per-slot summary: each line says what it means.
var pastTense = map[state.Action]string{
	state.ActReencipher: "re-enciphered under the new master key (the current blob stays in use until finalize)",
	state.ActFinalize:   "now use the new master key (the previous blob is kept as the backup)",
	state.ActCancel:     "keep their current blob (the blob under the new master key was dropped)",
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := unwrap(w).(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// indented is an error whose message continues on indented lines, so a
// joined error reads as a list under its summary.
type indented struct{ err error }

func (e indented) Error() string { return strings.ReplaceAll(e.err.Error(), "\n", "\n  ") }
func (e indented) Unwrap() error { return e.err }

// maxDrain bounds the wait in drain.
const maxDrain = 2 * time.Second

// drain waits until the reader of a pipe on w (tee, less) has read all
// that was written to it, so that a prompt written to the terminal next
// comes after that text on the screen (`reencipher ... | tee`): the list of
// tokens first, then "Enter the USER PIN", the cursor at the prompt. It
// returns at once when w is not a pipe, and after maxDrain at most (a
// reader that stopped reading).
func drain(w io.Writer) {
	f, ok := unwrap(w).(*os.File)
	if !ok {
		return
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		return
	}
	deadline := time.Now().Add(maxDrain)
	for {
		n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ) // FIONREAD: unread bytes in a pipe
		if err != nil || n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond) // polling a pipe another process reads
	}
	// The reader has the bytes; give it the moment it needs to write them
	// to the terminal before the prompt follows.
	time.Sleep(20 * time.Millisecond)
}

// unwrap returns the file under a clierr.Output.
func unwrap(w io.Writer) io.Writer {
	if u, ok := w.(interface{ Unwrap() io.Writer }); ok {
		return u.Unwrap()
	}
	return w
}
