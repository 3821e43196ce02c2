package ck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runGen runs gen.go on header and returns its output file's content.
func runGen(t *testing.T, header string) (string, error) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out := filepath.Join(t.TempDir(), "z.go")
	msg, err := exec.Command(goTool, "run", "gen.go", "-header", header, "-o", out).CombinedOutput()
	if err != nil {
		return string(msg), err
	}
	data, err := os.ReadFile(out)
	return string(data), err
}

func TestGeneratorForms(t *testing.T) {
	src, err := runGen(t, filepath.Join("testdata", "mini.h"))
	if err != nil {
		t.Fatalf("gen: %v\n%s", err, src)
	}
	for _, want := range []string{
		"CK_TRUE                    uint      = 0x00000001",
		"CK_UNAVAILABLE_INFORMATION uint      = ^uint(0)",
		"CKA_TEMPLATE Attribute = 0x40000211",
		"CKA_ALIAS    Attribute = 0x00000180",
		// The name table prints the literal, non-deprecated name.
		`CKA_NEW_NAME: "CKA_NEW_NAME",`,
		// Every name looks up.
		`"CKA_OLD_NAME": CKA_OLD_NAME,`,
		`"CKA_ALIAS":    CKA_ALIAS,`,
		"CKR_TEN RV = 0x0000000A",
	} {
		if !strings.Contains(normalizeSpace(src), normalizeSpace(want)) {
			t.Errorf("output lacks %q:\n%s", want, src)
		}
	}
	if strings.Contains(src, "NOT_OURS") {
		t.Error("output contains a non-CK define")
	}
	if strings.Count(src, "CKR_TEN RV") != 1 {
		t.Error("an identical redefinition was emitted twice")
	}
}

func TestGeneratorRejects(t *testing.T) {
	for _, tt := range []struct{ header, want string }{
		{"bad.h", "CKR_A redefined with a different value"},
		{"unknown.h", "unknown name CKA_MISSING"},
	} {
		msg, err := runGen(t, filepath.Join("testdata", tt.header))
		if err == nil || !strings.Contains(msg, tt.want) {
			t.Errorf("%s: err = %v, output %q; want failure mentioning %q", tt.header, err, msg, tt.want)
		}
	}
}

func normalizeSpace(s string) string { return strings.Join(strings.Fields(s), " ") }
