package cli

import (
	"io"
	"os"
	"strings"

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

// pastTense is what a pass did to a key, for the per-slot summary.
var pastTense = map[state.Action]string{
	state.ActReencipher: "re-enciphered", state.ActFinalize: "finalized", state.ActCancel: "restored (new blob dropped)",
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// indented is an error whose message continues on indented lines, so a
// joined error reads as a list under its summary.
type indented struct{ err error }

func (e indented) Error() string { return strings.ReplaceAll(e.err.Error(), "\n", "\n  ") }
func (e indented) Unwrap() error { return e.err }
