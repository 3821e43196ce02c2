package pkcshsm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestRotationScenarios runs every operator runbook scenario of
// scripts/rotation-tests (one subtest per script) with binaries built once.
// Each script verifies every key (pattern of CKA_IBM_OPAQUE and of
// CKA_IBM_OPAQUE_OLD against the master keys before and after, no REENC
// blob left, data encrypted before decrypting after) and every
// application's failure count, and prints exactly one PASS or FAIL line.
//
// The scenarios are independent (each its own root under its own TMPDIR)
// and run in parallel, as far as go test's -parallel allows.
func TestRotationScenarios(t *testing.T) {
	t.Parallel()
	requireTools(t, "bash", "jq")
	scripts, err := filepath.Glob("scripts/rotation-tests/[0-9][0-9]-*.sh")
	if err != nil || len(scripts) == 0 {
		t.Fatalf("no scenarios found: %v", err)
	}
	// The binaries of this go test run, shared by every package
	// (internal/testenv).
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scripts {
		name := strings.TrimSuffix(filepath.Base(s), ".sh")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A short TMPDIR: the daemon's socket paths hang off it, and a
			// Unix socket path has at most 107 bytes.
			tmp, err := os.MkdirTemp("", "rt")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(tmp) })
			cmd := exec.Command("bash", s)
			cmd.Env = append(os.Environ(), "PKCSHSM_BIN="+bin, "TMPDIR="+tmp)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err = cmd.Run()
			t.Logf("%s took %s", name, time.Since(start).Round(100*time.Millisecond))
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			verdicts := 0
			for _, l := range lines {
				if strings.HasPrefix(l, "PASS ") || strings.HasPrefix(l, "FAIL ") {
					verdicts++
				}
			}
			if err != nil || !strings.Contains(out.String(), "PASS "+name+"\n") || verdicts != 1 {
				t.Fatalf("scenario %s: %v (%d verdict lines)\n%s", name, err, verdicts, out.String())
			}
		})
	}
}
