package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// With hsm-backend = host and no IBM host library on the machine, the
// first command fails at start-up, naming both libraries, the packages
// that ship them and the configuration line — and changes nothing.
func TestSlotsHostBackendWithoutLibraries(t *testing.T) {
	pk, _ := binaries(t)
	layout := newRoot(t)
	t.Setenv("PKCSHSM_CCA_LIBRARY", "")
	t.Setenv("PKCSHSM_EP11_LIBRARY", "")
	conf := filepath.Join(layout.ConfDir(), "pkcshsm.conf")
	raw, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	hostConf := strings.Replace(string(raw), "hsm-backend = simulator", "hsm-backend = host", 1)
	if hostConf == string(raw) {
		t.Fatal("test configuration has no hsm-backend = simulator line")
	}
	if err := os.WriteFile(conf, []byte(hostConf), 0o644); err != nil {
		t.Fatal(err)
	}
	before := tree(t, layout.StateDir())
	out, code := runBin(t, pk, "", "slots")
	if code == 0 {
		t.Fatalf("pkcshsm slots exited 0 without host libraries:\n%s", out)
	}
	for _, want := range []string{"error:", "hint:", "libcsulcca.so", "libep11.so", "hsm-backend = host", "csulcca", "ep11-host", conf} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if after := tree(t, layout.StateDir()); after != before {
		t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
	}
	// The same root with the simulator works: only the backend line
	// made the difference.
	if err := os.WriteFile(conf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runBin(t, pk, "", "slots"); code != 0 {
		t.Fatalf("pkcshsm slots on the simulator: exit %d\n%s", code, out)
	}
}

// tree lists the files below dir with their sizes, sorted by path.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			b.WriteString(p + ":" + info.ModTime().String() + ";")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A library that lacks a verb, or is too old, is refused at start-up too,
// naming the file and what is wrong.
func TestSlotsHostBackendBadLibrary(t *testing.T) {
	pk, _ := binaries(t)
	layout := newRoot(t)
	conf := filepath.Join(layout.ConfDir(), "pkcshsm.conf")
	raw, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	// Only the CCA slot, so only the CCA library is loaded.
	ccaOnly := strings.Replace(string(raw), "hsm-backend = simulator", "hsm-backend = host", 1)
	ccaOnly = ccaOnly[:strings.Index(ccaOnly, "slot 1 {")]
	if err := os.WriteFile(conf, []byte(ccaOnly), 0o644); err != nil {
		t.Fatal(err)
	}
	verbs := strings.Fields("CSUACFV CSUACFQ CSUACRA CSUACRD CSNBKGN CSNBKTB2 CSNBKGN2 CSNDPKB CSNDPKG CSNDPKX " +
		"CSNBSAE CSNBSAD CSNBENC CSNBDEC CSNDPKE CSNDPKD CSNDDSG CSNDDSV CSNBHMG CSNBHMV CSNBKTC CSNDKTC")
	for _, tc := range []struct {
		name, version string
		verbs         []string
		want          []string
	}{
		{"no CSNBKTC2", "7.2.0", verbs, []string{"CSNBKTC2"}},
		{"too old", "6.0.9", append(verbs, "CSNBKTC2"), []string{"6.0.9", "7.1 or later"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib := stubCCA(t, tc.verbs, tc.version)
			t.Setenv("PKCSHSM_CCA_LIBRARY", lib)
			out, code := runBin(t, pk, "", "slots")
			if code == 0 {
				t.Fatalf("exit 0:\n%s", out)
			}
			for _, want := range append(tc.want, lib, "hsm-backend = host", "hint:") {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// stubCCA builds a shared object exporting verbs as no-ops whose CSUACFV
// reports version.
func stubCCA(t *testing.T, verbs []string, version string) string {
	t.Helper()
	var src strings.Builder
	src.WriteString("#include <string.h>\n")
	for _, v := range verbs {
		body := "*(long *)a0 = 0; *(long *)a1 = 0;"
		if v == "CSUACFV" {
			body += ` strcpy((char *)a5, "` + version + `");`
		}
		src.WriteString("void " + v + "(void *a0, void *a1, void *a2, void *a3, void *a4, void *a5) {" + body + "}\n")
	}
	dir := t.TempDir()
	c, so := filepath.Join(dir, "stub.c"), filepath.Join(dir, "libcsulcca-stub.so")
	if err := os.WriteFile(c, []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}
