package cabi_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestBadArguments: NULL pointers, bad pointer/length pairs, invalid
// handles and wrong states get the specification's CK_RV and change
// nothing; the module stays usable after each.
func TestBadArguments(t *testing.T) {
	m := ready(t)
	h := m.user()
	ro := m.open(ccaSlot, false)
	key := m.aesKey(h, false)
	buf := m.alloc(256)
	n := m.ulong(256)
	iv := m.bytes(make([]byte, 16))
	cbc := m.mech(ck.CKM_AES_CBC_PAD, iv.Bytes())
	data := m.bytes([]byte("sixteen byte msg"))
	tmpl, cnt := m.attrs(ck.CKA_CLASS, ck.CKO_DATA, ck.CKA_TOKEN, false, ck.CKA_VALUE, "x")
	// A template whose second entry has pValue NULL and ulValueLen 4.
	nullValue := m.keep(ctest.PutAttrs([]ctest.Attr{{Type: uint(ck.CKA_CLASS), Value: m.bytes(ctest.ULongBytes(uint(ck.CKO_DATA))).P, Len: 8},
		{Type: uint(ck.CKA_LABEL), Value: 0, Len: 4}}))
	hugeValue := m.keep(ctest.PutAttrs([]ctest.Attr{{Type: uint(ck.CKA_LABEL), Value: buf.P, Len: ctest.Unavailable}}))
	pin := m.bytes([]byte(userPIN))
	const badSession, badObject = 999, 0x3fff0000

	cases := []struct {
		name string
		call func() uint
		want ck.RV
	}{
		{"C_GetInfo(NULL)", func() uint { return m.f.C_GetInfo(0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetSlotList(pulCount NULL)", func() uint { return m.f.C_GetSlotList(0, buf.P, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetSlotInfo(NULL)", func() uint { return m.f.C_GetSlotInfo(ccaSlot, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetSlotInfo(bad slot)", func() uint { return m.f.C_GetSlotInfo(3, buf.P) }, ck.CKR_SLOT_ID_INVALID},
		{"C_GetTokenInfo(NULL)", func() uint { return m.f.C_GetTokenInfo(ccaSlot, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetMechanismList(pulCount NULL)", func() uint { return m.f.C_GetMechanismList(ccaSlot, buf.P, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetMechanismInfo(NULL)", func() uint { return m.f.C_GetMechanismInfo(ccaSlot, uintptr(ck.CKM_AES_ECB), 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_OpenSession(phSession NULL)", func() uint {
			return m.f.C_OpenSession(ccaSlot, uintptr(ck.CKF_SERIAL_SESSION), 0, 0, 0)
		}, ck.CKR_ARGUMENTS_BAD},
		{"C_OpenSession(no CKF_SERIAL_SESSION)", func() uint { return m.f.C_OpenSession(ccaSlot, 0, 0, 0, buf.P) }, ck.CKR_SESSION_PARALLEL_NOT_SUPPORTED},
		{"C_OpenSession(bad slot)", func() uint {
			return m.f.C_OpenSession(9, uintptr(ck.CKF_SERIAL_SESSION), 0, 0, buf.P)
		}, ck.CKR_SLOT_ID_INVALID},
		{"C_CloseSession(bad)", func() uint { return m.f.C_CloseSession(badSession) }, ck.CKR_SESSION_HANDLE_INVALID},
		{"C_GetSessionInfo(NULL)", func() uint { return m.f.C_GetSessionInfo(h, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetSessionInfo(bad)", func() uint { return m.f.C_GetSessionInfo(badSession, buf.P) }, ck.CKR_SESSION_HANDLE_INVALID},
		{"C_Login(pPin NULL, len 8)", func() uint { return m.f.C_Login(ro, uintptr(ck.CKU_USER), 0, 8) }, ck.CKR_ARGUMENTS_BAD},
		{"C_Login(already)", func() uint { return m.f.C_Login(ro, uintptr(ck.CKU_USER), pin.P, uintptr(pin.N)) }, ck.CKR_USER_ALREADY_LOGGED_IN},
		{"C_Login(bad user type)", func() uint { return m.f.C_Login(ro, 7, pin.P, uintptr(pin.N)) }, ck.CKR_USER_TYPE_INVALID},
		{"C_Login(PIN length ~0)", func() uint { return m.f.C_Login(ro, uintptr(ck.CKU_USER), pin.P, ^uintptr(0)) }, ck.CKR_PIN_LEN_RANGE},
		{"C_InitToken(label NULL)", func() uint { return m.f.C_InitToken(ccaSlot, pin.P, uintptr(pin.N), 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_InitToken(sessions open)", func() uint { return m.f.C_InitToken(ccaSlot, pin.P, uintptr(pin.N), buf.P) }, ck.CKR_SESSION_EXISTS},
		{"C_SetPIN(pNewPin NULL)", func() uint { return m.f.C_SetPIN(h, pin.P, uintptr(pin.N), 0, 8) }, ck.CKR_ARGUMENTS_BAD},
		{"C_CreateObject(phObject NULL)", func() uint { return m.f.C_CreateObject(h, tmpl.P, uintptr(cnt), 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_CreateObject(template NULL, count 3)", func() uint { return m.f.C_CreateObject(h, 0, 3, buf.P) }, ck.CKR_ARGUMENTS_BAD},
		{"C_CreateObject(pValue NULL, len 4)", func() uint { return m.f.C_CreateObject(h, nullValue.P, 2, buf.P) }, ck.CKR_ARGUMENTS_BAD},
		{"C_CreateObject(ulValueLen ~0)", func() uint { return m.f.C_CreateObject(h, hugeValue.P, 1, buf.P) }, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"C_CreateObject(count 2^40)", func() uint { return m.f.C_CreateObject(h, tmpl.P, 1<<40, buf.P) }, ck.CKR_ARGUMENTS_BAD},
		{"C_CreateObject(bad session)", func() uint { return m.f.C_CreateObject(badSession, tmpl.P, uintptr(cnt), buf.P) }, ck.CKR_SESSION_HANDLE_INVALID},
		{"C_CreateObject(read-only session)", func() uint {
			tok, c := m.attrs(ck.CKA_CLASS, ck.CKO_DATA, ck.CKA_TOKEN, true)
			return m.f.C_CreateObject(ro, tok.P, uintptr(c), buf.P)
		}, ck.CKR_SESSION_READ_ONLY},
		{"C_DestroyObject(bad)", func() uint { return m.f.C_DestroyObject(h, badObject) }, ck.CKR_OBJECT_HANDLE_INVALID},
		{"C_GetObjectSize(NULL)", func() uint { return m.f.C_GetObjectSize(h, key, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetAttributeValue(template NULL)", func() uint { return m.f.C_GetAttributeValue(h, key, 0, 2) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GetAttributeValue(bad object)", func() uint { return m.f.C_GetAttributeValue(h, badObject, tmpl.P, uintptr(cnt)) }, ck.CKR_OBJECT_HANDLE_INVALID},
		{"C_SetAttributeValue(pValue NULL)", func() uint { return m.f.C_SetAttributeValue(h, key, nullValue.P, 2) }, ck.CKR_ARGUMENTS_BAD},
		{"C_FindObjectsInit(template NULL)", func() uint { return m.f.C_FindObjectsInit(h, 0, 1) }, ck.CKR_ARGUMENTS_BAD},
		{"C_FindObjects(not initialized)", func() uint { return m.f.C_FindObjects(h, buf.P, 4, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_FindObjects(pulObjectCount NULL)", func() uint { return m.f.C_FindObjects(h, buf.P, 4, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_FindObjectsFinal(not initialized)", func() uint { return m.f.C_FindObjectsFinal(h) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_EncryptInit(pMechanism NULL)", func() uint { return m.f.C_EncryptInit(h, 0, key) }, ck.CKR_ARGUMENTS_BAD},
		{"C_EncryptInit(bad key)", func() uint { return m.f.C_EncryptInit(h, cbc.P, badObject) }, ck.CKR_KEY_HANDLE_INVALID},
		{"C_EncryptInit(pParameter NULL, len 16)", func() uint {
			return m.f.C_EncryptInit(h, m.keep(ctest.PutMechanism(uint(ck.CKM_AES_CBC), 0, 16)).P, key)
		}, ck.CKR_MECHANISM_PARAM_INVALID},
		{"C_EncryptInit(IV of 15 bytes)", func() uint { return m.f.C_EncryptInit(h, m.mech(ck.CKM_AES_CBC, make([]byte, 15)).P, key) }, ck.CKR_MECHANISM_PARAM_INVALID},
		{"C_EncryptInit(GCM params of 7 bytes)", func() uint { return m.f.C_EncryptInit(h, m.mech(ck.CKM_AES_GCM, make([]byte, 7)).P, key) }, ck.CKR_MECHANISM_PARAM_INVALID},
		{"C_EncryptInit(GCM pIv NULL, ulIvLen 12)", func() uint {
			p := m.keep(ctest.Words(0, 12, 96, 0, 0, 128))
			return m.f.C_EncryptInit(h, m.keep(ctest.PutMechanism(uint(ck.CKM_AES_GCM), p.P, ctest.SizeofGCM)).P, key)
		}, ck.CKR_MECHANISM_PARAM_INVALID},
		{"C_EncryptInit(unknown mechanism)", func() uint { return m.f.C_EncryptInit(h, m.mech(ck.CKM_DES_ECB, nil).P, key) }, ck.CKR_MECHANISM_INVALID},
		{"C_Encrypt(not initialized)", func() uint { return m.f.C_Encrypt(h, data.P, 16, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_EncryptUpdate(not initialized)", func() uint { return m.f.C_EncryptUpdate(h, data.P, 16, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_EncryptFinal(not initialized)", func() uint { return m.f.C_EncryptFinal(h, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_Decrypt(not initialized)", func() uint { return m.f.C_Decrypt(h, data.P, 16, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_DigestInit(pMechanism NULL)", func() uint { return m.f.C_DigestInit(h, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_Digest(not initialized)", func() uint { return m.f.C_Digest(h, data.P, 16, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_SignInit(pMechanism NULL)", func() uint { return m.f.C_SignInit(h, 0, key) }, ck.CKR_ARGUMENTS_BAD},
		{"C_Sign(not initialized)", func() uint { return m.f.C_Sign(h, data.P, 16, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_SignFinal(not initialized)", func() uint { return m.f.C_SignFinal(h, buf.P, n.P) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_Verify(not initialized)", func() uint { return m.f.C_Verify(h, data.P, 16, buf.P, 32) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_VerifyFinal(not initialized)", func() uint { return m.f.C_VerifyFinal(h, buf.P, 32) }, ck.CKR_OPERATION_NOT_INITIALIZED},
		{"C_GenerateKey(phKey NULL)", func() uint { return m.f.C_GenerateKey(h, m.mech(ck.CKM_AES_KEY_GEN, nil).P, tmpl.P, 0, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GenerateKey(pMechanism NULL)", func() uint { return m.f.C_GenerateKey(h, 0, tmpl.P, 0, buf.P) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GenerateKeyPair(phPrivateKey NULL)", func() uint {
			return m.f.C_GenerateKeyPair(h, m.mech(ck.CKM_EC_KEY_PAIR_GEN, nil).P, 0, 0, 0, 0, buf.P, 0)
		}, ck.CKR_ARGUMENTS_BAD},
		{"C_WrapKey(pulWrappedKeyLen NULL)", func() uint { return m.f.C_WrapKey(h, m.mech(ck.CKM_AES_KEY_WRAP, nil).P, key, key, buf.P, 0) }, ck.CKR_ARGUMENTS_BAD},
		{"C_WrapKey(bad wrapping key)", func() uint {
			return m.f.C_WrapKey(h, m.mech(ck.CKM_AES_KEY_WRAP, nil).P, badObject, key, buf.P, n.P)
		}, ck.CKR_WRAPPING_KEY_HANDLE_INVALID},
		{"C_UnwrapKey(pWrappedKey NULL, len 40)", func() uint {
			return m.f.C_UnwrapKey(h, m.mech(ck.CKM_AES_KEY_WRAP, nil).P, key, 0, 40, tmpl.P, uintptr(cnt), buf.P)
		}, ck.CKR_ARGUMENTS_BAD},
		{"C_SeedRandom", func() uint { return m.f.C_SeedRandom(h, data.P, 16) }, ck.CKR_RANDOM_SEED_NOT_SUPPORTED},
		{"C_GenerateRandom(NULL, 16)", func() uint { return m.f.C_GenerateRandom(h, 0, 16) }, ck.CKR_ARGUMENTS_BAD},
		{"C_GenerateRandom(bad session)", func() uint { return m.f.C_GenerateRandom(badSession, buf.P, 16) }, ck.CKR_SESSION_HANDLE_INVALID},
	}
	for _, c := range cases {
		before := bytes.Clone(buf.Bytes())
		ctest.SetULong(n.P, 256)
		wantRV(t, c.name, c.call(), c.want)
		if c.name != "C_OpenSession(no CKF_SERIAL_SESSION)" && !bytes.Equal(before, buf.Bytes()) {
			t.Errorf("%s wrote to the caller's buffer", c.name)
		}
		if ctest.ULong(n.P) != 256 {
			t.Errorf("%s changed *pulLen to %d", c.name, ctest.ULong(n.P))
		}
	}
	// Nothing was created by the failed calls.
	m.ok("C_FindObjectsInit", m.f.C_FindObjectsInit(h, 0, 0))
	m.ok("C_FindObjects", m.f.C_FindObjects(h, buf.P, 32, n.P))
	m.ok("C_FindObjectsFinal", m.f.C_FindObjectsFinal(h))
	if got := ctest.ULong(n.P); got != 1 {
		t.Errorf("%d objects after the bad calls, want only the AES key", got)
	}

	// An operation in progress: a second Init is CKR_OPERATION_ACTIVE, and
	// the first one still works.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key))
	wantRV(t, "second C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key), ck.CKR_OPERATION_ACTIVE)
	ctest.SetULong(n.P, 256)
	m.ok("C_Encrypt after CKR_OPERATION_ACTIVE", m.f.C_Encrypt(h, data.P, 16, buf.P, n.P))
	// Mixing single- and multi-part.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key))
	m.ok("C_EncryptUpdate", m.f.C_EncryptUpdate(h, data.P, 16, buf.P, n.P))
	if rv := ck.RV(m.f.C_Encrypt(h, data.P, 16, buf.P, n.P)); rv == ck.CKR_OK {
		t.Error("C_Encrypt inside a multi-part encryption succeeded")
	}
	// Session objects and operations die with the logout.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key))
	m.ok("C_Logout", m.f.C_Logout(h))
	wantRV(t, "C_Logout twice", m.f.C_Logout(h), ck.CKR_USER_NOT_LOGGED_IN)
	ctest.SetULong(n.P, 256)
	if rv := ck.RV(m.f.C_Encrypt(h, data.P, 16, buf.P, n.P)); rv != ck.CKR_USER_NOT_LOGGED_IN && rv != ck.CKR_OPERATION_NOT_INITIALIZED {
		t.Errorf("C_Encrypt after logout: %v", rv)
	}
}

// TestGetAttributeValueConvention checks C_GetAttributeValue entry by
// entry (PKCS#11 v2.40 §5.7.5): NULL pValue gets the length, a short
// buffer and a sensitive or unknown attribute get
// CK_UNAVAILABLE_INFORMATION, the other entries are still filled, and the
// return value names the problem.
func TestGetAttributeValueConvention(t *testing.T) {
	m := ready(t)
	h := m.user()
	key := m.aesKey(h, false)
	label := m.alloc(16)
	short := m.alloc(2)
	class := m.alloc(8)
	value := m.alloc(64)
	entries := []ctest.Attr{
		{Type: uint(ck.CKA_LABEL), Value: 0, Len: 77},          // length query
		{Type: uint(ck.CKA_CLASS), Value: class.P, Len: 8},     // fits
		{Type: uint(ck.CKA_LABEL), Value: short.P, Len: 0},     // too small (label "k" is 1 byte)
		{Type: uint(ck.CKA_VALUE_LEN), Value: short.P, Len: 2}, // too small for a CK_ULONG
		{Type: uint(ck.CKA_LABEL), Value: label.P, Len: 16},    // fits
	}
	run := func(extra ...ctest.Attr) (ck.RV, []ctest.Attr) {
		tmpl := m.keep(ctest.PutAttrs(append(append([]ctest.Attr{}, entries...), extra...)))
		rv := ck.RV(m.f.C_GetAttributeValue(h, key, tmpl.P, uintptr(len(entries)+len(extra))))
		var out []ctest.Attr
		for i := range len(entries) + len(extra) {
			out = append(out, ctest.GetAttr(tmpl, i))
		}
		return rv, out
	}
	rv, out := run()
	if rv != ck.CKR_BUFFER_TOO_SMALL {
		t.Errorf("rv %v, want CKR_BUFFER_TOO_SMALL", rv)
	}
	wantLens := []uint{1, 8, ctest.Unavailable, ctest.Unavailable, 1}
	for i, a := range out {
		if a.Len != wantLens[i] {
			t.Errorf("entry %d (%v): ulValueLen %d, want %d", i, ck.Attribute(a.Type), a.Len, wantLens[i])
		}
	}
	if got := ck.ObjectClass(ctest.ULong(class.P)); got != ck.CKO_SECRET_KEY {
		t.Errorf("CKA_CLASS %v", got)
	}
	if got := label.Bytes()[:1]; string(got) != "k" {
		t.Errorf("CKA_LABEL %q", got)
	}
	if !bytes.Equal(short.Bytes(), []byte{0, 0}) {
		t.Errorf("a too small buffer was written: %x", short.Bytes())
	}
	// Sensitive beats too small; the clear value is never written.
	rv, out = run(ctest.Attr{Type: uint(ck.CKA_VALUE), Value: value.P, Len: 64})
	if rv != ck.CKR_ATTRIBUTE_SENSITIVE || out[5].Len != ctest.Unavailable {
		t.Errorf("CKA_VALUE: rv %v, ulValueLen %d; want CKR_ATTRIBUTE_SENSITIVE, unavailable", rv, out[5].Len)
	}
	if !bytes.Equal(value.Bytes(), make([]byte, 64)) {
		t.Error("the sensitive value was written")
	}
	// An attribute the object does not have.
	rv, out = run(ctest.Attr{Type: uint(ck.CKA_MODULUS), Value: value.P, Len: 64})
	if rv != ck.CKR_ATTRIBUTE_TYPE_INVALID && rv != ck.CKR_BUFFER_TOO_SMALL {
		t.Errorf("CKA_MODULUS of an AES key: rv %v", rv)
	}
	if out[5].Len != ctest.Unavailable {
		t.Errorf("CKA_MODULUS of an AES key: ulValueLen %d, want unavailable", out[5].Len)
	}
	// All fine: CKR_OK and every length exact.
	tmpl := m.keep(ctest.PutAttrs([]ctest.Attr{{Type: uint(ck.CKA_LABEL), Value: label.P, Len: 16}, {Type: uint(ck.CKA_VALUE_LEN), Value: value.P, Len: 8}}))
	m.ok("C_GetAttributeValue", m.f.C_GetAttributeValue(h, key, tmpl.P, 2))
	if a, b := ctest.GetAttr(tmpl, 0).Len, ctest.GetAttr(tmpl, 1).Len; a != 1 || b != 8 || ctest.ULong(value.P) != 32 {
		t.Errorf("lengths %d, %d and CKA_VALUE_LEN %d", a, b, ctest.ULong(value.P))
	}
}

// TestPanicBecomesGeneralError: a fault inside a Go entry point (here the
// module writing through a bad CK_INFO pointer) returns
// CKR_GENERAL_ERROR, is logged with its stack, and leaves the module
// working.
func TestPanicBecomesGeneralError(t *testing.T) {
	m := ready(t)
	wantRV(t, "C_GetInfo((CK_INFO_PTR)0x10)", m.f.C_GetInfo(0x10), ck.CKR_GENERAL_ERROR)
	wantRV(t, "C_GetSlotList(pulCount 0x18)", m.f.C_GetSlotList(0, 0, 0x18), ck.CKR_GENERAL_ERROR)
	m.ok("C_GetInfo after the panic", m.f.C_GetInfo(m.alloc(ctest.SizeofInfo).P))
	found := 0
	for _, e := range m.logLines() {
		if e["level"] == "error" && strings.Contains(e["message"].(string), "panic") {
			if st, _ := e["stack"].(string); !strings.Contains(st, "cabi.go_C_") {
				t.Errorf("panic logged without the entry point's stack: %v", e)
			}
			found++
		}
	}
	if found != 2 {
		t.Errorf("%d panics logged, want 2", found)
	}
}
