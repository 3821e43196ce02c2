package cabi_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func TestFunctionList(t *testing.T) {
	m := newModule(t)
	if maj, min := m.f.Version(); maj != 2 || min != 40 {
		t.Errorf("function list version %d.%d, want 2.40", maj, min)
	}
	entries := m.f.Entries()
	if len(entries) != 68 {
		t.Fatalf("%d entries, want the 68 of PKCS#11 v2.40", len(entries))
	}
	for i, e := range entries {
		if e == 0 {
			t.Errorf("entry %d is NULL", i)
		}
	}
	// Functions the engine does not provide answer at once, initialised
	// or not.
	m.ok("C_Initialize", m.f.C_Initialize(0))
	buf := m.alloc(64)
	n := m.ulong(64)
	for name, rv := range map[string]uint{
		"C_GetOperationState": m.f.C_GetOperationState(1, buf.P, n.P),
		"C_SetOperationState": m.f.C_SetOperationState(1, buf.P, 64, 0, 0),
		"C_DigestKey":         m.f.C_DigestKey(1, 1),
		"C_SignRecoverInit":   m.f.C_SignRecoverInit(1, 0, 1),
		"C_DeriveKey":         m.f.C_DeriveKey(1, 0, 1, 0, 0, n.P),
	} {
		wantRV(t, name, rv, ck.CKR_FUNCTION_NOT_SUPPORTED)
	}

	// PKCS#11 3.0 discovery returns the same 2.40 list.
	cnt := m.ulong(0)
	wantRV(t, "C_GetInterfaceList(NULL, NULL)", ctest.GetInterfaceList(0, 0), ck.CKR_ARGUMENTS_BAD)
	m.ok("C_GetInterfaceList(NULL)", ctest.GetInterfaceList(0, cnt.P))
	if ctest.ULong(cnt.P) != 1 {
		t.Fatalf("%d interfaces, want 1", ctest.ULong(cnt.P))
	}
	ifs := m.alloc(2 * ctest.SizeofInterface)
	ctest.SetULong(cnt.P, 0)
	wantRV(t, "C_GetInterfaceList short", ctest.GetInterfaceList(ifs.P, cnt.P), ck.CKR_BUFFER_TOO_SMALL)
	if ctest.ULong(cnt.P) != 1 || !bytes.Equal(ifs.Bytes(), make([]byte, ifs.N)) {
		t.Errorf("short C_GetInterfaceList: count %d, buffer written: %v", ctest.ULong(cnt.P), !bytes.Equal(ifs.Bytes(), make([]byte, ifs.N)))
	}
	ctest.SetULong(cnt.P, 2)
	m.ok("C_GetInterfaceList", ctest.GetInterfaceList(ifs.P, cnt.P))
	if name, l := ctest.InterfaceAt(ifs.P, 0); ctest.ULong(cnt.P) != 1 || name != "PKCS 11" || !ctest.Same(l, m.f) {
		t.Errorf("interface list: count %d, %q, same list %v", ctest.ULong(cnt.P), name, ctest.Same(l, m.f))
	}
	name := m.keep(ctest.CString("PKCS 11"))
	for _, c := range []struct {
		name, version uintptr
		flags         uint
		rv            ck.RV
	}{
		{0, 0, 0, ck.CKR_OK},
		{name.P, 0, 0, ck.CKR_OK},
		{name.P, m.bytes([]byte{2, 40}).P, 0, ck.CKR_OK},
		{name.P, m.bytes([]byte{3, 0}).P, 0, ck.CKR_ARGUMENTS_BAD},
		{m.keep(ctest.CString("Vendor X")).P, 0, 0, ck.CKR_ARGUMENTS_BAD},
		{0, 0, 1 /* CKF_INTERFACE_FORK_SAFE */, ck.CKR_ARGUMENTS_BAD},
	} {
		l, rv := ctest.Interface(c.name, c.version, c.flags)
		wantRV(t, "C_GetInterface", rv, c.rv)
		if rv == 0 && !ctest.Same(l, m.f) {
			t.Error("C_GetInterface returned another function list")
		}
	}
}

func TestInitializeArgs(t *testing.T) {
	m := newModule(t)
	wantRV(t, "C_GetInfo before C_Initialize", m.f.C_GetInfo(m.alloc(ctest.SizeofInfo).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	wantRV(t, "C_Finalize before C_Initialize", m.f.C_Finalize(0), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	// CK_C_INITIALIZE_ARGS: CreateMutex, DestroyMutex, LockMutex,
	// UnlockMutex, flags, pReserved. The callbacks are never called: any
	// non-NULL address stands for one.
	const fn = 0x1000
	osLocking := uintptr(ck.CKF_OS_LOCKING_OK)
	cantThreads := uintptr(ck.CKF_LIBRARY_CANT_CREATE_OS_THREADS)
	cases := []struct {
		name string
		args []uintptr // nil: pInitArgs NULL
		rv   ck.RV
	}{
		{"NULL (pkcs11-tool, PyKCS11)", nil, ck.CKR_OK},
		{"OS locking (miekg, libp11)", []uintptr{0, 0, 0, 0, osLocking, 0}, ck.CKR_OK},
		{"OS locking, can't create threads (p11-kit)", []uintptr{0, 0, 0, 0, osLocking | cantThreads, 0}, ck.CKR_OK},
		{"callbacks and OS locking (NSS)", []uintptr{fn, fn, fn, fn, osLocking | cantThreads, 0}, ck.CKR_OK},
		{"no flags, no callbacks", []uintptr{0, 0, 0, 0, 0, 0}, ck.CKR_OK},
		{"can't create threads only", []uintptr{0, 0, 0, 0, cantThreads, 0}, ck.CKR_OK},
		{"callbacks without OS locking", []uintptr{fn, fn, fn, fn, 0, 0}, ck.CKR_CANT_LOCK},
		{"some callbacks", []uintptr{fn, 0, fn, fn, osLocking, 0}, ck.CKR_ARGUMENTS_BAD},
		{"one callback", []uintptr{0, 0, 0, fn, osLocking, 0}, ck.CKR_ARGUMENTS_BAD},
		{"pReserved set", []uintptr{0, 0, 0, 0, osLocking, fn}, ck.CKR_ARGUMENTS_BAD},
	}
	for _, c := range cases {
		var p uintptr
		if c.args != nil {
			p = m.keep(ctest.Words(c.args...)).P
		}
		rv := m.f.C_Initialize(p)
		wantRV(t, "C_Initialize "+c.name, rv, c.rv)
		if ck.RV(rv) == ck.CKR_OK {
			wantRV(t, "second C_Initialize "+c.name, m.f.C_Initialize(p), ck.CKR_CRYPTOKI_ALREADY_INITIALIZED)
			wantRV(t, "C_Finalize(non-NULL)", m.f.C_Finalize(fn), ck.CKR_ARGUMENTS_BAD)
			m.ok("C_Finalize", m.f.C_Finalize(0))
		} else {
			// A refused C_Initialize leaves the library uninitialised.
			wantRV(t, "C_GetSlotList after refused C_Initialize "+c.name,
				m.f.C_GetSlotList(0, 0, m.ulong(0).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
		}
	}
}

// TestReinitialize: C_Finalize releases everything (sessions, logins,
// session objects) and a second C_Initialize starts afresh.
func TestReinitialize(t *testing.T) {
	m := ready(t)
	h := m.user()
	key := m.aesKey(h, false)
	tokKey := m.aesKey(h, true)
	m.ok("C_Finalize", m.f.C_Finalize(0))
	wantRV(t, "C_GetSessionInfo after C_Finalize", m.f.C_GetSessionInfo(h, m.alloc(ctest.SizeofSession).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	m.ok("C_Initialize again", m.f.C_Initialize(0))
	info := m.alloc(ctest.SizeofSession)
	h2 := m.open(ccaSlot, false)
	m.ok("C_GetSessionInfo", m.f.C_GetSessionInfo(h2, info.P))
	// CK_SESSION_INFO: slotID, state, flags, ulDeviceError. The login
	// ended with C_Finalize.
	if st := ck.State(ctest.ULong(info.At(ctest.SizeofULong))); st != ck.CKS_RO_PUBLIC_SESSION {
		t.Errorf("session state after re-initialize %v, want CKS_RO_PUBLIC_SESSION", st)
	}
	if h2 != h {
		wantRV(t, "old session", m.f.C_GetSessionInfo(h, info.P), ck.CKR_SESSION_HANDLE_INVALID)
	}
	pin := m.bytes([]byte(userPIN))
	m.ok("C_Login", m.f.C_Login(h2, uintptr(ck.CKU_USER), pin.P, uintptr(pin.N)))
	tmpl, n := m.attrs(ck.CKA_CLASS, ck.CKO_SECRET_KEY)
	m.ok("C_FindObjectsInit", m.f.C_FindObjectsInit(h2, tmpl.P, uintptr(n)))
	out := m.alloc(8 * ctest.SizeofULong)
	cnt := m.ulong(0)
	m.ok("C_FindObjects", m.f.C_FindObjects(h2, out.P, 8, cnt.P))
	m.ok("C_FindObjectsFinal", m.f.C_FindObjectsFinal(h2))
	var found []uintptr
	for i := range ctest.ULong(cnt.P) {
		found = append(found, uintptr(ctest.ULong(out.At(int(i)*ctest.SizeofULong))))
	}
	if len(found) != 1 || found[0] != tokKey {
		t.Errorf("after re-initialize the secret keys are %v, want only the token key %d (session key %d died)", found, tokKey, key)
	}
}

func TestInfo(t *testing.T) {
	m := ready(t)
	info := m.alloc(ctest.SizeofInfo)
	m.ok("C_GetInfo", m.f.C_GetInfo(info.P))
	b := info.Bytes()
	if b[0] != 2 || b[1] != 40 {
		t.Errorf("cryptokiVersion %d.%d", b[0], b[1])
	}
	if man := string(b[2:34]); man != pad("pkcshsm", 32) {
		t.Errorf("manufacturerID %q", man)
	}

	cnt := m.ulong(0)
	m.ok("C_GetSlotList(NULL)", m.f.C_GetSlotList(1, 0, cnt.P))
	if ctest.ULong(cnt.P) != 2 {
		t.Fatalf("%d slots, want 2", ctest.ULong(cnt.P))
	}
	list := m.alloc(2 * ctest.SizeofULong)
	ctest.SetULong(cnt.P, 1)
	wantRV(t, "C_GetSlotList short", m.f.C_GetSlotList(1, list.P, cnt.P), ck.CKR_BUFFER_TOO_SMALL)
	if ctest.ULong(cnt.P) != 2 {
		t.Errorf("short C_GetSlotList set *pulCount to %d, want 2", ctest.ULong(cnt.P))
	}
	m.ok("C_GetSlotList", m.f.C_GetSlotList(1, list.P, cnt.P))
	if a, b := ctest.ULong(list.P), ctest.ULong(list.At(ctest.SizeofULong)); a != ccaSlot || b != ep11Slot {
		t.Errorf("slots %d, %d; want %d, %d", a, b, ccaSlot, ep11Slot)
	}

	ti := m.alloc(ctest.SizeofTokenInfo)
	m.ok("C_GetTokenInfo", m.f.C_GetTokenInfo(ccaSlot, ti.P))
	if got := string(ti.Bytes()[:32]); got != pad("cabi", 32) {
		t.Errorf("token label %q", got)
	}
	// flags follow label, manufacturerID, model, serialNumber (96 bytes).
	flags := ck.Flags(ctest.ULong(ti.At(96)))
	if flags&ck.CKF_TOKEN_INITIALIZED == 0 || flags&ck.CKF_USER_PIN_INITIALIZED == 0 || flags&ck.CKF_LOGIN_REQUIRED == 0 {
		t.Errorf("token flags %#x lack TOKEN_INITIALIZED, USER_PIN_INITIALIZED or LOGIN_REQUIRED", flags)
	}
	m.ok("C_GetTokenInfo EP11", m.f.C_GetTokenInfo(ep11Slot, ti.P))
	if flags := ck.Flags(ctest.ULong(ti.At(96))); flags&ck.CKF_TOKEN_INITIALIZED != 0 {
		t.Errorf("EP11 token flags %#x: initialized, but nobody initialised it", flags)
	}
	wantRV(t, "C_GetTokenInfo bad slot", m.f.C_GetTokenInfo(7, ti.P), ck.CKR_SLOT_ID_INVALID)

	m.ok("C_GetMechanismList(NULL)", m.f.C_GetMechanismList(ccaSlot, 0, cnt.P))
	n := ctest.ULong(cnt.P)
	mechs := m.alloc(int(n) * ctest.SizeofULong)
	m.ok("C_GetMechanismList", m.f.C_GetMechanismList(ccaSlot, mechs.P, cnt.P))
	seen := map[ck.Mechanism]bool{}
	for i := range n {
		seen[ck.Mechanism(ctest.ULong(mechs.At(int(i)*ctest.SizeofULong)))] = true
	}
	for _, want := range []ck.Mechanism{ck.CKM_AES_KEY_GEN, ck.CKM_AES_GCM, ck.CKM_ECDSA, ck.CKM_RSA_PKCS_OAEP, ck.CKM_SHA256} {
		if !seen[want] {
			t.Errorf("mechanism list lacks %v", want)
		}
	}
	mi := m.alloc(ctest.SizeofMechInfo)
	m.ok("C_GetMechanismInfo", m.f.C_GetMechanismInfo(ccaSlot, uintptr(ck.CKM_AES_CBC_PAD), mi.P))
	if lo, hi, fl := ctest.ULong(mi.P), ctest.ULong(mi.At(8)), ck.Flags(ctest.ULong(mi.At(16))); lo != 16 || hi != 32 || fl&ck.CKF_ENCRYPT == 0 {
		t.Errorf("CKM_AES_CBC_PAD info %d..%d flags %#x", lo, hi, fl)
	}
	wantRV(t, "C_GetMechanismInfo unknown", m.f.C_GetMechanismInfo(ccaSlot, uintptr(ck.CKM_DES_ECB), mi.P), ck.CKR_MECHANISM_INVALID)
}

// TestCryptoRoundTrip drives keys and operations through the C layer:
// AES-CBC-PAD and AES-GCM (a CK_GCM_PARAMS in C memory) with the length
// convention, SHA-256, HMAC, ECDSA and RSA-PSS key pairs, and key
// wrapping.
func TestCryptoRoundTrip(t *testing.T) {
	m := ready(t)
	h := m.user()
	key := m.aesKey(h, false)
	plain := bytes.Repeat([]byte("0123456789abcdef"), 5)
	iv := bytes.Repeat([]byte{7}, 16)
	cbc := m.mech(ck.CKM_AES_CBC_PAD, iv)
	in := m.bytes(plain)
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key))
	n := m.ulong(0)
	m.ok("C_Encrypt(NULL)", m.f.C_Encrypt(h, in.P, uintptr(in.N), 0, n.P))
	need := ctest.ULong(n.P)
	if need != 96 {
		t.Fatalf("C_Encrypt length query: %d, want 96", need)
	}
	out := m.alloc(int(need))
	ctest.SetULong(n.P, 10)
	wantRV(t, "C_Encrypt short", m.f.C_Encrypt(h, in.P, uintptr(in.N), out.P, n.P), ck.CKR_BUFFER_TOO_SMALL)
	if ctest.ULong(n.P) != need {
		t.Errorf("short buffer: *pulEncryptedDataLen = %d, want %d", ctest.ULong(n.P), need)
	}
	if !bytes.Equal(out.Bytes()[:10], make([]byte, 10)) {
		t.Error("short buffer was written to")
	}
	m.ok("C_Encrypt", m.f.C_Encrypt(h, in.P, uintptr(in.N), out.P, n.P))
	if ctest.ULong(n.P) != need || bytes.Contains(out.Bytes(), plain[:16]) {
		t.Fatalf("ciphertext of %d bytes contains the plaintext", ctest.ULong(n.P))
	}
	wantRV(t, "C_Encrypt after the operation ended", m.f.C_Encrypt(h, in.P, uintptr(in.N), out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)

	m.ok("C_DecryptInit", m.f.C_DecryptInit(h, cbc.P, key))
	dec := m.alloc(int(need))
	ctest.SetULong(n.P, need)
	m.ok("C_Decrypt", m.f.C_Decrypt(h, out.P, uintptr(need), dec.P, n.P))
	if got := dec.Bytes()[:ctest.ULong(n.P)]; !bytes.Equal(got, plain) {
		t.Fatalf("decrypted %x", got)
	}

	// AES-GCM, multi-part: CK_GCM_PARAMS {pIv, ulIvLen, ulIvBits, pAAD,
	// ulAADLen, ulTagBits}.
	gcmIV, aad := m.bytes(bytes.Repeat([]byte{9}, 12)), m.bytes([]byte("header"))
	params := m.keep(ctest.Words(gcmIV.P, 12, 96, aad.P, uintptr(aad.N), 128))
	gcm := m.keep(ctest.PutMechanism(uint(ck.CKM_AES_GCM), params.P, ctest.SizeofGCM))
	m.ok("C_EncryptInit GCM", m.f.C_EncryptInit(h, gcm.P, key))
	ctest.SetULong(n.P, 99)
	m.ok("C_EncryptUpdate", m.f.C_EncryptUpdate(h, in.P, 40, out.P, n.P))
	if ctest.ULong(n.P) != 0 {
		t.Errorf("GCM C_EncryptUpdate produced %d bytes; GCM outputs everything at Final (the block modes stream, see TestMultipartBlocksThroughFunctionList)", ctest.ULong(n.P))
	}
	m.ok("C_EncryptUpdate", m.f.C_EncryptUpdate(h, in.At(40), uintptr(in.N-40), out.P, n.P))
	ctest.SetULong(n.P, need)
	m.ok("C_EncryptFinal", m.f.C_EncryptFinal(h, out.P, n.P))
	ctLen := ctest.ULong(n.P)
	if ctLen != uint(len(plain))+16 {
		t.Fatalf("GCM output %d bytes, want %d", ctLen, len(plain)+16)
	}
	m.ok("C_DecryptInit GCM", m.f.C_DecryptInit(h, gcm.P, key))
	ctest.SetULong(n.P, need)
	m.ok("C_Decrypt GCM", m.f.C_Decrypt(h, out.P, uintptr(ctLen), dec.P, n.P))
	if got := dec.Bytes()[:ctest.ULong(n.P)]; !bytes.Equal(got, plain) {
		t.Fatalf("GCM decrypted %x", got)
	}
	out.Bytes()[0] ^= 1
	m.ok("C_DecryptInit GCM", m.f.C_DecryptInit(h, gcm.P, key))
	ctest.SetULong(n.P, need)
	if rv := ck.RV(m.f.C_Decrypt(h, out.P, uintptr(ctLen), dec.P, n.P)); rv != ck.CKR_ENCRYPTED_DATA_INVALID {
		t.Errorf("GCM with a flipped bit: %v, want CKR_ENCRYPTED_DATA_INVALID", rv)
	}

	// SHA-256 digest in two parts against Go's.
	m.ok("C_DigestInit", m.f.C_DigestInit(h, m.mech(ck.CKM_SHA256, nil).P))
	m.ok("C_DigestUpdate", m.f.C_DigestUpdate(h, in.P, 3))
	m.ok("C_DigestUpdate", m.f.C_DigestUpdate(h, in.At(3), uintptr(in.N-3)))
	dg := m.alloc(32)
	ctest.SetULong(n.P, 32)
	m.ok("C_DigestFinal", m.f.C_DigestFinal(h, dg.P, n.P))
	if want := sha256Sum(plain); !bytes.Equal(dg.Bytes(), want) {
		t.Errorf("digest %x, want %x", dg.Bytes(), want)
	}

	// Wrap the key under another AES key and unwrap it; the unwrapped key
	// decrypts what the first one encrypted.
	kek := m.aesKey(h, false)
	kw := m.mech(ck.CKM_AES_KEY_WRAP_PAD, nil)
	m.ok("C_WrapKey(NULL)", m.f.C_WrapKey(h, kw.P, kek, key, 0, n.P))
	wrapped := m.alloc(int(ctest.ULong(n.P)))
	m.ok("C_WrapKey", m.f.C_WrapKey(h, kw.P, kek, key, wrapped.P, n.P))
	tmpl, cnt := m.attrs(ck.CKA_CLASS, ck.CKO_SECRET_KEY, ck.CKA_KEY_TYPE, ck.CKK_AES, ck.CKA_DECRYPT, true)
	ph := m.alloc(ctest.SizeofULong)
	m.ok("C_UnwrapKey", m.f.C_UnwrapKey(h, kw.P, kek, wrapped.P, uintptr(ctest.ULong(n.P)), tmpl.P, uintptr(cnt), ph.P))
	unwrapped := uintptr(ctest.ULong(ph.P))
	m.ok("C_DecryptInit unwrapped", m.f.C_DecryptInit(h, cbc.P, unwrapped))
	clear(dec.Bytes())
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cbc.P, key))
	ctest.SetULong(n.P, need)
	m.ok("C_Encrypt", m.f.C_Encrypt(h, in.P, uintptr(in.N), out.P, n.P))
	ctest.SetULong(n.P, need)
	m.ok("C_Decrypt unwrapped", m.f.C_Decrypt(h, out.P, uintptr(need), dec.P, n.P))
	if got := dec.Bytes()[:ctest.ULong(n.P)]; !bytes.Equal(got, plain) {
		t.Fatalf("unwrapped key decrypted %x", got)
	}

	// Random bytes land in the caller's buffer.
	rnd := m.alloc(64)
	m.ok("C_GenerateRandom", m.f.C_GenerateRandom(h, rnd.P, 64))
	if bytes.Equal(rnd.Bytes(), make([]byte, 64)) {
		t.Error("C_GenerateRandom left the buffer zero")
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestLogFile: the log goes where PKCSHSM_LOG says at the level
// PKCSHSM_LOG_LEVEL says; a log file that cannot be opened fails
// C_Initialize (CKR_FUNCTION_FAILED) rather than losing the log silently.
func TestLogFile(t *testing.T) {
	m := newModule(t)
	setenv(t, "PKCSHSM_LOG", m.layout.Root+"/no/such/dir/p11.log")
	wantRV(t, "C_Initialize with an unwritable log", m.f.C_Initialize(0), ck.CKR_FUNCTION_FAILED)
	wantRV(t, "C_GetInfo", m.f.C_GetInfo(m.alloc(ctest.SizeofInfo).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	setenv(t, "PKCSHSM_LOG", m.log)
	setenv(t, "PKCSHSM_LOG_LEVEL", "warn")
	m.ok("C_Initialize", m.f.C_Initialize(0))
	m.waitAgentWarning()
	m.ok("C_Finalize", m.f.C_Finalize(0))
	for _, e := range m.logLines() {
		if e["level"] != "warn" && e["level"] != "error" {
			t.Errorf("%v logged at level warn", e)
		}
	}
}

// TestInitializeWithoutConfiguration: C_Initialize on a root without
// pkcshsm.conf fails with CKR_FUNCTION_FAILED, says why in the log, and
// leaves the library uninitialised.
func TestInitializeWithoutConfiguration(t *testing.T) {
	m := newModule(t)
	if err := os.Remove(m.layout.GlobalConf()); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "C_Initialize", m.f.C_Initialize(0), ck.CKR_FUNCTION_FAILED)
	wantRV(t, "C_GetInfo", m.f.C_GetInfo(m.alloc(ctest.SizeofInfo).P), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	found := false
	for _, e := range m.logLines() {
		if e["message"] == "C_Initialize failed" && strings.Contains(fmt.Sprint(e["error"]), "pkcshsm.conf") {
			found = true
		}
	}
	if !found {
		t.Errorf("the log does not say why C_Initialize failed: %v", m.logLines())
	}
}
