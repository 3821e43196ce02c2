package tokenlib

import (
	"encoding/binary"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// decodeFuzzTemplate turns fuzz bytes into a template: repeated
// (type uint32, len uint8, value) records.
func decodeFuzzTemplate(b []byte) []Attribute {
	var out []Attribute
	for len(b) >= 5 {
		typ := binary.BigEndian.Uint32(b)
		n := int(b[4])
		b = b[5:]
		n = min(n, len(b))
		out = append(out, Attribute{Type: ck.Attribute(typ), Value: b[:n]})
		b = b[n:]
	}
	return out
}

func encodeFuzzTemplate(attrs []Attribute) []byte {
	var out []byte
	for _, a := range attrs {
		out = binary.BigEndian.AppendUint32(out, uint32(a.Type))
		out = append(out, byte(len(a.Value)))
		out = append(out, a.Value...)
	}
	return out
}

// FuzzTemplate feeds arbitrary templates to template validation: it must
// never panic, and a template it accepts must keep exactly its values.
func FuzzTemplate(f *testing.F) {
	seeds := [][]Attribute{
		aesTemplate("k", true),
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, make([]byte, 16))},
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)), Bytes(ck.CKA_EC_PARAMS, oidP256), Bytes(ck.CKA_EC_POINT, []byte{4, 1})},
		{{Type: ck.CKA_TOKEN, Value: []byte{2}}},
		{String(ck.CKA_START_DATE, "20240101")},
	}
	for _, s := range seeds {
		f.Add(encodeFuzzTemplate(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs := decodeFuzzTemplate(b)
		tmpl, err := parseTemplate(attrs)
		if err != nil {
			if RV(err) == ck.CKR_OK {
				t.Fatal("error without CK_RV")
			}
			return
		}
		for _, a := range attrs {
			if string(tmpl[a.Type]) != string(a.Value) {
				t.Fatalf("%v changed", a.Type)
			}
		}
		if len(tmpl) != len(attrs) {
			t.Fatalf("%d attributes in, %d out", len(attrs), len(tmpl))
		}
		// Class checks and completion must not panic either.
		if c, err := checkClass(tmpl); err == nil {
			if checkAttrs(c, tmpl, nil) == nil && c == ck.CKO_PUBLIC_KEY {
				_ = completePublic(tmpl.clone())
			}
			_ = objectDefaults(tmpl.clone(), c)
		}
		o := &object{attrs: tmpl}
		_, _ = setAttrs(o, tmpl, false)
		_, _ = setAttrs(o, tmpl, true)
	})
}

// FuzzCreateObject runs arbitrary templates through CreateObject on a live
// CCA token (session objects, so the store does not grow): it must never
// panic, every failure must carry a CK_RV, and a created key never reveals
// a clear value.
func FuzzCreateObject(f *testing.F) {
	l, _ := newTestLib(f)
	h := userSession(f, l, slotCCA)
	p256, _ := ECParams("P-256")
	seeds := [][]Attribute{
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, make([]byte, 16))},
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)), Bytes(ck.CKA_EC_PARAMS, p256), Bytes(ck.CKA_VALUE, []byte{1, 2, 3})},
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)), Bytes(ck.CKA_MODULUS, []byte{0xc1, 5}), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{3}),
			Bytes(ck.CKA_PRIVATE_EXPONENT, []byte{7}), Bytes(ck.CKA_PRIME_1, []byte{11}), Bytes(ck.CKA_PRIME_2, []byte{13})},
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_RSA)), Bytes(ck.CKA_MODULUS, []byte{0xc1, 5}), Bytes(ck.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})},
		{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), String(ck.CKA_VALUE, "x")},
	}
	for _, s := range seeds {
		f.Add(encodeFuzzTemplate(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		attrs := append(decodeFuzzTemplate(b), Bool(ck.CKA_TOKEN, false))
		o, err := l.CreateObject(h, attrs)
		if err != nil {
			if RV(err) == ck.CKR_OK {
				t.Fatalf("error without CK_RV: %v", err)
			}
			return
		}
		defer l.DestroyObject(h, o)
		cls, err := l.GetAttributes(h, o, ck.CKA_CLASS)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := DecodeUlong(cls[0])
		if ck.ObjectClass(c) == ck.CKO_SECRET_KEY || ck.ObjectClass(c) == ck.CKO_PRIVATE_KEY {
			if _, err := l.GetAttributes(h, o, ck.CKA_VALUE); RV(err) != ck.CKR_ATTRIBUTE_SENSITIVE {
				t.Fatalf("key value readable: %v", err)
			}
		}
	})
}
