package pkcshsm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestRotationDemo runs the README's main command, scripts/rotation-demo.sh,
// in both modes: a complete master key rotation (and a canceled one) on the
// simulator with the real binaries, the real daemon, three application
// processes using keys throughout, and the verification of every key. The
// script exits 0 only when everything verified. The host/ runs do the same
// with hsm-backend = host: every process goes through the C interface of
// IBM's host libraries, served by their doubles (make host-doubles).
//
// The first run is the README's command as it stands (the script builds
// the binaries); the others take this go test run's binaries
// (internal/testenv) and run in parallel.
func TestRotationDemo(t *testing.T) {
	t.Parallel()
	requireTools(t, "bash")
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for i, run := range []struct{ backend, mode string }{
		{"simulator", "finalize"}, {"simulator", "cancel"}, {"host", "finalize"}, {"host", "cancel"},
	} {
		name := run.mode
		if run.backend != "simulator" {
			name = run.backend + "/" + run.mode
		}
		mode := run.mode
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command("bash", "scripts/rotation-demo.sh")
			cmd.Env = append(os.Environ(), "MODE="+mode, "BACKEND="+run.backend, "TMPDIR="+t.TempDir())
			if i > 0 {
				cmd.Env = append(cmd.Env, "PKCSHSM_BIN="+bin)
			}
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			t.Logf("demo (%s) took %s", mode, time.Since(start).Round(time.Second))
			if err != nil {
				t.Fatalf("demo failed: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				"DEMO PASSED (" + mode + ")",
				"operations, 0 failed",
				"an intersecting operation is refused",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("demo output lacks %q:\n%s", want, out.String())
				}
			}
		})
	}
}

// TestRotationDemoUnprivileged runs the demo as user nobody when the tests
// run as root (as in CI), with binaries built beforehand: the whole
// rotation needs no privilege. When the tests run as another user,
// TestRotationDemo already is that check.
func TestRotationDemoUnprivileged(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Logf("running as uid %d: TestRotationDemo is the unprivileged run", os.Getuid())
		return
	}
	const nobody = 65534
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The binaries of this go test run (internal/testenv), copied where
	// nobody may run them, next to the demo script.
	built, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range testenv.Commands {
		b, err := os.ReadFile(filepath.Join(built, c))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, c), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The demo script and the helpers it sources (scripts/lib).
	if err := os.Mkdir(filepath.Join(bin, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"scripts/rotation-demo.sh": "demo.sh", "scripts/lib/demo.sh": "lib/demo.sh"} {
		script, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, to), script, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o777)
	cmd := exec.Command("bash", filepath.Join(bin, "demo.sh"))
	cmd.Dir = work
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + work, "TMPDIR=" + work, "PKCSHSM_BIN=" + bin, "APPS=2"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo as uid %d failed: %v\n%s", nobody, err, out.String())
	}
	if !strings.Contains(out.String(), "DEMO PASSED (finalize)") {
		t.Fatalf("demo output:\n%s", out.String())
	}
}
