package tokenlib

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func testCert(t testing.TB, cn string, serial int64) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	must(t, err)
	c, err := x509.ParseCertificate(der)
	must(t, err)
	return c
}

// certTemplate is what NSS's certutil and Java's keytool send (less the
// names the token derives).
func certTemplate(c *x509.Certificate, label string, extra ...Attribute) []Attribute {
	return append([]Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)),
		Ulong(ck.CKA_CERTIFICATE_TYPE, uint(ck.CKC_X_509)), Bool(ck.CKA_TOKEN, true),
		String(ck.CKA_LABEL, label), Bytes(ck.CKA_ID, []byte(label)), Bytes(ck.CKA_VALUE, c.Raw)}, extra...)
}

// TestCertificateObjects: certificates are stored, searched, read without
// login, copied and changed like other objects; what the token derives is
// the certificate's own DER; bad templates are refused with the
// specification's codes.
func TestCertificateObjects(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		c := testCert(t, "server-"+slot.name(), 4242)
		o, err := l.CreateObject(h, certTemplate(c, "srv"))
		must(t, err)
		if ObjectHandle(o) >= sessionObjectBase {
			t.Fatal("a CKA_TOKEN certificate became a session object")
		}
		v, err := l.GetAttributes(h, o, ck.CKA_VALUE, ck.CKA_SUBJECT, ck.CKA_ISSUER, ck.CKA_SERIAL_NUMBER,
			ck.CKA_CHECK_VALUE, ck.CKA_PUBLIC_KEY_INFO, ck.CKA_PRIVATE, ck.CKA_TRUSTED, ck.CKA_CERTIFICATE_CATEGORY)
		must(t, err)
		sum := sha1.Sum(c.Raw)
		serial := []byte{0x02, 0x02, 0x10, 0x92} // DER INTEGER 4242
		for i, want := range [][]byte{c.Raw, c.RawSubject, c.RawIssuer, serial, sum[:3], c.RawSubjectPublicKeyInfo,
			{0}, {0}, ulongBytes(0)} {
			if !bytes.Equal(v[i], want) {
				t.Errorf("%s: attribute %d = %x, want %x", slot.name(), i, v[i], want)
			}
		}

		// Public: another session of the token reads and finds it without
		// logging in (after the user logs out).
		must(t, l.Logout(h))
		ro, err := l.OpenSession(slot, ck.CKF_SERIAL_SESSION)
		must(t, err)
		if got := find(t, l, ro, Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)), Bytes(ck.CKA_ISSUER, c.RawIssuer),
			Bytes(ck.CKA_SERIAL_NUMBER, serial)); len(got) != 1 || got[0] != o {
			t.Fatalf("%s: search by issuer and serial found %v, want [%d]", slot.name(), got, o)
		}
		val := getAttr(t, l, ro, o, ck.CKA_VALUE)
		if !bytes.Equal(val, c.Raw) {
			t.Fatalf("%s: certificate not readable without login", slot.name())
		}
		h = userSession(t, l, slot)

		// Copy: same certificate, new label; a session copy.
		cp, err := l.CopyObject(h, o, []Attribute{String(ck.CKA_LABEL, "copy"), Bool(ck.CKA_TOKEN, false)})
		must(t, err)
		if !bytes.Equal(getAttr(t, l, h, cp, ck.CKA_VALUE), c.Raw) || string(getAttr(t, l, h, cp, ck.CKA_LABEL)) != "copy" {
			t.Fatalf("%s: copy differs", slot.name())
		}
		// Change: names yes, the certificate itself no.
		must(t, l.SetAttributeValue(h, o, []Attribute{String(ck.CKA_LABEL, "renamed"), Bytes(ck.CKA_ID, []byte{1, 2}),
			Ulong(ck.CKA_CERTIFICATE_CATEGORY, 1)}))
		other := testCert(t, "other", 1)
		wantRV(t, l.SetAttributeValue(h, o, []Attribute{Bytes(ck.CKA_VALUE, other.Raw)}), ck.CKR_ATTRIBUTE_READ_ONLY)
		wantRV(t, l.SetAttributeValue(h, o, []Attribute{Ulong(ck.CKA_CERTIFICATE_CATEGORY, 9)}), ck.CKR_ATTRIBUTE_VALUE_INVALID)
		// CKA_TRUSTED TRUE is the security officer's.
		wantRV(t, l.SetAttributeValue(h, o, []Attribute{Bool(ck.CKA_TRUSTED, true)}), ck.CKR_ATTRIBUTE_READ_ONLY)
		if !bytes.Equal(getAttr(t, l, h, o, ck.CKA_VALUE), c.Raw) {
			t.Fatal("refused change altered the certificate")
		}

		// Refused templates create nothing.
		before := len(find(t, l, h))
		for _, bad := range []struct {
			name string
			tmpl []Attribute
			rv   ck.RV
		}{
			{"no type", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)), Bytes(ck.CKA_VALUE, c.Raw)}, ck.CKR_TEMPLATE_INCOMPLETE},
			{"WTLS", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)), Ulong(ck.CKA_CERTIFICATE_TYPE, uint(ck.CKC_WTLS)),
				Bytes(ck.CKA_VALUE, c.Raw)}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
			{"no value", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)), Ulong(ck.CKA_CERTIFICATE_TYPE, uint(ck.CKC_X_509))}, ck.CKR_TEMPLATE_INCOMPLETE},
			{"garbage", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_CERTIFICATE)), Ulong(ck.CKA_CERTIFICATE_TYPE, uint(ck.CKC_X_509)),
				Bytes(ck.CKA_VALUE, []byte("not a certificate"))}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
			{"category", certTemplate(c, "x", Ulong(ck.CKA_CERTIFICATE_CATEGORY, 4)), ck.CKR_ATTRIBUTE_VALUE_INVALID},
			{"check value", certTemplate(c, "x", Bytes(ck.CKA_CHECK_VALUE, []byte{1, 2, 3})), ck.CKR_ATTRIBUTE_READ_ONLY},
			{"modulus", certTemplate(c, "x", Bytes(ck.CKA_MODULUS, []byte{1})), ck.CKR_ATTRIBUTE_TYPE_INVALID},
			{"trusted by user", certTemplate(c, "x", Bool(ck.CKA_TRUSTED, true)), ck.CKR_ATTRIBUTE_READ_ONLY},
		} {
			_, err := l.CreateObject(h, bad.tmpl)
			if RV(err) != bad.rv {
				t.Errorf("%s: %s: got %v (%v), want %v", slot.name(), bad.name, RV(err), err, bad.rv)
			}
		}
		if after := len(find(t, l, h)); after != before {
			t.Errorf("%s: refused certificates left %d objects", slot.name(), after-before)
		}
		must(t, l.DestroyObject(h, cp))
	}
}

// TestTrustedCertificateBySO: the security officer may store a trusted
// certificate (a root for the token's users).
func TestTrustedCertificateBySO(t *testing.T) {
	l, _ := newTestLib(t)
	h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	must(t, l.Login(h, ck.CKU_SO, []byte(soPIN)))
	o, err := l.CreateObject(h, certTemplate(testCert(t, "root", 1), "root", Bool(ck.CKA_TRUSTED, true),
		Ulong(ck.CKA_CERTIFICATE_CATEGORY, 2)))
	must(t, err)
	if !getBool(t, l, h, o, ck.CKA_TRUSTED) {
		t.Fatal("SO could not mark the certificate trusted")
	}
}

// TestNSSTrustObjects: NSS's trust objects are stored, found by issuer
// and serial, and their trust settings changed; values that are not
// CK_TRUST values are refused.
func TestNSSTrustObjects(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	c := testCert(t, "trusted", 77)
	sha := sha1.Sum(c.Raw)
	tmpl := []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_NSS_TRUST)), Bool(ck.CKA_TOKEN, true),
		Bytes(ck.CKA_ISSUER, c.RawIssuer), Bytes(ck.CKA_SERIAL_NUMBER, []byte{2, 1, 77}), Bytes(ck.CKA_CERT_SHA1_HASH, sha[:]),
		Ulong(ck.CKA_TRUST_SERVER_AUTH, ck.CKT_NSS_TRUSTED_DELEGATOR), Ulong(ck.CKA_TRUST_CLIENT_AUTH, ck.CKT_NSS_MUST_VERIFY_TRUST),
		Bool(ck.CKA_TRUST_STEP_UP_APPROVED, false)}
	o, err := l.CreateObject(h, tmpl)
	must(t, err)
	got := find(t, l, h, Ulong(ck.CKA_CLASS, uint(ck.CKO_NSS_TRUST)), Bytes(ck.CKA_ISSUER, c.RawIssuer), Bytes(ck.CKA_SERIAL_NUMBER, []byte{2, 1, 77}))
	if len(got) != 1 || got[0] != o {
		t.Fatalf("trust search found %v", got)
	}
	must(t, l.SetAttributeValue(h, o, []Attribute{Ulong(ck.CKA_TRUST_SERVER_AUTH, ck.CKT_NSS_TRUSTED)}))
	if v, _ := DecodeUlong(getAttr(t, l, h, o, ck.CKA_TRUST_SERVER_AUTH)); v != ck.CKT_NSS_TRUSTED {
		t.Fatalf("server auth trust %#x", v)
	}
	wantRV(t, l.SetAttributeValue(h, o, []Attribute{Ulong(ck.CKA_TRUST_SERVER_AUTH, 7)}), ck.CKR_ATTRIBUTE_VALUE_INVALID)
	_, err = l.CreateObject(h, append(tmpl[:len(tmpl):len(tmpl)], Bytes(ck.CKA_VALUE, c.Raw)))
	wantRV(t, err, ck.CKR_ATTRIBUTE_TYPE_INVALID)
}

// TestDataObjectValueChanges: a data object's CKA_VALUE may change, by
// C_SetAttributeValue and in C_CopyObject (PKCS#11 v2.40 §4.5).
func TestDataObjectValueChanges(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), Bytes(ck.CKA_VALUE, []byte("one"))})
	must(t, err)
	cp, err := l.CopyObject(h, o, []Attribute{Bytes(ck.CKA_VALUE, []byte("two"))})
	must(t, err)
	must(t, l.SetAttributeValue(h, o, []Attribute{Bytes(ck.CKA_VALUE, []byte("three"))}))
	if a, b := string(getAttr(t, l, h, o, ck.CKA_VALUE)), string(getAttr(t, l, h, cp, ck.CKA_VALUE)); a != "three" || b != "two" {
		t.Fatalf("values %q %q", a, b)
	}
	// A key's CKA_VALUE stays key material: never set, never copied in.
	k := genAES(t, l, h, "k", false)
	_, err = l.CopyObject(h, k, []Attribute{Bytes(ck.CKA_VALUE, make([]byte, 32))})
	wantRV(t, err, ck.CKR_ATTRIBUTE_READ_ONLY)
}

// TestCertificatesSkipMasterKeyChange: the token-object passes of a
// master key change leave certificates and trust objects alone (no secure
// key inside), while the keys next to them are re-enciphered.
func TestCertificatesSkipMasterKeyChange(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	app := newMKLib(t, layout, slotEP11)
	h := userSession(t, app, slotEP11)
	cur := currentMK(t, o, ep11q, mkvp.EP11WK)
	key := genAES(t, app, h, "key", true)
	c := testCert(t, "srv", 5)
	certH, err := app.CreateObject(h, certTemplate(c, "srv"))
	must(t, err)
	trustH, err := app.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_NSS_TRUST)), Bool(ck.CKA_TOKEN, true),
		Bytes(ck.CKA_ISSUER, c.RawIssuer), Ulong(ck.CKA_TRUST_SERVER_AUTH, ck.CKT_NSS_TRUSTED)})
	must(t, err)
	snapshot := func() [][]byte {
		var all [][]byte
		for _, oh := range []ObjectHandle{certH, trustH} {
			tok, err := app.token(slotEP11)
			must(t, err)
			tok.mu.Lock()
			ob, err := tok.objectLocked(ctx, oh)
			tok.mu.Unlock()
			must(t, err)
			all = append(all, []byte{byte(ob.version)})
			for _, a := range sortedAttrs(ob.attrs) {
				all = append(all, ulongBytes(uint(a)), ob.attrs[a])
			}
		}
		return all
	}
	before := snapshot()

	newP := loadNew(t, o, mkvp.EP11WK, ep11q)
	d := opsDir(t, layout)
	op := createOp(t, d, mkvp.EP11WK, newP, state.Reenciphered, ep11q)
	tool := openMKLib(t, layout)
	userSession(t, tool, slotEP11)
	n, err := tool.MKChangePass(ctx, slotEP11, op, state.ActReencipher, nil)
	must(t, err)
	if n != 1 {
		t.Fatalf("the pass re-enciphered %d token objects, want 1 (the key only)", n)
	}
	wantBlobs(t, app, h, key, cur, newP, mkvp.Pattern{})
	setMK(t, o, mkvp.EP11WK, ep11q)
	op = moveOp(t, d, op.ID, state.Finalizing)
	n, err = tool.MKChangePass(ctx, slotEP11, op, state.ActFinalize, nil)
	must(t, err)
	if n != 1 {
		t.Fatalf("finalize changed %d token objects, want 1", n)
	}
	_, err = app.reconcile(ctx)
	must(t, err)
	after := snapshot()
	if len(before) != len(after) {
		t.Fatal("certificate or trust object changed shape during the master key change")
	}
	for i := range before {
		if !bytes.Equal(before[i], after[i]) {
			t.Fatalf("certificate or trust object changed by the master key change (entry %d)", i)
		}
	}
	if !bytes.Equal(getAttr(t, app, h, certH, ck.CKA_VALUE), c.Raw) {
		t.Fatal("certificate value changed")
	}
}

func sortedAttrs(t template) []ck.Attribute {
	out := make([]ck.Attribute, 0, len(t))
	for a := range t {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}
