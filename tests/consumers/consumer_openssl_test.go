package consumers_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// engineConf writes an OpenSSL configuration that loads libp11's pkcs11
// engine with our module; the PIN is in the (0600) file, not in argv.
func engineConf(t *testing.T, dir string) string {
	t.Helper()
	engine := "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
	if _, err := os.Stat(engine); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the OpenSSL pkcs11 engine is not installed (libengine-pkcs11-openssl): %v", err)
		}
		t.Skipf("the OpenSSL pkcs11 engine is not installed (libengine-pkcs11-openssl): %v", err)
	}
	conf := fmt.Sprintf(`openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = %s
MODULE_PATH = %s
PIN = %s
init = 0
`, engine, env.module, userPIN)
	p := filepath.Join(dir, "openssl.cnf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOpenSSLEngineSigns signs with an EC and an RSA key inside the token
// through the OpenSSL engine; plain OpenSSL, without the engine, verifies
// the signatures with the exported public keys and refuses them for other
// data.
func TestOpenSSLEngineSigns(t *testing.T) {
	openssl := need(t, "openssl")
	dir := t.TempDir()
	conf := engineConf(t, dir)
	msg, other := filepath.Join(dir, "msg"), filepath.Join(dir, "other")
	if err := os.WriteFile(msg, []byte(strings.Repeat("signed by the engine ", 50)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, []byte("not what was signed"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, kt := range []string{"EC:prime256v1", "RSA:2048"} {
		name := strings.SplitN(kt, ":", 2)[0]
		t.Run(name, func(t *testing.T) {
			label := fmt.Sprintf("engine-%s-%d", name, os.Getpid())
			id := fmt.Sprintf("e%d", i)
			p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--keypairgen", "--key-type", kt,
				"--label", label, "--id", id)
			der, pem := filepath.Join(dir, label+".der"), filepath.Join(dir, label+".pem")
			p11tool(t, "--token-label", token, "--read-object", "--type", "pubkey", "--id", id, "-o", der)
			run(t, "", nil, openssl, "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem)

			sig := filepath.Join(dir, label+".sig")
			uri := "pkcs11:token=" + token + ";object=" + label + ";type=private"
			run(t, "", []string{"OPENSSL_CONF=" + conf}, openssl, "dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine",
				"-sign", uri, "-out", sig, msg)
			st, err := os.Stat(sig)
			if err != nil || st.Size() == 0 {
				t.Fatalf("the engine wrote no signature: %v", err)
			}
			// Plain OpenSSL: no engine, no configuration.
			out := run(t, "", []string{"OPENSSL_CONF=/dev/null"}, openssl, "dgst", "-sha256", "-verify", pem, "-signature", sig, msg)
			mustContain(t, "openssl dgst -verify", out, "Verified OK")
			out, err = runErr(t, "", []string{"OPENSSL_CONF=/dev/null"}, openssl, "dgst", "-sha256", "-verify", pem, "-signature", sig, other)
			if err == nil || !strings.Contains(out, "Verification failure") {
				t.Errorf("the engine's signature verified for other data (err %v):\n%s", err, out)
			}
		})
	}
}
