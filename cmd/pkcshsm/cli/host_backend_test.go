package cli

import (
	"os"
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
