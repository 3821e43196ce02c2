package certobj

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
	"time"
)

// selfSigned makes a certificate with the given serial.
func selfSigned(t testing.TB, serial *big.Int) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "subject"},
		Issuer: pkix.Name{CommonName: "subject"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestParseX509: the derived attributes are the certificate's own DER
// fields, the serial a DER INTEGER that decodes back to the number.
func TestParseX509(t *testing.T) {
	for _, n := range []*big.Int{big.NewInt(1), big.NewInt(0x80), big.NewInt(0x7f), new(big.Int).Lsh(big.NewInt(1), 150)} {
		der := selfSigned(t, n)
		x, err := ParseX509(der)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		if !bytes.Equal(x.Subject, c.RawSubject) || !bytes.Equal(x.Issuer, c.RawIssuer) || !bytes.Equal(x.SPKI, c.RawSubjectPublicKeyInfo) {
			t.Fatal("derived names or key info differ from the certificate")
		}
		var back *big.Int
		if rest, err := asn1.Unmarshal(x.Serial, &back); err != nil || len(rest) != 0 || back.Cmp(n) != 0 {
			t.Fatalf("serial %x does not decode to %v (%v)", x.Serial, n, err)
		}
		if len(x.CheckValue) != 3 {
			t.Fatalf("check value %x", x.CheckValue)
		}
	}
	if _, err := ParseX509([]byte{0x30, 0x03, 0x02, 0x01, 0x01}); err == nil {
		t.Fatal("garbage accepted as a certificate")
	}
}

func TestDERIntegerNegative(t *testing.T) {
	for _, v := range []int64{-1, -128, -129, -40000} {
		var back *big.Int
		if _, err := asn1.Unmarshal(derInteger(big.NewInt(v)), &back); err != nil || back.Int64() != v {
			t.Fatalf("%d: %x decodes to %v (%v)", v, derInteger(big.NewInt(v)), back, err)
		}
	}
}

// FuzzParseX509: arbitrary bytes as CKA_VALUE never panic.
func FuzzParseX509(f *testing.F) {
	f.Add(selfSigned(f, big.NewInt(7)))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = ParseX509(b) })
}
