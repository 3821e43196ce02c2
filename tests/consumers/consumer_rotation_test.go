package consumers_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRotationOutsideApplications runs the README's main command with
// CLIENT=all: while the Go load generators, the C client (3 threads), the
// PyKCS11 script and the pkcs11-tool/OpenSSL engine loop use the tokens
// through libpkcshsm.so without pause, the demo re-enciphers, activates the
// new master keys APQN by APQN and finalizes — or cancels. The demo itself
// verifies every key (new master keys, CKA_IBM_OPAQUE_OLD = the previous
// blob, or untouched after a cancel) and exits non-zero otherwise; this test
// also checks from the output that every client ran, failed nothing,
// worked in every held phase and decrypted its data from before the change.
func TestRotationOutsideApplications(t *testing.T) {
	need(t, "bash")
	need(t, "pkcs11-tool")
	need(t, "openssl")
	need(t, "/usr/bin/python3")
	engineConf(t, t.TempDir()) // fails under CI without the engine
	for _, mode := range []string{"finalize", "cancel"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command("bash", filepath.Join(env.repo, "scripts/rotation-demo.sh"))
			cmd.Dir = env.repo
			// LOAD=1: a second of load per phase keeps the two runs near a
			// minute each on 2 cores.
			cmd.Env = append(os.Environ(), "MODE="+mode, "CLIENT=all", "LOAD=1", "APPS=1", "PKCSHSM_BIN="+env.bin,
				"TMPDIR="+t.TempDir())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err := cmd.Run()
			t.Logf("demo (%s, CLIENT=all) took %s", mode, time.Since(start).Round(time.Second))
			o := out.String()
			if err != nil {
				t.Fatalf("demo failed: %v\n%s", err, o)
			}
			mustContain(t, "demo", o, "DEMO PASSED ("+mode+")", "p99 latency per client")
			for _, c := range []string{`p11load \d+`, `p11stress \d+`, `p11stress\.py \d+`, `toolloop \d+`} {
				re := regexp.MustCompile(`(?m)^` + c + `: (\d+) operations, (\d+) failed(?:, (\d+) ciphertexts from earlier verified)?`)
				ms := re.FindAllStringSubmatch(o, -1)
				if len(ms) == 0 {
					t.Errorf("no summary of %s in the demo output:\n%s", c, o)
					continue
				}
				for _, m := range ms {
					ops, _ := strconv.Atoi(m[1])
					if ops == 0 || m[2] != "0" {
						t.Errorf("%s: %s operations, %s failed", c, m[1], m[2])
					}
					if m[3] != "" {
						if n, _ := strconv.Atoi(m[3]); n == 0 {
							t.Errorf("%s verified no data from earlier: %s", c, m[0])
						}
					}
				}
			}
			// Each outside client worked in each phase the demo held: before
			// the change, between reencipher and the activations, after it.
			for _, c := range []string{`p11stress \d+`, `p11stress\.py \d+`, `toolloop \d+`} {
				for _, ph := range []string{"baseline", "reenciphered", "after"} {
					re := regexp.MustCompile(`(?m)^` + c + `: phase ` + ph + ` +[1-9]\d* ops +0 failed`)
					if !re.MatchString(o) {
						t.Errorf("%s: no operations in phase %s:\n%s", c, ph, o)
					}
				}
			}
			// Token keys the C client made before the change still work after
			// it, in a new process: old ciphertext decrypts, old signature verifies.
			if n := strings.Count(o, "decrypts, its signature verifies"); n != 3 {
				t.Errorf("the C client's check after the %s covered %d tokens, want 3:\n%s", mode, n, o)
			}
			if i := strings.Index(o, "==> p99 latency per client"); i >= 0 {
				table := o[i:]
				if j := strings.Index(table, "\n\n"); j >= 0 {
					table = table[:j]
				}
				t.Log("\n" + table)
			}
		})
	}
}
