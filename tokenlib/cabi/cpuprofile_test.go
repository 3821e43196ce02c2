package cabi_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCPUProfileOfApplication: with PKCSHSM_CPUPROFILE=FILE, a C
// application that loads libpkcshsm.so (cmd/libpkcshsm) leaves a CPU
// profile of its run in FILE, mode 0600, written at C_Finalize: a gzip'd
// pprof protobuf whose string table names the CPU sample type. A FILE
// that is a directory is refused on standard error (an error line naming
// the variable and a hint), and the application runs on, unprofiled.
func TestCPUProfileOfApplication(t *testing.T) {
	m := ready(t)
	m.ok("C_Finalize", m.f.C_Finalize(0)) // the token is set up; the C program uses it
	lib := moduleSO(t)
	prog := cProgram(t, "forkclient")
	run := func(profile string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(prog, lib, "direct", "0", "1")
		cmd.Env = append(os.Environ(), "CABI_PIN="+userPIN, "PKCSHSM_CPUPROFILE="+profile)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil || o.String() != "ok\n" {
			t.Fatalf("forkclient with PKCSHSM_CPUPROFILE=%s: %v\nstdout:\n%s\nstderr:\n%s", profile, err, o.String(), e.String())
		}
		return o.String(), e.String()
	}
	path := filepath.Join(t.TempDir(), "app.pprof")
	if _, stderr := run(path); stderr != "" {
		t.Errorf("the module wrote to standard error: %q", stderr)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("profile mode %v, want 0600", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("the profile is not gzip'd (pprof writes gzip'd protobuf): %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("the profile is cut short (not closed at C_Finalize?): %v", err)
	}
	for _, s := range []string{"samples", "cpu", "nanoseconds"} {
		if !bytes.Contains(raw, []byte(s)) {
			t.Errorf("the profile's string table lacks %q", s)
		}
	}
	dir := t.TempDir()
	_, stderr := run(dir)
	if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 2 ||
		lines[0] != "libpkcshsm: error: PKCSHSM_CPUPROFILE="+dir+" is not a regular file" || !strings.HasPrefix(lines[1], "hint: ") {
		t.Errorf("a directory as PKCSHSM_CPUPROFILE: stderr %q, want an error line naming it and a hint", stderr)
	}
}
