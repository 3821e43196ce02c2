package cca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func TestRuleArray(t *testing.T) {
	got := ruleArray("AES", "KEYIDENT", "ECB")
	if want := []byte("AES     KEYIDENTECB     "); !bytes.Equal(got, want) {
		t.Fatalf("ruleArray = %q, want %q", got, want)
	}
}

func TestRegStates(t *testing.T) {
	n, c, o, err := regStates("x", "STATAES", []byte("3       2       1       "))
	if err != nil || n != apqn.StateFull || c != apqn.StateValid || o != apqn.StateInvalid {
		t.Fatalf("= %v %v %v %v", n, c, o, err)
	}
	n, _, _, err = regStates("x", "STATAES", []byte("2\x00\x00\x00\x00\x00\x00\x001       1       "))
	if err != nil || n != apqn.StatePartial {
		t.Fatalf("NUL-padded element: %v %v", n, err)
	}
	for _, bad := range []string{"4       2       2       ", "3       3       2       ", "3       2       ", "x       2       2       "} {
		if _, _, _, err := regStates("APQN 01.0002", "STATAES", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		} else if errclass.Of(err) != errclass.Internal {
			t.Errorf("%q: class %s", bad, errclass.Of(err))
		}
	}
}

func TestSTATICSB(t *testing.T) {
	data := make([]byte, 240)
	put := func(at int, id uint16, v []byte) {
		binary.BigEndian.PutUint16(data[at:], id)
		copy(data[at+2:], v)
	}
	put(134, 0x0F07, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	put(182, 0x0F0B, []byte{8, 7, 6, 5, 4, 3, 2, 1})
	e := staticsbIDs[mkvp.CCASYM]
	if v, ok := staticsbValue(data, e.cur); !ok || !bytes.Equal(v, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("SYM CMK = %x %v", v, ok)
	}
	if v, ok := staticsbValue(data, staticsbIDs[mkvp.CCAAES].cur); !ok || !bytes.Equal(v, []byte{8, 7, 6, 5, 4, 3, 2, 1}) {
		t.Fatalf("AES CMK = %x %v", v, ok)
	}
	// A wrong ID at the offset, or data too short, is no value.
	if _, ok := staticsbValue(data, e.nw); ok {
		t.Fatal("SYM NMK found where the ID is 0")
	}
	if _, ok := staticsbValue(data[:140], e.cur); ok {
		t.Fatal("value past the end of the data")
	}
	if _, err := pattern8("x", mkvp.CCAAES, 0x0F0B, make([]byte, 16)); err == nil {
		t.Error("16-byte MKVP accepted")
	}
}

func externalToken(sections ...[]byte) []byte {
	tok := []byte{0x1E, 0, 0, 0, 0, 0, 0, 0}
	for _, s := range sections {
		tok = append(tok, s...)
	}
	binary.BigEndian.PutUint16(tok[2:], uint16(len(tok)))
	return tok
}

func TestSPKIOfRSA(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := []byte{1, 0, 1}
	n := k.N.Bytes()
	s := make([]byte, 12)
	s[0] = 0x04
	binary.BigEndian.PutUint16(s[6:], uint16(len(e)))
	binary.BigEndian.PutUint16(s[8:], 2048)
	binary.BigEndian.PutUint16(s[10:], uint16(len(n)))
	s = append(append(s, e...), n...)
	binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
	// A section the parser must skip comes first.
	other := []byte{0x99, 0, 0, 6, 1, 2}
	der, err := spkiOf(externalToken(other, s), 0)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if !bytes.Equal(der, want) {
		t.Fatal("RSA SPKI differs from the key's")
	}
	s[11]++ // modulus length past the section
	if _, err := spkiOf(externalToken(s), 0); err == nil {
		t.Fatal("modulus past the section accepted")
	}
}

func TestSPKIOfEC(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k, _ := ecdsa.GenerateKey(curve, rand.Reader)
		q, _ := k.PublicKey.Bytes()
		s := make([]byte, 14)
		s[0] = 0x21
		binary.BigEndian.PutUint16(s[12:], uint16(len(q)))
		s = append(s, q...)
		binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
		der, err := spkiOf(externalToken(s), curve.Params().BitSize)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if !bytes.Equal(der, want) {
			t.Fatalf("%s SPKI differs", curve.Params().Name)
		}
		q[len(q)-1] ^= 1 // off the curve
		copy(s[14:], q)
		if _, err := spkiOf(externalToken(s), curve.Params().BitSize); err == nil {
			t.Fatal("point off the curve accepted")
		}
	}
	if _, err := spkiOf([]byte{0x1F, 0, 0, 8, 0, 0, 0, 0}, 256); err == nil {
		t.Fatal("internal token accepted as public")
	}
}

func TestCodeError(t *testing.T) {
	for _, tc := range []struct {
		verb     string
		c        Codes
		sentinel error
		class    errclass.Class
	}{
		{"CSNBSAE", Codes{8, 48}, hsm.ErrWrongMK, errclass.FailedPrecondition},
		{"CSNDDSV", Codes{4, 429}, hsm.ErrSignature, errclass.InvalidArgument},
		{"CSNDDSV", Codes{8, 72}, hsm.ErrSignature, errclass.InvalidArgument},
		{"CSNBSAE", Codes{8, 72}, nil, errclass.Internal},
		{"CSNBHMV", Codes{4, 1}, hsm.ErrSignature, errclass.InvalidArgument},
		{"CSNBSAD", Codes{8, 2947}, hsm.ErrBadData, errclass.InvalidArgument},
		{"CSNBSAE", Codes{8, 29}, hsm.ErrBadBlob, errclass.InvalidArgument},
		{"CSNBKTC2", Codes{12, 93}, hsm.ErrOffline, errclass.Unavailable},
		{"CSNBKGN2", Codes{8, 90}, nil, errclass.PermissionDenied},
		{"CSNBKGN2", Codes{8, 33}, nil, errclass.Internal},
		{"CSNBKGN2", Codes{8, 9999}, nil, errclass.Internal},
	} {
		err := codeError(tc.verb, "APQN 01.0002", tc.c)
		if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
			t.Errorf("%s %v: %v, want %v", tc.verb, tc.c, err, tc.sentinel)
		}
		if errclass.Of(err) != tc.class {
			t.Errorf("%s %v: class %s, want %s", tc.verb, tc.c, errclass.Of(err), tc.class)
		}
		msg := err.Error()
		for _, want := range []string{tc.verb, "APQN 01.0002", "return code", "reason code"} {
			if !bytes.Contains([]byte(msg), []byte(want)) {
				t.Errorf("%q lacks %q", msg, want)
			}
		}
	}
}

func TestMergeDisagreement(t *testing.T) {
	q := apqn.MustParse("01.0033")
	p1, _ := mkvp.New([]byte{1, 1, 1, 1, 1, 1, 1, 1})
	p2, _ := mkvp.New([]byte{2, 2, 2, 2, 2, 2, 2, 2})
	sys, err := apqn.ParseMKVPs([]byte("AES NEW: empty 0x0000000000000000\nAES CUR: valid 0x0101010101010101\nAES OLD: invalid 0x0000000000000000\n" +
		"APKA NEW: empty 0x0000000000000000\nAPKA CUR: valid 0x0202020202020202\nAPKA OLD: invalid 0x0000000000000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	lib := map[mkvp.Type]hsm.Registers{
		mkvp.CCAAES:  {New: hsm.Register{State: apqn.StateEmpty}, Current: hsm.Register{State: apqn.StateValid, Pattern: p1}, Old: hsm.Register{State: apqn.StateInvalid}},
		mkvp.CCAAPKA: {New: hsm.Register{State: apqn.StateEmpty}, Current: hsm.Register{State: apqn.StateValid, Pattern: p2}, Old: hsm.Register{State: apqn.StateInvalid}},
	}
	out := map[mkvp.Type]hsm.Registers{}
	if err := merge(q, lib, sys, out); err != nil {
		t.Fatalf("agreeing views: %v", err)
	}
	if out[mkvp.CCAAES].Current.Pattern != p1 || out[mkvp.CCAAPKA].Current.Pattern != p2 {
		t.Fatalf("merged %+v", out)
	}
	r := lib[mkvp.CCAAPKA]
	r.Current.Pattern = p1 // the library says APKA CURRENT is 0101...
	lib[mkvp.CCAAPKA] = r
	err = merge(q, lib, sys, map[mkvp.Type]hsm.Registers{})
	if err == nil || errclass.Of(err) != errclass.FailedPrecondition {
		t.Fatalf("disagreement: %v", err)
	}
	for _, want := range []string{"01.0033", "CSUACFQ", "APKA", "CURRENT", "0101010101010101", "0202020202020202"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
