package operator

import (
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// cca is a root with a CCA token of n keys in slot 2, no daemon, and a new
// AES master key loaded on both APQNs; it returns the new pattern.
func cca(t *testing.T, n int) (*testenv.Root, string) {
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	r.NoEvents()
	r.Token(2, n)
	return r, r.LoadNew(mkvp.CCAAES, 7, testenv.CCAAPQNs...)
}

// TestPromptAfterTheListThroughTee (issue 19.2): with `reencipher | tee`
// the terminal shows the affected tokens first, then the PIN prompt, the
// cursor right after it. A wrong PIN ends the command there.
func TestPromptAfterTheListThroughTee(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 5)
	for i := range 4 {
		term := r.Shell("set -o pipefail; pkcshsm_mk_change reencipher -a 01.0033,02.0033 -A " + aes + " | tee reenc.out")
		term.WaitFor("Enter the USER PIN for slot 2: ")
		shown := term.Shown()
		list := strings.Index(shown, "Slot 2: Label: cca")
		prompt := strings.Index(shown, "Enter the USER PIN for slot 2: ")
		if list < 0 || list > prompt || !strings.HasSuffix(shown, "Enter the USER PIN for slot 2: ") {
			t.Errorf("run %d: the prompt is not after the list of tokens, at the cursor:\n%q", i, shown)
		}
		term.Type("00000000\r")
		if code, shown := term.Wait(); code == 0 || !strings.Contains(shown, "error:") {
			t.Fatalf("run %d: a wrong PIN: exit %d:\n%s", i, code, shown)
		}
	}
}

// mkvpAES is the CCA AES master key type.
const mkvpAES = mkvp.CCAAES
