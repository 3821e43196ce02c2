package consumers_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// javaConf writes a SunPKCS11 configuration for the fixture's token.
func javaConf(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pkcshsm.cfg")
	if err := os.WriteFile(p, []byte(fmt.Sprintf("name = pkcshsm\nlibrary = %s\nslot = 2\n", env.module)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestJavaKeytoolAndSunPKCS11: keytool -genkeypair makes EC and RSA key
// pairs with their self-signed certificates on the token (the keys must
// look like HSM keys to Java: sensitive, so it never tries to read them;
// the certificates must be storable); keytool -list finds them; then a
// Java program signs with them (SHA256withRSA, RSASSA-PSS,
// SHA256withECDSA) and with a session RSA key pair, verifies every
// signature with the JDK's software providers, and runs AES-GCM with a
// session AES key (round trip, changed tag refused).
func TestJavaKeytoolAndSunPKCS11(t *testing.T) {
	keytool, java := need(t, "keytool"), need(t, "java")
	cfg := javaConf(t)
	ks := []string{"-keystore", "NONE", "-storetype", "PKCS11", "-providerClass", "sun.security.pkcs11.SunPKCS11",
		"-providerArg", cfg}
	// keytool reads the store password from stdin when -storepass is
	// left out; the PIN stays out of argv.
	rsa, ec := fmt.Sprintf("java-rsa-%d", os.Getpid()), fmt.Sprintf("java-ec-%d", os.Getpid())
	for _, k := range []struct{ alias, args string }{{ec, "-keyalg EC -groupname secp256r1"}, {rsa, "-keyalg RSA -keysize 2048"}} {
		args := append(append([]string{"-genkeypair"}, ks...), "-alias", k.alias, "-dname", "CN="+k.alias)
		args = append(args, strings.Fields(k.args)...)
		out := run(t, userPIN+"\n", nil, keytool, args...)
		if strings.Contains(out, "Exception") {
			t.Fatalf("keytool -genkeypair %s:\n%s", k.alias, out)
		}
	}
	out := run(t, userPIN+"\n", nil, keytool, append([]string{"-list"}, ks...)...)
	mustContain(t, "keytool -list", out, rsa+", PrivateKeyEntry", ec+", PrivateKeyEntry")

	prog := filepath.Join(env.repo, "testdata/clients/P11Java.java")
	out = run(t, userPIN+"\n", nil, java, prog, cfg, rsa, ec)
	mustContain(t, "P11Java", out, "ok token SHA256withRSA", "ok token RSASSA-PSS", "ok token SHA256withECDSA",
		"ok session SHA256withRSA", "ok session RSASSA-PSS", "ok AES-GCM round trip", "ok AES-GCM refuses a changed tag",
		"ok token RSA key is an HSM key", "ok token EC key is an HSM key")
	if strings.Contains(out, "FAILED") {
		t.Fatalf("P11Java:\n%s", out)
	}
}
