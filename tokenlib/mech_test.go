package tokenlib

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// run does a single-part operation with the length query first.
func run(t testing.TB, f func(out []byte) (int, error), in []byte) []byte {
	t.Helper()
	n, err := f(nil)
	must(t, err)
	if n > 0 {
		short := make([]byte, n-1)
		got, err := f(short)
		wantRV(t, err, ck.CKR_BUFFER_TOO_SMALL)
		if got != n {
			t.Fatalf("too-small call reported %d, want %d", got, n)
		}
	}
	out := make([]byte, n)
	m, err := f(out)
	must(t, err)
	return out[:m]
}

func TestSymmetricRoundTrips(t *testing.T) {
	l, _ := newTestLib(t)
	iv := bytes.Repeat([]byte{7}, 16)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		aes := genAES(t, l, h, "aes", false)
		des3, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_DES3_KEY_GEN}, []Attribute{String(ck.CKA_LABEL, "des3")})
		must(t, err)
		cases := []struct {
			name string
			mech Mechanism
			key  ObjectHandle
			data []byte
		}{
			{"AES-ECB", Mechanism{Type: ck.CKM_AES_ECB}, aes, bytes.Repeat([]byte("a"), 32)},
			{"AES-CBC", Mechanism{Type: ck.CKM_AES_CBC, Param: iv}, aes, bytes.Repeat([]byte("b"), 4096)},
			{"AES-CBC-PAD", Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, aes, []byte("odd length data!!")},
			{"AES-GCM", Mechanism{Type: ck.CKM_AES_GCM, Param: &GCMParams{IV: iv[:12], AAD: []byte("aad"), TagBits: 128}}, aes, []byte("gcm data")},
			{"DES3-CBC", Mechanism{Type: ck.CKM_DES3_CBC, Param: iv[:8]}, des3, bytes.Repeat([]byte("c"), 24)},
			{"DES3-ECB", Mechanism{Type: ck.CKM_DES3_ECB}, des3, bytes.Repeat([]byte("d"), 24)},
		}
		for _, c := range cases {
			t.Run(slot.name()+"/"+c.name, func(t *testing.T) {
				must(t, l.EncryptInit(h, c.mech, c.key))
				ct := run(t, func(out []byte) (int, error) { return l.Encrypt(h, c.data, out) }, c.data)
				must(t, l.DecryptInit(h, c.mech, c.key))
				pt := run(t, func(out []byte) (int, error) { return l.Decrypt(h, ct, out) }, ct)
				if !bytes.Equal(pt, c.data) || bytes.Equal(ct, c.data) {
					t.Fatalf("round trip failed")
				}
				// Multi-part gives the same result.
				must(t, l.EncryptInit(h, c.mech, c.key))
				ct2 := run(t, func(out []byte) (int, error) { return l.EncryptUpdate(h, c.data[:len(c.data)/2], out) }, nil)
				ct2 = append(ct2, run(t, func(out []byte) (int, error) { return l.EncryptUpdate(h, c.data[len(c.data)/2:], out) }, nil)...)
				ct2 = append(ct2, run(t, func(out []byte) (int, error) { return l.EncryptFinal(h, out) }, nil)...)
				if !bytes.Equal(ct2, ct) {
					t.Fatal("multi-part ciphertext differs from the single-part one")
				}
				must(t, l.DecryptInit(h, c.mech, c.key))
				pt2 := run(t, func(out []byte) (int, error) { return l.DecryptUpdate(h, ct2, out) }, nil)
				pt2 = append(pt2, run(t, func(out []byte) (int, error) { return l.DecryptFinal(h, out) }, nil)...)
				if !bytes.Equal(pt2, c.data) {
					t.Fatal("multi-part round trip failed")
				}
			})
		}
		t.Run(slot.name()+"/errors", func(t *testing.T) {
			_, err := l.Encrypt(h, []byte("x"), nil)
			wantRV(t, err, ck.CKR_OPERATION_NOT_INITIALIZED)
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_CBC, Param: iv[:3]}, aes), ck.CKR_MECHANISM_PARAM_INVALID)
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_DES3_CBC, Param: iv[:8]}, aes), ck.CKR_KEY_TYPE_INCONSISTENT)
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_MD5}, aes), ck.CKR_MECHANISM_INVALID)
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, 9999), ck.CKR_KEY_HANDLE_INVALID)
			must(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, aes))
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, aes), ck.CKR_OPERATION_ACTIVE)
			_, err = l.Encrypt(h, []byte("not a block"), nil)
			wantRV(t, err, ck.CKR_DATA_LEN_RANGE)
			// The error ended the operation.
			_, err = l.Encrypt(h, bytes.Repeat([]byte("a"), 16), nil)
			wantRV(t, err, ck.CKR_OPERATION_NOT_INITIALIZED)
			// GCM tag failure.
			gcm := Mechanism{Type: ck.CKM_AES_GCM, Param: &GCMParams{IV: iv[:12]}}
			must(t, l.EncryptInit(h, gcm, aes))
			ct := run(t, func(out []byte) (int, error) { return l.Encrypt(h, []byte("data"), out) }, nil)
			ct[0] ^= 1
			must(t, l.DecryptInit(h, gcm, aes))
			_, err = l.Decrypt(h, ct, nil)
			wantRV(t, err, ck.CKR_ENCRYPTED_DATA_INVALID)
			// A key without CKA_ENCRYPT.
			ne := genAES(t, l, h, "noenc", false, Bool(ck.CKA_ENCRYPT, false))
			wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, ne), ck.CKR_KEY_FUNCTION_NOT_PERMITTED)
		})
	}
}

func (s SlotID) name() string {
	if s == slotCCA {
		return "cca"
	}
	return "ep11"
}

func signVerify(t *testing.T, l *Library, h SessionHandle, m Mechanism, priv, pub ObjectHandle, data []byte) {
	t.Helper()
	must(t, l.SignInit(h, m, priv))
	sig := run(t, func(out []byte) (int, error) { return l.Sign(h, data, out) }, data)
	must(t, l.VerifyInit(h, m, pub))
	must(t, l.Verify(h, data, sig))
	bad := bytes.Clone(sig)
	bad[len(bad)/2] ^= 0x40
	must(t, l.VerifyInit(h, m, pub))
	wantRV(t, l.Verify(h, data, bad), ck.CKR_SIGNATURE_INVALID)
	must(t, l.VerifyInit(h, m, pub))
	wantRV(t, l.Verify(h, data, sig[:len(sig)-1]), ck.CKR_SIGNATURE_LEN_RANGE)
}

func TestAsymmetricAndHMAC(t *testing.T) {
	l, _ := newTestLib(t)
	msg := []byte("the quick brown fox")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		t.Run(slot.name()+"/EC", func(t *testing.T) {
			for _, curve := range []string{"P-256", "P-384"} {
				params, _ := ECParams(curve)
				pub, priv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
					[]Attribute{Bytes(ck.CKA_EC_PARAMS, params)}, []Attribute{String(ck.CKA_LABEL, "ec")})
				must(t, err)
				if len(getAttr(t, l, h, pub, ck.CKA_EC_POINT)) == 0 {
					t.Fatal("no EC point on the public key")
				}
				signVerify(t, l, h, Mechanism{Type: ck.CKM_ECDSA}, priv, pub, d256[:])
				signVerify(t, l, h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, priv, pub, msg)
				signVerify(t, l, h, Mechanism{Type: ck.CKM_ECDSA_SHA384}, priv, pub, msg)
			}
		})
		t.Run(slot.name()+"/RSA", func(t *testing.T) {
			pub, priv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN},
				[]Attribute{Ulong(ck.CKA_MODULUS_BITS, 2048), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})}, nil)
			must(t, err)
			if n := getAttr(t, l, h, pub, ck.CKA_MODULUS); len(n) != 256 {
				t.Fatalf("modulus %d bytes", len(n))
			}
			digestInfo := append([]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}, d256[:]...)
			signVerify(t, l, h, Mechanism{Type: ck.CKM_RSA_PKCS}, priv, pub, digestInfo)
			signVerify(t, l, h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, priv, pub, msg)
			pss := &PSSParams{Hash: ck.CKM_SHA256, MGF: ck.CKG_MGF1_SHA256, SaltLen: 32}
			signVerify(t, l, h, Mechanism{Type: ck.CKM_RSA_PKCS_PSS, Param: pss}, priv, pub, d256[:])
			signVerify(t, l, h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS_PSS, Param: pss}, priv, pub, msg)
			oaep := Mechanism{Type: ck.CKM_RSA_PKCS_OAEP, Param: &OAEPParams{Hash: ck.CKM_SHA256, MGF: ck.CKG_MGF1_SHA256, Source: ck.CKZ_DATA_SPECIFIED, SourceData: []byte("label")}}
			must(t, l.EncryptInit(h, oaep, pub))
			ct := run(t, func(out []byte) (int, error) { return l.Encrypt(h, msg, out) }, msg)
			must(t, l.DecryptInit(h, oaep, priv))
			pt := run(t, func(out []byte) (int, error) { return l.Decrypt(h, ct, out) }, ct)
			if !bytes.Equal(pt, msg) {
				t.Fatal("OAEP round trip failed")
			}
			// Multi-part hash-then-sign equals single-part.
			must(t, l.SignInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, priv))
			must(t, l.SignUpdate(h, msg[:5]))
			must(t, l.SignUpdate(h, msg[5:]))
			sig := run(t, func(out []byte) (int, error) { return l.SignFinal(h, out) }, nil)
			must(t, l.VerifyInit(h, Mechanism{Type: ck.CKM_SHA256_RSA_PKCS}, pub))
			must(t, l.VerifyUpdate(h, msg))
			must(t, l.VerifyFinal(h, sig))
			_, _, err = l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN}, []Attribute{Ulong(ck.CKA_MODULUS_BITS, 1024)}, nil)
			wantRV(t, err, ck.CKR_KEY_SIZE_RANGE)
			_, _, err = l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN}, nil, nil)
			wantRV(t, err, ck.CKR_TEMPLATE_INCOMPLETE)
		})
		t.Run(slot.name()+"/HMAC", func(t *testing.T) {
			k, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_GENERIC_SECRET_KEY_GEN}, []Attribute{Ulong(ck.CKA_VALUE_LEN, 32)})
			must(t, err)
			signVerify(t, l, h, Mechanism{Type: ck.CKM_SHA256_HMAC}, k, k, msg)
		})
		t.Run(slot.name()+"/digest", func(t *testing.T) {
			for m, want := range map[ck.Mechanism][]byte{ck.CKM_SHA256: d256[:], ck.CKM_SHA384: d384[:]} {
				must(t, l.DigestInit(h, Mechanism{Type: m}))
				got := run(t, func(out []byte) (int, error) { return l.Digest(h, msg, out) }, msg)
				if !bytes.Equal(got, want) {
					t.Fatalf("%v digest wrong", m)
				}
				must(t, l.DigestInit(h, Mechanism{Type: m}))
				must(t, l.DigestUpdate(h, msg[:3]))
				must(t, l.DigestUpdate(h, msg[3:]))
				if got := run(t, func(out []byte) (int, error) { return l.DigestFinal(h, out) }, nil); !bytes.Equal(got, want) {
					t.Fatalf("%v multi-part digest wrong", m)
				}
			}
			for _, m := range []ck.Mechanism{ck.CKM_SHA_1, ck.CKM_SHA512} {
				must(t, l.DigestInit(h, Mechanism{Type: m}))
				if got := run(t, func(out []byte) (int, error) { return l.Digest(h, msg, out) }, msg); len(got) == 0 {
					t.Fatal("empty digest")
				}
			}
		})
		t.Run(slot.name()+"/wrap", func(t *testing.T) {
			kek := genAES(t, l, h, "kek", false)
			target := genAES(t, l, h, "target", false)
			for _, m := range []ck.Mechanism{ck.CKM_AES_KEY_WRAP, ck.CKM_AES_KEY_WRAP_PAD} {
				wrapped := run(t, func(out []byte) (int, error) {
					return l.WrapKey(h, Mechanism{Type: m}, kek, target, out)
				}, nil)
				un, err := l.UnwrapKey(h, Mechanism{Type: m}, kek, wrapped, []Attribute{
					Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))})
				must(t, err)
				if getBool(t, l, h, un, ck.CKA_LOCAL) {
					t.Fatal("unwrapped key claims CKA_LOCAL")
				}
				// The unwrapped key is the same key.
				mech := Mechanism{Type: ck.CKM_AES_ECB}
				block := bytes.Repeat([]byte{9}, 16)
				must(t, l.EncryptInit(h, mech, target))
				c1 := run(t, func(out []byte) (int, error) { return l.Encrypt(h, block, out) }, nil)
				must(t, l.EncryptInit(h, mech, un))
				c2 := run(t, func(out []byte) (int, error) { return l.Encrypt(h, block, out) }, nil)
				if !bytes.Equal(c1, c2) {
					t.Fatalf("%v: unwrapped key differs", m)
				}
			}
			ne := genAES(t, l, h, "noextract", false, Bool(ck.CKA_EXTRACTABLE, false))
			_, err := l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, ne, nil)
			wantRV(t, err, ck.CKR_KEY_UNEXTRACTABLE)
		})
	}
}

func TestMechanismInfo(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		ms, err := l.GetMechanismList(slot)
		must(t, err)
		if len(ms) < 20 {
			t.Fatalf("only %d mechanisms", len(ms))
		}
		i, err := l.GetMechanismInfo(slot, ck.CKM_AES_KEY_GEN)
		must(t, err)
		if i.MinKeySize != 16 || i.MaxKeySize != 32 || i.Flags&ck.CKF_GENERATE == 0 || i.Flags&ck.CKF_HW == 0 {
			t.Fatalf("AES keygen info %+v", i)
		}
		i, err = l.GetMechanismInfo(slot, ck.CKM_RSA_PKCS_KEY_PAIR_GEN)
		must(t, err)
		if i.MinKeySize != 2048 || i.MaxKeySize != 4096 {
			t.Fatalf("RSA info %+v", i)
		}
		_, err = l.GetMechanismInfo(slot, ck.CKM_MD5)
		wantRV(t, err, ck.CKR_MECHANISM_INVALID)
	}
	cca, _ := l.GetMechanismInfo(slotCCA, ck.CKM_SHA256_HMAC)
	ep11, _ := l.GetMechanismInfo(slotEP11, ck.CKM_SHA256_HMAC)
	if cca.MaxKeySize == ep11.MaxKeySize {
		t.Error("HMAC key ranges should differ per token type")
	}
}

func TestImportedKeys(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	key := bytes.Repeat([]byte{0x5a}, 16)
	o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
		Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, key)})
	must(t, err)
	// Not made on the token, but sensitive from the moment it is an object
	// of the token (libpkcshsm(3), Key attributes).
	if getBool(t, l, h, o, ck.CKA_LOCAL) || !getBool(t, l, h, o, ck.CKA_ALWAYS_SENSITIVE) {
		t.Fatal("imported key: CKA_LOCAL must be FALSE, CKA_ALWAYS_SENSITIVE TRUE")
	}
	if n, _ := DecodeUlong(getAttr(t, l, h, o, ck.CKA_VALUE_LEN)); n != 16 {
		t.Fatalf("value len %d", n)
	}
	_, err = l.GetAttributes(h, o, ck.CKA_VALUE)
	wantRV(t, err, ck.CKR_ATTRIBUTE_SENSITIVE)
}
