package command

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/errclass"
)

// TestManPageExitCodes keeps man/hsmsim.1 in line with the exit codes Main
// returns: each class's code is documented with the class's name.
func TestManPageExitCodes(t *testing.T) {
	raw, err := os.ReadFile("../../../man/hsmsim.1")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(raw), ".SH EXIT STATUS\n")
	if !ok {
		t.Fatal("no EXIT STATUS section")
	}
	sec, _, _ = strings.Cut(sec, ".SH ")
	doc := map[int]string{}
	lines := strings.Split(sec, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if n, ok := strings.CutPrefix(lines[i], ".B "); ok {
			if code, err := strconv.Atoi(n); err == nil {
				doc[code] = strings.ToLower(lines[i+1])
			}
		}
	}
	for _, c := range errclass.Classes() {
		code := clierr.ExitCode(errclass.New(c, "x"))
		name := c.String()
		if c == errclass.Unknown {
			name = "unclassified"
		}
		if !strings.Contains(doc[code], name) {
			t.Errorf("class %s exits %d, the man page says %q", c, code, doc[code])
		}
	}
	if !strings.HasPrefix(doc[0], "success") {
		t.Errorf("exit 0 documented as %q", doc[0])
	}
	// Every subcommand is in the synopsis.
	for _, c := range NewRootCommand(nil, nil, nil).Commands() {
		if c.Hidden || c.Name() == "help" {
			continue
		}
		if !strings.Contains(string(raw), ".B hsmsim "+strings.ReplaceAll(c.Name(), "-", "\\-")) {
			t.Errorf("the man page synopsis lacks the %s command", c.Name())
		}
	}
}
