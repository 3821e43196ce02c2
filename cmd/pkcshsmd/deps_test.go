package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/pkcshsm/pkcshsm"

// TestImportRules enforces the package boundaries: the daemon never links
// the token library or the HSM layer, and the runtime packages use only the
// protocol and the leaf packages.
func TestImportRules(t *testing.T) {
	leaves := []string{"errclass", "paths", "failpoint", "apqn", "mkvp", "runtime/event"}
	tests := []struct {
		pkg     string
		allowed []string
	}{
		// cmd/internal/verbose: the -v/--verbose levels every tool shares.
		{".", append([]string{"cmd/pkcshsmd", "cmd/pkcshsmd/internal/daemoncmd", "cmd/internal/verbose", "runtime/slotd"}, leaves...)},
		{"../../runtime/slotd", append([]string{"runtime/slotd"}, leaves...)},
		{"../../runtime/agent", append([]string{"runtime/agent"}, leaves...)},
		{"../../runtime/admin", append([]string{"runtime/admin"}, leaves...)},
		{"../../runtime/event", []string{"runtime/event", "errclass"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", tt.pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			seen := 0
			for _, dep := range strings.Fields(string(out)) {
				rest, ok := strings.CutPrefix(dep, module+"/")
				if !ok {
					continue
				}
				seen++
				if !slices.Contains(tt.allowed, rest) {
					t.Errorf("%s depends on %s", tt.pkg, dep)
				}
			}
			if seen == 0 {
				t.Errorf("no module packages listed for %s: the check checks nothing", tt.pkg)
			}
		})
	}
}
