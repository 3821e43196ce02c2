package hostarch

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestArchOfThisTestBinary(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	arch, ok := Arch(exe)
	if !ok || arch != runtime.GOARCH {
		t.Fatalf("Arch(%s) = %q, %v; want %q", exe, arch, ok, runtime.GOARCH)
	}
	if why := Mismatch(exe); why != "" {
		t.Fatalf("Mismatch(own binary) = %q, want none", why)
	}
}

func TestMismatchNamesBothArchitectures(t *testing.T) {
	// An ELF header of the other kind: s390x for every host but s390x,
	// where it is x86-64. 64 bytes are enough for debug/elf's header read.
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF")
	hdr[4], hdr[6] = 2, 1 // ELFCLASS64, EV_CURRENT
	want := "s390x"
	if runtime.GOARCH == "s390x" {
		want = "amd64"
		hdr[5] = 1                // little endian
		hdr[16], hdr[18] = 2, 62  // ET_EXEC, EM_X86_64
		hdr[20] = 1               // e_version
		hdr[52], hdr[54] = 64, 56 // e_ehsize, e_phentsize
		hdr[58] = 64              // e_shentsize
	} else {
		hdr[5] = 2                // big endian
		hdr[17], hdr[19] = 2, 22  // ET_EXEC, EM_S390
		hdr[23] = 1               // e_version
		hdr[53], hdr[55] = 64, 56 // e_ehsize, e_phentsize
		hdr[59] = 64              // e_shentsize
	}
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(p, hdr, 0o755); err != nil {
		t.Fatal(err)
	}
	if arch, ok := Arch(p); !ok || arch != want {
		t.Fatalf("Arch = %q, %v; want %q", arch, ok, want)
	}
	why := Mismatch(p)
	if !strings.Contains(why, "linux/"+want+" program") || !strings.Contains(why, "linux/"+runtime.GOARCH+" module") {
		t.Fatalf("Mismatch = %q; want it to name linux/%s and linux/%s", why, want, runtime.GOARCH)
	}
	// A script is not ELF: no verdict.
	sh := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(sh, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if why := Mismatch(sh); why != "" {
		t.Fatalf("Mismatch(script) = %q, want none", why)
	}
}
