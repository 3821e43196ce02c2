package operator

import (
	"os"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestUnknownIDOnAFreshRoot (issue 19.4): on a root where no operation was
// ever started, finalize, cancel and list -i refuse an unknown id as
// not found, with a hint, and create nothing; a malformed id is
// refused as such before anything is read.
func TestUnknownIDOnAFreshRoot(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	r.NoEvents()
	r.Token(2, 1)
	for _, args := range [][]string{{"finalize", "-i", "abcdef"}, {"cancel", "-i", "abcdef"}, {"list", "-i", "abcdef"}} {
		res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), args...)
		if res.Code != 3 || !strings.Contains(res.Stderr, "error: HSM master key change operation 'abcdef' not found") ||
			!strings.Contains(res.Stderr, "hint: ") || strings.Contains(res.Stderr, "lstat") {
			t.Errorf("%v: exit %d:\n%s", args, res.Code, res.Out())
		}
		if _, err := os.Lstat(r.Layout.MKChangeDir()); err == nil {
			t.Fatalf("%v created %s", args, r.Layout.MKChangeDir())
		}
	}
	for _, args := range [][]string{{"list", "-i", "abcde"}, {"finalize", "-i", "abcde"}} {
		res := r.Run("pkcshsm_mk_change", "", args...)
		if res.Code != 2 || !strings.Contains(res.Stderr, `invalid operation id "abcde": want 6 characters, got 5`) {
			t.Errorf("%v: exit %d:\n%s", args, res.Code, res.Out())
		}
	}
}
