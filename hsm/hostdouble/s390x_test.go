package hostdouble_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDoublesBuildForS390x builds the doubles with Debian's s390x cross
// compiler through the Makefile target, as the s390x runs use them, and
// checks they are big-endian s390x shared objects exporting the
// documented symbols. The tests of this package themselves pass under
// qemu-s390x (docs/host-doubles.md says how to run them).
func TestDoublesBuildForS390x(t *testing.T) {
	cc, err := exec.LookPath("s390x-linux-gnu-gcc")
	if err != nil {
		t.Fatalf("s390x-linux-gnu-gcc is required (apt-get install gcc-s390x-linux-gnu libc6-dev-s390x-cross): %v", err)
	}
	out := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "../..", "host-doubles", "CC="+cc, "HOST_DOUBLES="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make host-doubles CC=%s: %v\n%s", cc, err, b)
	}
	for lib, sym := range map[string]string{"libcsulcca.so": "CSNBKTC2", "libep11.so.4": "m_admin"} {
		f, err := elf.Open(filepath.Join(out, lib))
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != elf.EM_S390 || f.Data != elf.ELFDATA2MSB || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_DYN {
			t.Errorf("%s: %v %v %v %v, want a 64-bit big-endian s390x shared object", lib, f.Machine, f.Data, f.Class, f.Type)
		}
		syms, err := f.DynamicSymbols()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range syms {
			found = found || s.Name == sym && s.Section != elf.SHN_UNDEF
		}
		if !found {
			t.Errorf("%s does not export %s", lib, sym)
		}
		f.Close()
	}
}

// TestSymbolsExported: openCryptoki resolves every name of its list and
// fails on the first missing one (§1.1, §2.1), so the doubles export all
// of them (c/symbols_*.txt) — and nothing of their own.
func TestSymbolsExported(t *testing.T) {
	dir := build(t)
	for lib, list := range map[string]string{"libcsulcca.so": "c/symbols_cca.txt", "libep11.so": "c/symbols_ep11.txt"} {
		raw, err := os.ReadFile(list)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]bool{}
		for _, w := range strings.Fields(string(raw)) {
			want[w] = true
		}
		f, err := elf.Open(filepath.Join(dir, lib))
		if err != nil {
			t.Fatal(err)
		}
		syms, err := f.DynamicSymbols()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, s := range syms {
			if s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				got[s.Name] = true
			}
		}
		for w := range want {
			if !got[w] {
				t.Errorf("%s does not export %s", lib, w)
			}
		}
		for g := range got {
			if !want[g] && !strings.HasPrefix(g, "_") {
				t.Errorf("%s exports %s, which the real library does not", lib, g)
			}
		}
	}
}
