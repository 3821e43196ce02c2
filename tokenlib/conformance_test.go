package tokenlib

import (
	"bytes"
	"crypto"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestDES3ECBKnownAnswer: CKM_DES3_ECB with an imported key gives the
// ciphertext of Go's own triple DES, block by block.
func TestDES3ECBKnownAnswer(t *testing.T) {
	l, _ := newTestLib(t)
	key := []byte("0123456789abcdefghijklmn")
	data := []byte("sixteen bytes!!!eight by")
	blk, err := des.NewTripleDESCipher(key)
	must(t, err)
	want := make([]byte, len(data))
	for i := 0; i < len(data); i += 8 {
		blk.Encrypt(want[i:i+8], data[i:i+8])
	}
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		k, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_DES3)), Bytes(ck.CKA_VALUE, key)})
		must(t, err)
		must(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_DES3_ECB}, k))
		got := run(t, func(out []byte) (int, error) { return l.Encrypt(h, data, out) }, nil)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: DES3-ECB %x, want %x", slot.name(), got, want)
		}
		must(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_DES3_ECB}, k))
		_, err = l.Encrypt(h, data[:7], make([]byte, 64))
		wantRV(t, err, ck.CKR_DATA_LEN_RANGE)
		wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_DES3_ECB, Param: []byte{1}}, k), ck.CKR_MECHANISM_PARAM_INVALID)
	}
}

// TestConformanceReturnValues: the return values the outside conformance
// suite expects for key sizes and key types.
func TestConformanceReturnValues(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	// A 4-byte generic secret is outside CKM_GENERIC_SECRET_KEY_GEN's
	// key size range.
	_, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
		Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_GENERIC_SECRET)), Bytes(ck.CKA_VALUE, []byte{1, 2, 3, 4})})
	wantRV(t, err, ck.CKR_KEY_SIZE_RANGE)
	_, err = l.GenerateKey(h, Mechanism{Type: ck.CKM_GENERIC_SECRET_KEY_GEN}, []Attribute{Ulong(ck.CKA_VALUE_LEN, 4)})
	wantRV(t, err, ck.CKR_KEY_SIZE_RANGE)
	// CKM_RSA_PKCS with an AES key: the key's type is wrong, whatever
	// the mechanism does on this token.
	aes := genAES(t, l, h, "aes", false)
	for _, init := range []func(Mechanism, ObjectHandle) error{
		func(m Mechanism, k ObjectHandle) error { return l.EncryptInit(h, m, k) },
		func(m Mechanism, k ObjectHandle) error { return l.DecryptInit(h, m, k) },
		func(m Mechanism, k ObjectHandle) error { return l.SignInit(h, m, k) },
	} {
		wantRV(t, init(Mechanism{Type: ck.CKM_RSA_PKCS}, aes), ck.CKR_KEY_TYPE_INCONSISTENT)
	}
	// RSA 1024: verification with a 1024-bit public key works; making or
	// importing a 1024-bit private key is refused (strict default,
	// libpkcshsm(3)).
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	pub, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)),
		Bytes(ck.CKA_MODULUS, k.N.Bytes()), Bytes(ck.CKA_PUBLIC_EXPONENT, big.NewInt(int64(k.E)).Bytes())})
	must(t, err)
	msg := []byte("verified with RSA 1024")
	d := sha256.Sum256(msg)
	sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
	must(t, err)
	must(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, pub))
	must(t, l.Verify(h, msg, sig))
	must(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, pub))
	wantRV(t, l.Verify(h, []byte("other"), sig), ck.CKR_SIGNATURE_INVALID)
	_, _, err = l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN}, []Attribute{Ulong(ck.CKA_MODULUS_BITS, 1024)}, nil)
	wantRV(t, err, ck.CKR_KEY_SIZE_RANGE)
}
