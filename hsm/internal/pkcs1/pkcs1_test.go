package pkcs1

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1"
	"crypto/sha256"
	_ "crypto/sha512"
	"testing"
)

// A signature over DigestInfo with no hash (raw PKCS#1 v1.5) must verify
// as a signature over the digest with the hash: the prefixes are right.
func TestDigestInfoMatchesStandardLibrary(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		d := h.New()
		d.Write([]byte("message"))
		digest := d.Sum(nil)
		di, ok := DigestInfo(h, digest)
		if !ok {
			t.Fatalf("%v unsupported", h)
		}
		sig, err := rsa.SignPKCS1v15(nil, k, 0, di)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(&k.PublicKey, h, digest, sig); err != nil {
			t.Errorf("%v: %v", h, err)
		}
	}
	if _, ok := DigestInfo(crypto.SHA256, make([]byte, 20)); ok {
		t.Error("wrong digest length accepted")
	}
	_ = sha256.New
}
