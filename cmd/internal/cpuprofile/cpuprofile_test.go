package cpuprofile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartWritesAProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	t.Setenv(Env, path)
	stop, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 20_000_000 {
		x += i * i
	}
	_ = x
	stop()
	b, err := os.ReadFile(path)
	// A pprof profile is gzip-compressed protobuf.
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("profile %s: %d bytes, %v", path, len(b), err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("profile mode %v", fi.Mode().Perm())
	}
}

func TestStartOff(t *testing.T) {
	t.Setenv(Env, "")
	stop, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

func TestStartRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{dir, filepath.Join(dir, "missing", "x")} {
		t.Setenv(Env, p)
		if _, err := Start(); err == nil || !strings.Contains(err.Error(), Env) || !strings.Contains(err.Error(), "hint:") {
			t.Fatalf("%s: %v", p, err)
		}
	}
	link := filepath.Join(dir, "link")
	os.Symlink(filepath.Join(dir, "target"), link)
	t.Setenv(Env, link)
	if _, err := Start(); err == nil {
		t.Fatal("symlink accepted")
	}
}
