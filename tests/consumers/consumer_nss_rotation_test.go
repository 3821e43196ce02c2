package consumers_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startDaemon runs pkcshsmd for the fixture's root until the test ends.
func startDaemon(t *testing.T) {
	t.Helper()
	logf := startBackground(t, "pkcshsmd", filepath.Join(env.bin, "pkcshsmd"), "--log-format", "text", "--log-level", "warn")
	sock := filepath.Join(env.root, "run/pkcshsm/admin.sock")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf)
			t.Fatalf("pkcshsmd did not start:\n%s", b)
		}
	}
}

// TestNSSSelfservThroughRotation: one selfserv process serves TLS with a
// token EC key (CCA APKA master key) through two full master key
// rotations of all three CCA master keys (load new, reencipher,
// activate, finalize), with handshakes after every step; none may fail.
// Two rounds, because after one activation the simulated adapter still
// accepts blobs under the previous key through its OLD register; after
// the second, the original master key is gone from the adapter, so the
// last handshakes prove the server signs with the re-enciphered key.
func TestNSSSelfservThroughRotation(t *testing.T) {
	need(t, "selfserv")
	startDaemon(t)
	dir := t.TempDir()
	db, pw := nssDB(t, dir)
	certutil := need(t, "certutil")
	noise := filepath.Join(dir, "noise")
	if err := os.WriteFile(noise, []byte(strings.Repeat("noise ", 10)), 0o600); err != nil {
		t.Fatal(err)
	}
	label := "nss-rotation"
	run(t, "", nil, certutil, "-S", "-d", db, "-h", token, "-f", pw, "-z", noise, "-n", label, "-s", "CN="+label,
		"-x", "-t", "u,u,u", "-k", "ec", "-q", "nistp256", "--keyUsage", "digitalSignature", "--nsCertType", "sslServer")
	port := startSelfserv(t, db, pw, token+":"+label, true)
	handshakes := 0
	shake := func(when string) {
		t.Helper()
		for _, v := range []string{"tls1.2", "tls1.3"} {
			out := tstclnt(t, port, v)
			if !strings.Contains(out, "subject DN: CN="+label) {
				t.Fatalf("%s, %s: wrong server certificate:\n%s", when, v, out)
			}
			handshakes++
		}
	}
	hsmsim, mk := filepath.Join(env.bin, "hsmsim"), filepath.Join(env.bin, "pkcshsm_mk_change")
	pattern := regexp.MustCompile(`0x([0-9a-f]{16})`)
	loadNew := func(typ string) string {
		out := run(t, "", nil, hsmsim, "load-new", "--apqns", "01.0033", "--type", typ)
		m := pattern.FindStringSubmatch(strings.SplitN(out, "\n", 2)[0])
		if m == nil {
			t.Fatalf("no pattern in hsmsim load-new output:\n%s", out)
		}
		return m[1]
	}
	opID := regexp.MustCompile(`(?m)^Master key change operation '(.*)' created.$`)
	shake("before")
	for round := 1; round <= 2; round++ {
		sym, aes, apka := loadNew("SYM"), loadNew("AES"), loadNew("APKA")
		shake("new keys loaded")
		out := run(t, userPIN+"\n", nil, mk, "reencipher", "-a", "01.0033", "-s", sym, "-A", aes, "-p", apka)
		m := opID.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("round %d: no operation id:\n%s", round, out)
		}
		shake("reenciphered")
		for _, typ := range []string{"SYM", "AES", "APKA"} {
			run(t, "", nil, hsmsim, "set", "--apqns", "01.0033", "--type", typ)
		}
		shake("activated")
		run(t, userPIN+"\n", nil, mk, "finalize", "-i", m[1])
		shake("finalized")
		if out := run(t, "", nil, mk, "list"); strings.TrimSpace(out) != "" {
			t.Fatalf("round %d: operations left:\n%s", round, out)
		}
	}
	t.Logf("%d TLS handshakes with the token key through two rotations, 0 failed", handshakes)
}
