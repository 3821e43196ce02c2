package operator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStrayEntriesHintAsTheManPage (issue 19.7): entries under an
// operation's names that are not regular files (here a directory and a
// symlink) get the man page's advice: remove them (then restore the
// operation file), not only "restore from a backup".
func TestStrayEntriesHintAsTheManPage(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 2)
	id := reencipher(t, r, aes)
	dir := r.Layout.MKChangeDir()
	main, cp := filepath.Join(dir, id), filepath.Join(dir, id+".copy")
	for _, err := range []error{os.Remove(main), os.Mkdir(main, 0o755), os.Remove(cp), os.Symlink("/etc/passwd", cp)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"list"}, {"list", "-i", id}} {
		res := r.Run("pkcshsm_mk_change", "", args...)
		want := "hint: remove a directory " + main + " and a symlink " + cp + " (pkcshsm_mk_change only writes regular files there), then restore"
		if res.Code != 8 || !strings.Contains(res.Stderr, want) {
			t.Errorf("%v: exit %d\n%s", args, res.Code, res.Out())
		}
	}
}
