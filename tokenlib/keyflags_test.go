package tokenlib

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// wantFlags checks the protection flags of a secret or private key against
// what the token really does with it.
func wantFlags(t *testing.T, l *Library, h SessionHandle, o ObjectHandle, what string, extractable bool) {
	t.Helper()
	for a, want := range map[ck.Attribute]bool{
		ck.CKA_SENSITIVE: true, ck.CKA_ALWAYS_SENSITIVE: true,
		ck.CKA_EXTRACTABLE: extractable, ck.CKA_NEVER_EXTRACTABLE: !extractable,
	} {
		if got := getBool(t, l, h, o, a); got != want {
			t.Errorf("%s: %v = %v, want %v", what, a, got, want)
		}
	}
}

// TestKeyFlagsTellTheTruth: whatever the template left out, every secret
// and private key says it is sensitive (its clear value is never readable),
// CKA_EXTRACTABLE says whether C_WrapKey really wraps it, and the public
// components stay readable. Templates asking for what the token cannot do
// are refused with CKR_ATTRIBUTE_VALUE_INVALID and create nothing.
func TestKeyFlagsTellTheTruth(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		name := slot.name()

		// Secret keys: generated without any flag, extractable by default,
		// and C_WrapKey agrees with the flag both ways.
		aes := genAES(t, l, h, "plain", false)
		wantFlags(t, l, h, aes, name+" AES default", true)
		locked := genAES(t, l, h, "locked", false, Bool(ck.CKA_EXTRACTABLE, false))
		wantFlags(t, l, h, locked, name+" AES non-extractable", false)
		kek := genAES(t, l, h, "kek", false)
		n, err := l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, aes, nil)
		must(t, err)
		_, err = l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, aes, make([]byte, n))
		must(t, err)
		_, err = l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, locked, make([]byte, n))
		wantRV(t, err, ck.CKR_KEY_UNEXTRACTABLE)
		_, err = l.GetAttributes(h, aes, ck.CKA_VALUE)
		wantRV(t, err, ck.CKR_ATTRIBUTE_SENSITIVE)

		// Imported secret key: sensitive from the moment it is on the token.
		imp, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, make([]byte, 16))})
		must(t, err)
		wantFlags(t, l, h, imp, name+" imported AES", true)

		// Key pairs generated without CKA_SENSITIVE (what Java's
		// keytool and NSS's certutil send): the private key is sensitive
		// and not extractable; the public components are readable on
		// both halves.
		ecPub, ecPriv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
			[]Attribute{Bytes(ck.CKA_EC_PARAMS, oidP256)}, []Attribute{Bool(ck.CKA_SIGN, true)})
		must(t, err)
		wantFlags(t, l, h, ecPriv, name+" EC private", false)
		if string(getAttr(t, l, h, ecPriv, ck.CKA_EC_PARAMS)) != string(oidP256) {
			t.Errorf("%s: EC private key CKA_EC_PARAMS is not the curve", name)
		}
		var point []byte
		if _, err := asn1.Unmarshal(getAttr(t, l, h, ecPub, ck.CKA_EC_POINT), &point); err != nil || len(point) != 65 || point[0] != 4 {
			t.Errorf("%s: CKA_EC_POINT is not a DER OCTET STRING of an uncompressed P-256 point (%v)", name, err)
		}
		_, err = l.GetAttributes(h, ecPriv, ck.CKA_VALUE)
		wantRV(t, err, ck.CKR_ATTRIBUTE_SENSITIVE)

		rsaPub, rsaPriv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_RSA_PKCS_KEY_PAIR_GEN},
			[]Attribute{Ulong(ck.CKA_MODULUS_BITS, 2048)}, nil)
		must(t, err)
		wantFlags(t, l, h, rsaPriv, name+" RSA private", false)
		for _, o := range []ObjectHandle{rsaPub, rsaPriv} {
			v, err := l.GetAttributes(h, o, ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT)
			must(t, err)
			if len(v[0]) != 256 || string(v[1]) != "\x01\x00\x01" {
				t.Errorf("%s: RSA object %d: modulus %d bytes, exponent %x", name, o, len(v[0]), v[1])
			}
		}
		for _, a := range []ck.Attribute{ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_COEFFICIENT} {
			_, err = l.GetAttributes(h, rsaPriv, a)
			wantRV(t, err, ck.CKR_ATTRIBUTE_SENSITIVE)
		}

		// Imported EC private key: the same flags.
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		d, err := k.Bytes()
		must(t, err)
		ecImp, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)), Bytes(ck.CKA_EC_PARAMS, oidP256), Bytes(ck.CKA_VALUE, d)})
		must(t, err)
		wantFlags(t, l, h, ecImp, name+" imported EC private", false)

		// A template asking CKA_SENSITIVE FALSE gets a sensitive key all
		// the same (the documented override); a private key asked
		// extractable is refused and leaves no object.
		insensitive := Bool(ck.CKA_SENSITIVE, false)
		kg, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("x", false, insensitive))
		must(t, err)
		wantFlags(t, l, h, kg, name+" AES asked insensitive", true)
		_, kp, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
			[]Attribute{Bytes(ck.CKA_EC_PARAMS, oidP256)}, []Attribute{insensitive})
		must(t, err)
		wantFlags(t, l, h, kp, name+" EC private asked insensitive", false)
		ki, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, make([]byte, 16)), insensitive})
		must(t, err)
		wantFlags(t, l, h, ki, name+" imported AES asked insensitive", true)
		wrapped := make([]byte, n)
		_, err = l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, aes, wrapped)
		must(t, err)
		ku, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, wrapped, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), insensitive})
		must(t, err)
		wantFlags(t, l, h, ku, name+" unwrapped AES asked insensitive", true)
		before := len(find(t, l, h))
		_, _, err = l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
			[]Attribute{Bytes(ck.CKA_EC_PARAMS, oidP256)}, []Attribute{Bool(ck.CKA_EXTRACTABLE, true)})
		wantRV(t, err, ck.CKR_ATTRIBUTE_VALUE_INVALID)
		if after := len(find(t, l, h)); after != before {
			t.Errorf("%s: refused templates left %d objects", name, after-before)
		}
		// The unwrapped key itself gets the true flags too.
		uw, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, kek, wrapped, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))})
		must(t, err)
		wantFlags(t, l, h, uw, name+" unwrapped AES", true)
		// A private key stays non-extractable.
		wantRV(t, l.SetAttributeValue(h, ecPriv, []Attribute{Bool(ck.CKA_EXTRACTABLE, true)}), ck.CKR_ATTRIBUTE_READ_ONLY)
		// Making a secret key non-extractable later keeps NEVER_EXTRACTABLE false.
		must(t, l.SetAttributeValue(h, aes, []Attribute{Bool(ck.CKA_EXTRACTABLE, false)}))
		if getBool(t, l, h, aes, ck.CKA_EXTRACTABLE) || getBool(t, l, h, aes, ck.CKA_NEVER_EXTRACTABLE) {
			t.Errorf("%s: extractable key made non-extractable later: flags wrong", name)
		}
	}
}

// TestKeyFlagsViewOfOldKeys: keys stored before the engine set the flags
// (CKA_SENSITIVE FALSE, a private key CKA_EXTRACTABLE TRUE) are reported
// as the token treats them.
func TestKeyFlagsViewOfOldKeys(t *testing.T) {
	priv := &object{attrs: template{ck.CKA_CLASS: ulongBytes(uint(ck.CKO_PRIVATE_KEY)),
		ck.CKA_SENSITIVE: boolBytes(false), ck.CKA_EXTRACTABLE: boolBytes(true),
		ck.CKA_ALWAYS_SENSITIVE: boolBytes(false), ck.CKA_NEVER_EXTRACTABLE: boolBytes(false)}}
	v := keyFlagsView(priv)
	for a, want := range map[ck.Attribute]bool{ck.CKA_SENSITIVE: true, ck.CKA_ALWAYS_SENSITIVE: true,
		ck.CKA_EXTRACTABLE: false, ck.CKA_NEVER_EXTRACTABLE: false} {
		if got, _ := DecodeBool(v[a]); got != want {
			t.Errorf("old private key: %v = %v, want %v", a, got, want)
		}
	}
	sec := &object{attrs: template{ck.CKA_CLASS: ulongBytes(uint(ck.CKO_SECRET_KEY)),
		ck.CKA_EXTRACTABLE: boolBytes(true), ck.CKA_NEVER_EXTRACTABLE: boolBytes(true)}}
	if got, _ := DecodeBool(keyFlagsView(sec)[ck.CKA_NEVER_EXTRACTABLE]); got {
		t.Error("extractable secret key reported NEVER_EXTRACTABLE")
	}
	if keyFlagsView(&object{attrs: template{ck.CKA_CLASS: ulongBytes(uint(ck.CKO_PUBLIC_KEY))}}) != nil {
		t.Error("public keys have no protection flags")
	}
}
