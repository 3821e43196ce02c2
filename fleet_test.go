package pkcshsm

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// runScript runs a bash script of scripts/ in its own process group
// (killed with everything it started when the test ends) and fails the
// test with its output unless it exits 0.
func runScript(t *testing.T, env []string, script string) string {
	t.Helper()
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "TMPDIR="+t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", strings.Join(env, " "), script, err, out)
	}
	return string(out)
}

// requireTools fails the test unless every tool is on PATH (CI installs
// them in .ci/run).
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (.ci/run installs it; ansible-*: apt-get install ansible-core ansible-lint python3-voluptuous): %v", tool, err)
		}
	}
}

// TestAnsibleCollection runs scripts/ansible-check.sh: the unit tests of
// the modules of ansible/ (fake tools), validate-modules and ansible-lint.
func TestAnsibleCollection(t *testing.T) {
	t.Parallel()
	requireTools(t, "ansible-playbook", "ansible-lint")
	out := runScript(t, nil, "scripts/ansible-check.sh")
	for _, want := range []string{"OK", "validate-modules: 3 modules, no problem", "ansible checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("ansible-check.sh printed no %q:\n%s", want, out)
		}
	}
}

// TestFleetDemo runs scripts/fleet-demo.sh with the real binaries, daemons
// and applications: three hosts sharing one simulated adapter domain
// rotate with ansible/playbooks/rotate.yml (every key checked on every
// host, a rerun changes nothing), and with FAIL_HOST=host2 (a wrong PIN)
// every host is canceled and no key changes.
//
// Not parallel with the other tests: its failure path holds a stopped
// application against reencipher's 15 s timeout, and it runs its two
// demos in parallel with each other only, as on a quiet machine.
func TestFleetDemo(t *testing.T) {
	requireTools(t, "ansible-playbook", "ansible-vault", "jq")
	// The binaries of this go test run (internal/testenv).
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, failHost, want string
	}{
		{"rotate", "", "FLEET DEMO PASSED: 3 hosts rotated"},
		{"fail-host2", "host2", "FLEET DEMO PASSED (FAIL_HOST=host2)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := runScript(t, []string{"PKCSHSM_BIN=" + bin, "HOSTS=3", "FAIL_HOST=" + tc.failHost}, "scripts/fleet-demo.sh")
			if !strings.Contains(out, tc.want) {
				t.Fatalf("fleet-demo.sh did not print %q:\n%s", tc.want, out)
			}
			// The failure path after the pre-checks: a hung application
			// fails its host's reencipher and the play cancels the rest.
			if hung := "the play named host2, canceled every host that re-enciphered, set no key"; tc.failHost != "" && !strings.Contains(out, hung) {
				t.Fatalf("fleet-demo.sh did not print %q:\n%s", hung, out)
			}
		})
	}
}
