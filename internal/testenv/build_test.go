package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSourceHash: the binaries' directory changes with any source file the
// binaries are built from and with the tags, not with test files or
// testdata.
func TestSourceHash(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hash := func(tags string) string {
		t.Helper()
		h, err := sourceHash(dir, tags)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	write("go.mod", "module x\n")
	write("cmd/a/main.go", "package main\nfunc main() {}\n")
	h0 := hash("")
	if hash("failpoints") == h0 {
		t.Error("the tags do not change the hash")
	}
	write("cmd/a/main_test.go", "package main\n")
	write("cmd/a/testdata/x.go", "package x\n")
	write("README.md", "text\n")
	if hash("") != h0 {
		t.Error("a test file, testdata or a document changed the hash")
	}
	write("cmd/a/main.go", "package main\nfunc main() { println() }\n")
	if hash("") == h0 {
		t.Error("a changed source file did not change the hash")
	}
	write("cmd/a/main.go", "package main\nfunc main() {}\n")
	write("go.sum", "x v1 h1:\n")
	if hash("") == h0 {
		t.Error("go.sum did not change the hash")
	}
}

// TestProgramHash: a program's directory changes with its own files (a
// test program under testdata, which the binaries' hash leaves out).
func TestProgramHash(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "main.go")
	if err := os.WriteFile(p, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h0, err := dirHash(dir, "base")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := dirHash(dir, "other"); h == h0 {
		t.Error("the sources' hash does not change the program's")
	}
	if err := os.WriteFile(p, []byte("package main\nfunc main() { println() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if h, _ := dirHash(dir, "base"); h == h0 {
		t.Error("a changed file of the program did not change its hash")
	}
}

// TestProgramBuilds: Program builds a test program of a testdata
// directory once, and the file it returns runs.
func TestProgramBuilds(t *testing.T) {
	p := Program(t, "cmd/pkcshsm/cli/testdata/tokenclient")
	if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("%s: %v %v", p, fi, err)
	}
	if again := Program(t, "cmd/pkcshsm/cli/testdata/tokenclient"); again != p {
		t.Fatalf("a second Program call gave %s, the first %s", again, p)
	}
}
