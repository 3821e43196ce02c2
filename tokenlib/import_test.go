package tokenlib

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestImportedRSAKeySigns imports a clear RSA key and checks that the
// token's signature verifies with the Go public key: the import kept the
// right key.
func TestImportedRSAKeySigns(t *testing.T) {
	l, _ := newTestLib(t)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		priv, err := l.CreateObject(h, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)),
			Bytes(ck.CKA_MODULUS, k.N.Bytes()), Bytes(ck.CKA_PUBLIC_EXPONENT, big.NewInt(int64(k.E)).Bytes()),
			Bytes(ck.CKA_PRIVATE_EXPONENT, k.D.Bytes()), Bytes(ck.CKA_PRIME_1, k.Primes[0].Bytes()),
			Bytes(ck.CKA_PRIME_2, k.Primes[1].Bytes()), Bool(ck.CKA_TOKEN, true),
		})
		must(t, err)
		_, err = l.GetAttributes(h, priv, ck.CKA_PRIVATE_EXPONENT)
		wantRV(t, err, ck.CKR_ATTRIBUTE_SENSITIVE)
		msg := []byte("signed by an imported key")
		must(t, l.SignInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, priv))
		sig := run(t, func(out []byte) (int, error) { return l.Sign(h, msg, out) }, nil)
		d := sha256.Sum256(msg)
		if err := rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, d[:], sig); err != nil {
			t.Fatalf("%s: signature of the imported key does not verify: %v", slot.name(), err)
		}
		// A public key object made from the same components verifies too.
		pub, err := l.CreateObject(h, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)),
			Bytes(ck.CKA_MODULUS, k.N.Bytes()), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		})
		must(t, err)
		must(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, pub))
		must(t, l.Verify(h, msg, sig))
		// Broken components are refused.
		_, err = l.CreateObject(h, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)),
			Bytes(ck.CKA_MODULUS, k.N.Bytes()), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			Bytes(ck.CKA_PRIVATE_EXPONENT, k.D.Bytes()), Bytes(ck.CKA_PRIME_1, k.Primes[0].Bytes()),
			Bytes(ck.CKA_PRIME_2, []byte{7}),
		})
		wantRV(t, err, ck.CKR_ATTRIBUTE_VALUE_INVALID)
	}
}

// TestECSignatureInterop: token ECDSA signatures verify with Go, and a
// public key object created from the token's CKA_EC_POINT verifies them.
func TestECSignatureInterop(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotEP11)
	params, _ := ECParams("P-256")
	pub, priv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN}, []Attribute{Bytes(ck.CKA_EC_PARAMS, params)}, nil)
	must(t, err)
	msg := []byte("interop")
	must(t, l.SignInit(h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, priv))
	sig := run(t, func(out []byte) (int, error) { return l.Sign(h, msg, out) }, nil)
	pk, err := l.GetAttributes(h, pub, ck.CKA_PUBLIC_KEY_INFO)
	must(t, err)
	gk, err := publicKeyFromSPKI(pk[0])
	must(t, err)
	d := sha256.Sum256(msg)
	if !ecdsa.Verify(gk, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("Go does not verify the token's signature")
	}
	point, err := l.GetAttributes(h, pub, ck.CKA_EC_POINT)
	must(t, err)
	pub2, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)),
		Bytes(ck.CKA_EC_PARAMS, params), Bytes(ck.CKA_EC_POINT, point[0])})
	must(t, err)
	must(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, pub2))
	must(t, l.Verify(h, msg, sig))
	// Verification needs the public key; signing the private one.
	wantRV(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, priv), ck.CKR_KEY_TYPE_INCONSISTENT)
	wantRV(t, l.SignInit(h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, pub), ck.CKR_KEY_TYPE_INCONSISTENT)
}

func publicKeyFromSPKI(spki []byte) (*ecdsa.PublicKey, error) {
	o := &object{attrs: template{ck.CKA_PUBLIC_KEY_INFO: spki}}
	k, err := publicKeyOf(o)
	if err != nil {
		return nil, err
	}
	return k.(*ecdsa.PublicKey), nil
}

// TestFailedCreationsChangeNothing: refused key generation, unwrap and
// writes from the wrong session state leave the token as it was.
func TestFailedCreationsChangeNothing(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	kek := genAES(t, l, h, "kek", true)
	before := len(find(t, l, h))
	params, _ := ECParams("P-256")
	cases := []struct {
		name string
		do   func() error
		rv   ck.RV
	}{
		{"AES without length", func() error {
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, []Attribute{Bool(ck.CKA_TOKEN, true)})
			return err
		}, ck.CKR_TEMPLATE_INCOMPLETE},
		{"AES wrong class", func() error {
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, append(aesTemplate("x", true), Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA))))
			return err
		}, ck.CKR_TEMPLATE_INCONSISTENT},
		{"AES with value", func() error {
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, append(aesTemplate("x", true), Bytes(ck.CKA_VALUE, make([]byte, 32))))
			return err
		}, ck.CKR_TEMPLATE_INCONSISTENT},
		{"keygen with a pair mechanism", func() error {
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN}, aesTemplate("x", true))
			return err
		}, ck.CKR_MECHANISM_INVALID},
		{"keygen with a parameter", func() error {
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN, Param: []byte{1}}, aesTemplate("x", true))
			return err
		}, ck.CKR_MECHANISM_PARAM_INVALID},
		{"EC with an unknown curve", func() error {
			_, _, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN}, []Attribute{Bytes(ck.CKA_EC_PARAMS, []byte{6, 3, 1, 2, 3}), Bool(ck.CKA_TOKEN, true)}, []Attribute{Bool(ck.CKA_TOKEN, true)})
			return err
		}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"EC curves disagree", func() error {
			p384, _ := ECParams("P-384")
			_, _, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN}, []Attribute{Bytes(ck.CKA_EC_PARAMS, params), Bool(ck.CKA_TOKEN, true)}, []Attribute{Bytes(ck.CKA_EC_PARAMS, p384), Bool(ck.CKA_TOKEN, true)})
			return err
		}, ck.CKR_TEMPLATE_INCONSISTENT},
		{"RSA exponent 3", func() error {
			_, _, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN}, []Attribute{Ulong(ck.CKA_MODULUS_BITS, 2048), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{3}), Bool(ck.CKA_TOKEN, true)}, nil)
			return err
		}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"unwrap garbage", func() error {
			_, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, make([]byte, 40), []Attribute{
				Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bool(ck.CKA_TOKEN, true)})
			return err
		}, ck.CKR_WRAPPED_KEY_INVALID},
		{"unwrap short", func() error {
			_, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, make([]byte, 7), []Attribute{
				Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))})
			return err
		}, ck.CKR_WRAPPED_KEY_LEN_RANGE},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantRV(t, c.do(), c.rv) })
	}
	// Session state: R/O sessions cannot change token objects.
	ro, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	wantRV(t, l.SetAttributeValue(ro, kek, []Attribute{String(ck.CKA_LABEL, "changed")}), ck.CKR_SESSION_READ_ONLY)
	_, err = l.GenerateKey(ro, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("ro", true))
	wantRV(t, err, ck.CKR_SESSION_READ_ONLY)
	if got := string(getAttr(t, l, h, kek, ck.CKA_LABEL)); got != "kek" {
		t.Fatalf("label changed to %q", got)
	}
	if after := len(find(t, l, h)); after != before {
		t.Fatalf("%d objects after failures, want %d", after, before)
	}
}

// TestCheckValue: AES keys carry the standard check value, the same for an
// imported key as computed in software, and for a wrapped-and-unwrapped
// copy.
func TestCheckValue(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		key := bytes.Repeat([]byte{0x2b}, 16)
		o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, key)})
		must(t, err)
		c, _ := aes.NewCipher(key)
		want := make([]byte, 16)
		c.Encrypt(want, want)
		if got := getAttr(t, l, h, o, ck.CKA_CHECK_VALUE); !bytes.Equal(got, want[:3]) {
			t.Fatalf("%s: check value %x, want %x", slot.name(), got, want[:3])
		}
		g := genAES(t, l, h, "g", false)
		wrapped := run(t, func(out []byte) (int, error) { return l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, o, g, out) }, nil)
		u, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, o, wrapped, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))})
		must(t, err)
		if a, b := getAttr(t, l, h, g, ck.CKA_CHECK_VALUE), getAttr(t, l, h, u, ck.CKA_CHECK_VALUE); len(a) != 3 || !bytes.Equal(a, b) {
			t.Fatalf("%s: check values %x and %x", slot.name(), a, b)
		}
		d, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_DES3_KEY_GEN}, nil)
		must(t, err)
		if len(getAttr(t, l, h, d, ck.CKA_CHECK_VALUE)) != 3 {
			t.Fatal("DES3 key without check value")
		}
	}
}
