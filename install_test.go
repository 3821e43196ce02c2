package pkcshsm

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstall stages "make install" into a temporary DESTDIR with the
// paths a distribution package uses, and checks the tree: every file where
// the FHS puts it with a deliberate mode, the unit pointing at the
// installed daemon, and systemd-analyze verify passing on the installed
// unit (with the staged tree as root, so it checks the staged binary).
func TestInstall(t *testing.T) {
	t.Parallel()
	requireTools(t, "make", "systemd-analyze")
	dest := t.TempDir()
	build := t.TempDir()
	cmd := exec.Command("make", "-s", "install", "DESTDIR="+dest, "PREFIX=/usr", "BUILD="+build)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out.String())
	}

	want := map[string]fs.FileMode{
		"usr/bin/pkcshsm":                         0o755,
		"usr/bin/pkcshsm_mk_change":               0o755,
		"usr/bin/hsmsim":                          0o755,
		"usr/bin/p11load":                         0o755,
		"usr/sbin/pkcshsmd":                       0o755,
		"usr/lib/systemd/system/pkcshsmd.service": 0o644,
		"usr/lib/tmpfiles.d/pkcshsm.conf":         0o644,
		"usr/lib/sysusers.d/pkcshsm.conf":         0o644,
		"usr/share/man/man1/pkcshsm.1":            0o644,
		"usr/share/man/man1/pkcshsm_mk_change.1":  0o644,
		"usr/share/man/man1/hsmsim.1":             0o644,
		"usr/share/man/man5/pkcshsm.conf.5":       0o644,
		"usr/share/man/man8/pkcshsmd.8":           0o644,
	}
	for _, c := range []string{"pkcshsm", "pkcshsm_mk_change"} {
		want["usr/share/bash-completion/completions/"+c] = 0o644
		want["usr/share/zsh/vendor-completions/_"+c] = 0o644
		want["usr/share/fish/vendor_completions.d/"+c+".fish"] = 0o644
	}
	if _, err := os.Stat("cmd/libpkcshsm"); err == nil {
		want["usr/lib/pkcs11/libpkcshsm.so"] = 0o755
		want["usr/share/p11-kit/modules/pkcshsm.module"] = 0o644
	}
	// Every man page of the repository is installed in its section.
	pages, _ := filepath.Glob("man/*.[1-8]")
	for _, p := range pages {
		base := filepath.Base(p)
		want["usr/share/man/man"+base[len(base)-1:]+"/"+base] = 0o644
	}
	got := map[string]fs.FileMode{}
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		if d.IsDir() {
			if perm := info.Mode().Perm(); rel != "." && perm != 0o755 {
				t.Errorf("directory %s has mode %o, want 755", rel, perm)
			}
			return nil
		}
		if !info.Mode().IsRegular() {
			t.Errorf("%s is not a regular file (%s)", rel, info.Mode())
		}
		got[rel] = info.Mode().Perm()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f, mode := range want {
		m, ok := got[f]
		switch {
		case !ok:
			t.Errorf("%s is not installed", f)
		case m != mode:
			t.Errorf("%s has mode %o, want %o", f, m, mode)
		}
	}
	for f := range got {
		if _, ok := want[f]; !ok {
			t.Errorf("unexpected file installed: %s", f)
		}
	}

	// The installed bash completion works: sourced, it registers the
	// command, and the completion it asks the installed binary for offers
	// the subcommands (issue 19.12).
	for c, sub := range map[string]string{"pkcshsm": "keys", "pkcshsm_mk_change": "reencipher"} {
		script := filepath.Join(dest, "usr/share/bash-completion/completions", c)
		probe := `source "$1" && complete -p ` + c + ` && "$2/` + c + `" __complete ""`
		out, err := exec.Command("bash", "-c", probe, "probe", script, filepath.Join(dest, "usr/bin")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "__start_"+c+" "+c) || !strings.Contains(string(out), "\n"+sub) {
			t.Errorf("bash completion of %s does not offer %q: %v\n%s", c, sub, err, out)
		}
	}

	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/pkcshsmd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/sbin/pkcshsmd ") {
		t.Errorf("the installed unit does not start /usr/sbin/pkcshsmd:\n%s", unit)
	}
	if mod, err := os.ReadFile(filepath.Join(dest, "usr/share/p11-kit/modules/pkcshsm.module")); err == nil {
		if !strings.Contains(string(mod), "module: /usr/lib/pkcs11/libpkcshsm.so\n") {
			t.Errorf("the p11-kit module file does not name the installed module:\n%s", mod)
		}
	}

	// systemd-analyze resolves the unit's dependencies and ExecStart in the
	// root it is given: a copy of the staged tree plus the host's targets.
	vroot := t.TempDir()
	if out, err := exec.Command("cp", "-a", dest+"/.", vroot).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	units, _ := filepath.Glob("/usr/lib/systemd/system/*.target")
	slices, _ := filepath.Glob("/usr/lib/systemd/system/*.slice")
	deps := append(append(units, slices...), "/usr/lib/systemd/system/systemd-sysusers.service",
		"/usr/lib/systemd/system/systemd-tmpfiles-setup.service")
	for _, u := range deps {
		if b, err := os.ReadFile(u); err == nil {
			if err := os.WriteFile(filepath.Join(vroot, "usr/lib/systemd/system", filepath.Base(u)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	verify := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+vroot, "/usr/lib/systemd/system/pkcshsmd.service")
	vout, err := verify.CombinedOutput()
	// Unknown keys and other findings are printed without a failure exit.
	if err != nil || len(bytes.TrimSpace(vout)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, vout)
	}
}
