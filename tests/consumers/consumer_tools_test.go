package consumers_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// pin is how pkcs11-tool gets the USER PIN here: from the environment
// (--pin env:NAME), not from its command line.
var pinEnv = []string{"P11PIN=" + userPIN}

func p11tool(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "", pinEnv, need(t, "pkcs11-tool"), append([]string{"--module", env.module}, args...)...)
}

func TestPkcs11ToolInfoSlotsMechanisms(t *testing.T) {
	out := p11tool(t, "-I")
	mustContain(t, "pkcs11-tool -I", out, "Cryptoki version 2.40")
	if !regexp.MustCompile(`(?m)^Library\s+:?\s*\S`).MatchString(out) && !strings.Contains(out, "Library") {
		t.Errorf("pkcs11-tool -I shows no library description:\n%s", out)
	}

	out = p11tool(t, "-L")
	// Slot 2 of pkcshsm.conf carries the token initialised by TestMain.
	mustContain(t, "pkcs11-tool -L", out, "(0x2)", "token label        : "+token, "token initialized", "PIN initialized",
		"login required")

	out = p11tool(t, "--token-label", token, "-M")
	for _, m := range []string{"AES-KEY-GEN", "AES-CBC-PAD", "AES-GCM", "ECDSA", "ECDSA-KEY-PAIR-GEN", "RSA-PKCS-KEY-PAIR-GEN",
		"RSA-PKCS-PSS", "RSA-PKCS-OAEP", "SHA256-RSA-PKCS"} {
		if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(m) + `[,\s]`).MatchString(out) {
			t.Errorf("pkcs11-tool -M lacks %s:\n%s", m, out)
		}
	}
	// An unknown token label is an error, not an empty list.
	if out, err := runErr(t, "", nil, need(t, "pkcs11-tool"), "--module", env.module, "--token-label", "nosuchtoken", "-M"); err == nil {
		t.Errorf("pkcs11-tool --token-label nosuchtoken succeeded:\n%s", out)
	}
}

func TestPkcs11ToolObjectsKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	tag := fmt.Sprintf("t%d", os.Getpid())
	// -O without login shows no private objects; with it, the key the
	// administrator generated in TestMain.
	out := p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "-O")
	mustContain(t, "pkcs11-tool -O", out, "label:      admin-aes")

	out = p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--keygen", "--key-type", "AES:32",
		"--label", tag+"-aes", "--id", "a1")
	mustContain(t, "pkcs11-tool --keygen AES", out, "Secret Key Object", "AES length 32", tag+"-aes")
	out = p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--keypairgen", "--key-type", "EC:prime256v1",
		"--label", tag+"-ec", "--id", "a2")
	mustContain(t, "pkcs11-tool --keypairgen EC", out, "Private Key Object; EC", "Public Key Object; EC", tag+"-ec")
	out = p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--keypairgen", "--key-type", "RSA:2048",
		"--label", tag+"-rsa", "--id", "a3")
	mustContain(t, "pkcs11-tool --keypairgen RSA", out, "Private Key Object; RSA", "Public Key Object; RSA 2048 bits", tag+"-rsa")
	out = p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "-O")
	mustContain(t, "pkcs11-tool -O after keygen", out, tag+"-aes", tag+"-ec", tag+"-rsa")

	msg := filepath.Join(dir, "msg")
	if err := os.WriteFile(msg, []byte(strings.Repeat("pkcs11-tool signs this. ", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("something else"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ id, mech string }{{"a2", "ECDSA-SHA256"}, {"a3", "SHA256-RSA-PKCS"}, {"a3", "SHA256-RSA-PKCS-PSS"}} {
		t.Run(k.mech, func(t *testing.T) {
			sig := filepath.Join(dir, k.mech+".sig")
			p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--sign", "--id", k.id, "-m", k.mech,
				"--input-file", msg, "--output-file", sig)
			out := p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--verify", "--id", k.id, "-m", k.mech,
				"--input-file", msg, "--signature-file", sig)
			mustContain(t, "pkcs11-tool --verify", out, "Signature is valid")
			// pkcs11-tool exits 0 either way; its verdict is in the output.
			out = p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--verify", "--id", k.id, "-m", k.mech,
				"--input-file", other, "--signature-file", sig)
			if !strings.Contains(out, "Invalid signature") || strings.Contains(out, "Signature is valid") {
				t.Errorf("a signature verified for other data:\n%s", out)
			}
		})
	}
	// The public key leaves the token; plain OpenSSL verifies the ECDSA
	// signature made inside it.
	der := filepath.Join(dir, "ec.der")
	p11tool(t, "--token-label", token, "--read-object", "--type", "pubkey", "--id", "a2", "-o", der)
	pem := filepath.Join(dir, "ec.pem")
	run(t, "", nil, need(t, "openssl"), "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem)
	digest := filepath.Join(dir, "msg.sha256")
	run(t, "", nil, need(t, "openssl"), "dgst", "-sha256", "-binary", "-out", digest, msg)
	sig := filepath.Join(dir, "ec.der.sig")
	p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--sign", "--id", "a2", "-m", "ECDSA",
		"--signature-format", "openssl", "--input-file", digest, "--output-file", sig)
	out = run(t, "", nil, need(t, "openssl"), "dgst", "-sha256", "-verify", pem, "-signature", sig, msg)
	mustContain(t, "openssl dgst -verify", out, "Verified OK")
}

// TestPkcs11ToolEncryptDecryptLarge: pkcs11-tool encrypts and decrypts a
// file in 1 KiB parts (C_EncryptUpdate, C_DecryptUpdate) and gives Final a
// buffer of about one block, so the module must hand back the complete
// blocks of every part. The key is imported with a value the test knows:
// the ciphertext must be Go's, block for block, and decrypt to the input.
func TestPkcs11ToolEncryptDecryptLarge(t *testing.T) {
	dir := t.TempDir()
	clear := []byte("consumer test AES-256 key value!")
	keyFile := filepath.Join(dir, "aes.key")
	if err := os.WriteFile(keyFile, clear, 0o600); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%04x", os.Getpid()&0xffff) + "e5"
	p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--write-object", keyFile, "--type", "secrkey",
		"--key-type", "AES:32", "--id", id, "--label", "large-"+id, "--usage-decrypt")
	blk, err := aes.NewCipher(clear)
	if err != nil {
		t.Fatal(err)
	}
	iv := []byte("0123456789abcdef")
	for _, c := range []struct {
		mech string
		size int
	}{{"AES-CBC-PAD", 5000}, {"AES-CBC", 5008}, {"AES-ECB", 4096 + 16}} {
		t.Run(c.mech, func(t *testing.T) {
			plain := make([]byte, c.size)
			for i := range plain {
				plain[i] = byte(i*31 + i/256)
			}
			in := plain
			if c.mech == "AES-CBC-PAD" {
				n := 16 - len(plain)%16
				in = append(bytes.Clone(plain), bytes.Repeat([]byte{byte(n)}, n)...)
			}
			want := make([]byte, len(in))
			args := []string{"--token-label", token, "--login", "--pin", "env:P11PIN", "--id", id, "-m", c.mech}
			if c.mech == "AES-ECB" {
				for i := 0; i < len(in); i += 16 {
					blk.Encrypt(want[i:], in[i:i+16])
				}
			} else {
				cipher.NewCBCEncrypter(blk, iv).CryptBlocks(want, in)
				args = append(args, "--iv", hex.EncodeToString(iv))
			}
			data, enc, dec := filepath.Join(dir, c.mech), filepath.Join(dir, c.mech+".enc"), filepath.Join(dir, c.mech+".dec")
			if err := os.WriteFile(data, plain, 0o644); err != nil {
				t.Fatal(err)
			}
			p11tool(t, append(args, "--encrypt", "--input-file", data, "--output-file", enc)...)
			got, err := os.ReadFile(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("pkcs11-tool --encrypt -m %s wrote %d bytes, not the %d of the %s encryption of the file", c.mech, len(got), len(want), c.mech)
			}
			p11tool(t, append(args, "--decrypt", "--input-file", enc, "--output-file", dec)...)
			if got, err := os.ReadFile(dec); err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("pkcs11-tool --decrypt -m %s wrote %d bytes, not the %d of the file (%v)", c.mech, len(got), len(plain), err)
			}
		})
	}
}

// TestPkcs11ToolTestLoggedIn runs OpenSC's self test as a logged-in user.
// Its signature, verification and decryption parts only exercise RSA
// private keys, so the test first makes one.
func TestPkcs11ToolTestLoggedIn(t *testing.T) {
	label := fmt.Sprintf("selftest-rsa-%d", os.Getpid())
	p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--keypairgen", "--key-type", "RSA:2048",
		"--label", label, "--id", "5e1f")
	out := p11tool(t, "--token-label", token, "--login", "--pin", "env:P11PIN", "--test")
	mustContain(t, "pkcs11-tool --test", out, "No errors", "C_SeedRandom() and C_GenerateRandom():", "seems to be OK",
		"all 4 digest functions seem to work", "all 4 signature functions seem to work")
	// The self test reached our key in each of its RSA parts.
	for _, part := range []string{"Signatures", "Verify", "Decryption"} {
		i := strings.Index(out, "\n"+part)
		if i < 0 {
			t.Errorf("pkcs11-tool --test has no %s part:\n%s", part, out)
			continue
		}
		if !regexp.MustCompile(`testing key \d+ \(` + label + `\)[^\n]*\n(\s+\S[^\n]*\n)*?\s+RSA-PKCS(-OAEP)?: [^\n]*\n?\s*OK`).MatchString(out[i:]) {
			t.Errorf("pkcs11-tool --test %s did not test key %s successfully:\n%s", part, label, out[i:])
		}
	}
	for _, bad := range []string{"ERR:", "failed", "CKR_GENERAL_ERROR", "FAILED"} {
		if strings.Contains(out, bad) {
			t.Errorf("pkcs11-tool --test reports %q:\n%s", bad, out)
		}
	}
}

// TestPkcs11ToolTestThreads: two threads initialise (one with
// CKF_OS_LOCKING_OK, one with NULL args) and get the info, the slot list and
// the token info while the main thread lists the slots. pkcs11-tool 0.23's
// thread cleanup now and then waits 30 s before it joins (it does so with
// SoftHSMv2 too), so this test may take that long.
func TestPkcs11ToolTestThreads(t *testing.T) {
	out := p11tool(t, "--test-threads", "ILGISLT0", "--test-threads", "INGISLT0", "-L")
	mustContain(t, "pkcs11-tool --test-threads", out, "test_threads all threads have ended with CKR_OK",
		"token label        : "+token)
	for _, th := range []string{"thread:0", "thread:1"} {
		if !regexp.MustCompile(`test_threads ` + th + ` state:-1, rv:CKR_OK`).MatchString(out) {
			t.Errorf("pkcs11-tool --test-threads: %s did not end with CKR_OK:\n%s", th, out)
		}
	}
}

func TestP11toolGnuTLS(t *testing.T) {
	tool := need(t, "p11tool")
	url := "pkcs11:token=" + token
	gnutls := []string{"GNUTLS_PIN=" + userPIN}
	out := run(t, "", nil, tool, "--provider", env.module, "--list-tokens")
	mustContain(t, "p11tool --list-tokens", out, "URL: pkcs11:model=", "token="+token, "Label: "+token)

	label := fmt.Sprintf("gnutls-%d", os.Getpid())
	out = run(t, "", gnutls, tool, "--provider", env.module, "--login", "--generate-privkey", "ECDSA", "--curve", "secp256r1",
		"--label", label, url)
	mustContain(t, "p11tool --generate-privkey", out, "-----BEGIN PUBLIC KEY-----")
	out = run(t, "", gnutls, tool, "--provider", env.module, "--login", "--list-all", url)
	mustContain(t, "p11tool --list-all", out, "object="+label+";type=private", "object="+label+";type=public",
		"object=admin-aes;type=secret-key")
	if !regexp.MustCompile(`Type: Private key \(EC/ECDSA[^)]*\)`).MatchString(out) {
		t.Errorf("p11tool --list-all does not show the generated EC key as an EC private key:\n%s", out)
	}
	// p11-kit resolves a relative provider path against its own module
	// directory: only the absolute path works (documented in libpkcshsm(3)).
	if _, err := runErr(t, "", nil, tool, "--provider", "libpkcshsm.so", "--list-tokens"); err == nil {
		t.Logf("p11tool accepted a relative provider path")
	}
}

// TestP11KitListModules registers the module the way a package does, with
// a p11-kit module file, and checks that p11-kit loads it and shows its
// token. p11-kit ignores the user's module files when it runs as root, so
// as root (CI) the file goes to /etc/pkcs11/modules under a unique name and
// is removed afterwards; otherwise to $HOME/.config/pkcs11/modules with a
// temporary HOME.
func TestP11KitListModules(t *testing.T) {
	tool := need(t, "p11-kit")
	name := fmt.Sprintf("pkcshsm-test-%d", os.Getpid())
	var mods string
	var extra []string
	if os.Getuid() == 0 {
		mods = "/etc/pkcs11/modules"
	} else {
		home := t.TempDir()
		mods = filepath.Join(home, ".config/pkcs11/modules")
		extra = []string{"HOME=" + home}
	}
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(mods, name+".module")
	if err := os.WriteFile(file, []byte("module: "+env.module+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(file) })
	out := run(t, "", extra, tool, "list-modules")
	i := strings.Index(out, name+": "+env.module+"\n")
	if i < 0 {
		t.Fatalf("p11-kit list-modules does not list the module of %s:\n%s", file, out)
	}
	block := out[i:]
	if j := regexp.MustCompile(`\n\S`).FindStringIndex(block); j != nil {
		block = block[:j[0]+1] // up to the next module
	}
	mustContain(t, "p11-kit list-modules", block, "library-manufacturer: pkcshsm", "library-version:", "token-initialized",
		"login-required")
	if !regexp.MustCompile(`(?m)^\s+token: ` + token + `$`).MatchString(block) {
		t.Errorf("p11-kit list-modules shows no token %q under the module:\n%s", token, block)
	}
}

func TestPyKCS11(t *testing.T) {
	py := "/usr/bin/python3" // Debian's python3-pykcs11 is for the system Python
	need(t, py)
	if _, err := runErr(t, "", nil, py, "-c", "import PyKCS11"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("PyKCS11 is not installed (python3-pykcs11)")
		}
		t.Skip("PyKCS11 is not installed (python3-pykcs11)")
	}
	out := run(t, userPIN+"\n", nil, py, filepath.Join(env.repo, "testdata/clients/p11conform.py"), env.module, token)
	for _, c := range []string{"aes-gcm-roundtrip", "aes-gcm-tampered-tag-refused", "aes-cbc-pad-roundtrip", "ecdsa-verifies",
		"ecdsa-other-digest-refused", "rsa-pss-verifies", "rsa-pss-other-data-refused", "rsa-oaep-roundtrip", "find-by-label",
		"get-attributes", "set-attribute-found-by-new-label", "unwrapped-key-decrypts", "unwrap-tampered-refused"} {
		if !regexp.MustCompile(`(?m)^ok ` + c + `$`).MatchString(out) {
			t.Errorf("PyKCS11 check %s did not pass:\n%s", c, out)
		}
	}
	mustContain(t, "p11conform.py", out, "p11conform: 26 checks passed")
}
