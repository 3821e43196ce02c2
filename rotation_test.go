package pkcshsm

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRotationDemo runs the README's main command, scripts/rotation-demo.sh,
// in both modes: a complete master key rotation (and a canceled one) on the
// simulator with the real binaries, the real daemon, three application
// processes using keys throughout, and the verification of every key. The
// script exits 0 only when everything verified.
func TestRotationDemo(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("bash is required: %v", err)
	}
	for _, mode := range []string{"finalize", "cancel"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command("bash", "scripts/rotation-demo.sh")
			cmd.Env = append(os.Environ(), "MODE="+mode, "TMPDIR="+t.TempDir())
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
