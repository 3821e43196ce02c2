// Package hostarch tells whether a program of this machine can load a
// shared object built for the running program's architecture.
//
// The test suite also runs built for linux/s390x under qemu's user mode
// emulation (scripts/test-s390x.sh). There the PKCS#11 module and our own
// binaries are s390x programs, but the consumers that are not ours —
// pkcs11-tool, openssl, p11-kit, python3, Java — are the host's (x86-64)
// programs, and a process can only load a module of its own architecture.
// Tests ask Mismatch before they hand the module to such a program and skip
// with its reason, which the s390x script reports as "could not run".
package hostarch

import (
	"debug/elf"
	"fmt"
	"path/filepath"
	"runtime"
)

// machines maps the ELF machines of the platforms Go and Debian build for
// to GOARCH names.
var machines = map[elf.Machine]string{
	elf.EM_X86_64:  "amd64",
	elf.EM_386:     "386",
	elf.EM_AARCH64: "arm64",
	elf.EM_ARM:     "arm",
	elf.EM_S390:    "s390x",
	elf.EM_PPC64:   "ppc64le",
	elf.EM_RISCV:   "riscv64",
	elf.EM_MIPS:    "mips64le",
}

// Arch returns the GOARCH name of the ELF program at path (symbolic links
// followed), or ok == false when path is not an ELF file (a script, say)
// or its machine is not one listed above.
func Arch(path string) (arch string, ok bool) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", false
	}
	f, err := elf.Open(real)
	if err != nil {
		return "", false
	}
	defer f.Close()
	arch, ok = machines[f.Machine]
	if ok && f.Machine == elf.EM_PPC64 && f.ByteOrder.String() == "BigEndian" {
		arch = "ppc64"
	}
	return arch, ok
}

// Mismatch returns why the program at path cannot load a shared object
// built for this program's GOARCH, or "" when it can (or when its
// architecture cannot be told: the program then tries and reports itself).
func Mismatch(path string) string {
	arch, ok := Arch(path)
	if !ok || arch == runtime.GOARCH {
		return ""
	}
	return fmt.Sprintf("%s is a linux/%s program and cannot load a linux/%s module into its process (only programs built for linux/%s can)",
		path, arch, runtime.GOARCH, runtime.GOARCH)
}
