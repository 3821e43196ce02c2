package operator

import (
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestTokenInitRefusesTheLabelFirst (issue 19.9): a label the token cannot
// take (33 bytes, 33 bytes of UTF-8, a newline, only blanks) is refused
// before any PIN is asked, and the token stays uninitialized.
func TestTokenInitRefusesTheLabelFirst(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	for _, label := range []string{strings.Repeat("a", 33), strings.Repeat("é", 16) + "a", strings.Repeat("a", 31) + "\n", "   "} {
		term := r.Terminal("pkcshsm", "token", "init", "--slot", "2", "--label", label)
		code, shown := term.Wait()
		if code != 2 || strings.Contains(shown, "PIN") || !strings.Contains(shown, "hint:") {
			t.Errorf("label %q: exit %d:\n%s", label, code, shown)
		}
	}
	if res := r.Run("pkcshsm", testenv.PIN(testenv.SOPIN, testenv.SOPIN), "token", "init", "--slot", "2", "--label", "ok"); res.Code != 0 {
		t.Errorf("the first good label: exit %d\n%s", res.Code, res.Out())
	}
}
