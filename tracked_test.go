package pkcshsm

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoBinaryTracked (issue 19.12): the repository holds sources, not
// builds: no tracked file is an executable (ELF) or other binary (a NUL
// byte in its first 8 KiB). Built binaries go to build/ (make) or a
// temporary directory (the tests), both ignored.
func TestNoBinaryTracked(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 50 {
		t.Fatalf("git ls-files lists %d files", len(files))
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue // deleted in the work tree
		}
		head := make([]byte, 8192)
		n, _ := fh.Read(head)
		fh.Close()
		head = head[:n]
		switch {
		case bytes.HasPrefix(head, []byte("\x7fELF")):
			t.Errorf("%s is an ELF binary; remove it (git rm --cached) and build it with make", f)
		case bytes.IndexByte(head, 0) >= 0:
			t.Errorf("%s is a binary file; the repository holds text only", f)
		}
	}
}

// TestDocsSayHowToPutTheBinariesOnPath (issue 19.12): README and runbook
// give the command that builds the binaries and puts them on PATH, and
// make does build every command the runbook uses into that directory.
func TestDocsSayHowToPutTheBinariesOnPath(t *testing.T) {
	const line = `make && export PATH="$PWD/build:$PATH"`
	for _, doc := range []string{"README.md", "docs/runbook.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), line) {
			t.Errorf("%s does not say %q", doc, line)
		}
	}
	out, err := exec.Command("make", "-n", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	for _, c := range []string{"hsmsim", "pkcshsm", "pkcshsmd", "pkcshsm_mk_change", "p11load"} {
		if !strings.Contains(string(out), "-o build/"+c+" ./cmd/"+c) {
			t.Errorf("make does not build %s into build/:\n%s", c, out)
		}
	}
}
