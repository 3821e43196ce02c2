package cabi_test

import (
	"bytes"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestMiekgInProcess drives the module as a real consumer library lays its
// structures out: miekg/pkcs11 dlopen("")s this test binary (ctest links
// the module with -rdynamic), so C_GetFunctionList comes from the dynamic
// symbol table, and its CK_GCM_PARAMS, CK_RSA_PKCS_PSS_PARAMS and
// CK_RSA_PKCS_OAEP_PARAMS reach the module's decoder.
func TestMiekgInProcess(t *testing.T) {
	m := ready(t)
	m.ok("C_Finalize", m.f.C_Finalize(0)) // miekg initialises itself
	p := pkcs11.New("")
	if p == nil {
		t.Fatal(`pkcs11.New(""): C_GetFunctionList not found in the test binary`)
	}
	t.Cleanup(p.Destroy)
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Finalize() })
	slots, err := p.GetSlotList(true)
	if err != nil || len(slots) != 2 || slots[0] != ccaSlot {
		t.Fatalf("slots %v, %v", slots, err)
	}
	h, err := p.OpenSession(ccaSlot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Login(h, pkcs11.CKU_USER, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := p.Login(h, pkcs11.CKU_USER, userPIN); err == nil || err.(pkcs11.Error) != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		t.Errorf("second login: %v", err)
	}

	aes, err := p.GenerateKey(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("through miekg/pkcs11 and the C ABI")
	gcm := func() []*pkcs11.Mechanism {
		return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, pkcs11.NewGCMParams(bytes.Repeat([]byte{1}, 12), []byte("aad"), 128))}
	}
	if err := p.EncryptInit(h, gcm(), aes); err != nil {
		t.Fatal(err)
	}
	ct, err := p.Encrypt(h, plain)
	if err != nil || len(ct) != len(plain)+16 {
		t.Fatalf("GCM encrypt: %d bytes, %v", len(ct), err)
	}
	if err := p.DecryptInit(h, gcm(), aes); err != nil {
		t.Fatal(err)
	}
	if back, err := p.Decrypt(h, ct); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("GCM decrypt: %q, %v", back, err)
	}

	pub, priv, err := p.GenerateKeyPair(h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, 2048), pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true)},
		[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true)})
	if err != nil {
		t.Fatal(err)
	}
	pss := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_RSA_PKCS_PSS, pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, 32))}
	if err := p.SignInit(h, pss, priv); err != nil {
		t.Fatal(err)
	}
	sig, err := p.Sign(h, plain)
	if err != nil || len(sig) != 256 {
		t.Fatalf("PSS sign: %d bytes, %v", len(sig), err)
	}
	if err := p.VerifyInit(h, pss, pub); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(h, plain, sig); err != nil {
		t.Errorf("PSS verify: %v", err)
	}
	sig[10] ^= 1
	p.VerifyInit(h, pss, pub)
	if err := p.Verify(h, plain, sig); err == nil || ck.RV(err.(pkcs11.Error)) != ck.CKR_SIGNATURE_INVALID {
		t.Errorf("PSS verify of a changed signature: %v", err)
	}
	oaep := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.NewOAEPParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pkcs11.CKZ_DATA_SPECIFIED, []byte("label")))}
	if err := p.EncryptInit(h, oaep, pub); err != nil {
		t.Fatal(err)
	}
	ct, err = p.Encrypt(h, plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.DecryptInit(h, oaep, priv); err != nil {
		t.Fatal(err)
	}
	if back, err := p.Decrypt(h, ct); err != nil || !bytes.Equal(back, plain) {
		t.Fatalf("OAEP decrypt: %q, %v", back, err)
	}
	// A different OAEP label does not decrypt.
	other := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.NewOAEPParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, pkcs11.CKZ_DATA_SPECIFIED, []byte("other")))}
	p.DecryptInit(h, other, priv)
	if _, err := p.Decrypt(h, ct); err == nil {
		t.Error("OAEP decrypted with another label")
	}
}
