package pkcshsm

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDocsStandAlone: the README and the architecture page point to
// nothing outside the repository, and every file or directory they name
// exists in it.
func TestDocsStandAlone(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#]+)`)
	code := regexp.MustCompile("`([^` ]+)`")
	pathLike := regexp.MustCompile(`^[\w.-]+(/[\w.*|-]*)*$`)
	for _, doc := range []string{"README.md", "docs/ARCHITECTURE.md"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		text := string(raw)
		if strings.Contains(text, "../") || strings.Contains(text, "shared/design") {
			t.Errorf("%s points outside the repository", doc)
		}
		base := ""
		if strings.Contains(doc, "/") {
			base = doc[:strings.LastIndex(doc, "/")+1]
		}
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			if strings.Contains(m[1], "://") {
				continue
			}
			if _, err := os.Stat(base + m[1]); err != nil {
				t.Errorf("%s links to %s, which does not exist", doc, m[1])
			}
		}
		// Backticked paths with a slash or a file suffix (scripts/test.sh,
		// man/, cmd/pkcshsm_mk_change/cli/complete.go) must exist.
		for _, m := range code.FindAllStringSubmatch(text, -1) {
			p := m[1]
			if !pathLike.MatchString(p) || strings.ContainsAny(p, "*|") || strings.HasPrefix(p, "/") {
				continue
			}
			if !strings.Contains(p, "/") && !regexp.MustCompile(`\.(go|sh|md)$`).MatchString(p) {
				continue
			}
			if strings.HasPrefix(p, "HSM_MK_CHANGE") || strings.HasPrefix(p, "var/") || strings.HasPrefix(p, "run/") || strings.HasPrefix(p, "etc/") {
				continue // paths under PKCSHSM_ROOT, not in the tree
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s names %s, which is not in the repository", doc, p)
			}
		}
	}
}
