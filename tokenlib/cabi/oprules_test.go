package cabi_test

import (
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestLegacyAndSlotEventFunctions: C_GetFunctionStatus and
// C_CancelFunction are CKR_FUNCTION_NOT_PARALLEL, C_WaitForSlotEvent has
// no event to report; before C_Initialize all three are
// CKR_CRYPTOKI_NOT_INITIALIZED.
func TestLegacyAndSlotEventFunctions(t *testing.T) {
	m := newModule(t)
	slot := m.ulong(0)
	wantRV(t, "C_WaitForSlotEvent before C_Initialize", m.f.C_WaitForSlotEvent(uintptr(ck.CKF_DONT_BLOCK), slot.P, 0), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	wantRV(t, "C_GetFunctionStatus before C_Initialize", m.f.C_GetFunctionStatus(1), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	wantRV(t, "C_CancelFunction before C_Initialize", m.f.C_CancelFunction(1), ck.CKR_CRYPTOKI_NOT_INITIALIZED)
	m.ok("C_Initialize", m.f.C_Initialize(0))
	wantRV(t, "C_GetFunctionStatus", m.f.C_GetFunctionStatus(1), ck.CKR_FUNCTION_NOT_PARALLEL)
	wantRV(t, "C_CancelFunction", m.f.C_CancelFunction(1), ck.CKR_FUNCTION_NOT_PARALLEL)
	wantRV(t, "C_WaitForSlotEvent(DONT_BLOCK)", m.f.C_WaitForSlotEvent(uintptr(ck.CKF_DONT_BLOCK), slot.P, 0), ck.CKR_NO_EVENT)
	wantRV(t, "C_WaitForSlotEvent(blocking)", m.f.C_WaitForSlotEvent(0, slot.P, 0), ck.CKR_FUNCTION_NOT_SUPPORTED)
	wantRV(t, "C_WaitForSlotEvent(NULL slot)", m.f.C_WaitForSlotEvent(uintptr(ck.CKF_DONT_BLOCK), 0, 0), ck.CKR_ARGUMENTS_BAD)
}

// TestOperationRulesThroughCABI: the rules of package oprules hold at the
// C edge, for errors the C layer finds (a NULL pointer) as for those of
// the engine: CKR_ARGUMENTS_BAD ends the operation (the next Init
// succeeds, the next call is CKR_OPERATION_NOT_INITIALIZED), a length
// query and CKR_BUFFER_TOO_SMALL keep it, a single-part call after an
// Update is CKR_OPERATION_ACTIVE and ends it.
func TestOperationRulesThroughCABI(t *testing.T) {
	m := ready(t)
	h := m.user()
	key := m.aesKey(h, false)
	sha := m.mech(ck.CKM_SHA256, nil)
	ecb := m.mech(ck.CKM_AES_ECB, nil)
	data := m.bytes(make([]byte, 32))
	out := m.alloc(64)
	n := m.ulong(64)

	// Encrypt: a NULL pulEncryptedDataLen ends the operation.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, ecb.P, key))
	wantRV(t, "C_Encrypt(NULL len)", m.f.C_Encrypt(h, data.P, 32, out.P, 0), ck.CKR_ARGUMENTS_BAD)
	wantRV(t, "C_Encrypt after the failure", m.f.C_Encrypt(h, data.P, 32, out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
	m.ok("C_EncryptInit again", m.f.C_EncryptInit(h, ecb.P, key))
	// A length query and a short buffer keep it; then the real call.
	m.ok("C_Encrypt length query", m.f.C_Encrypt(h, data.P, 32, 0, n.P))
	small := m.ulong(8)
	wantRV(t, "C_Encrypt short", m.f.C_Encrypt(h, data.P, 32, out.P, small.P), ck.CKR_BUFFER_TOO_SMALL)
	ctest.SetULong(n.P, 64)
	m.ok("C_Encrypt", m.f.C_Encrypt(h, data.P, 32, out.P, n.P))
	wantRV(t, "C_Encrypt after success", m.f.C_Encrypt(h, data.P, 32, out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)

	// Digest: C_Digest after C_DigestUpdate is CKR_OPERATION_ACTIVE and
	// ends the digest.
	m.ok("C_DigestInit", m.f.C_DigestInit(h, sha.P))
	m.ok("C_DigestUpdate", m.f.C_DigestUpdate(h, data.P, 32))
	ctest.SetULong(n.P, 64)
	wantRV(t, "C_Digest after Update", m.f.C_Digest(h, data.P, 32, out.P, n.P), ck.CKR_OPERATION_ACTIVE)
	wantRV(t, "C_DigestFinal after the refusal", m.f.C_DigestFinal(h, out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
	// A failed C_Digest (NULL data with a length) ends it too.
	m.ok("C_DigestInit", m.f.C_DigestInit(h, sha.P))
	wantRV(t, "C_Digest(NULL data)", m.f.C_Digest(h, 0, 32, out.P, n.P), ck.CKR_ARGUMENTS_BAD)
	wantRV(t, "C_Digest after the failure", m.f.C_Digest(h, data.P, 32, out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
	// An Update after a single-part length query is refused and ends it.
	m.ok("C_DigestInit", m.f.C_DigestInit(h, sha.P))
	m.ok("C_Digest length query", m.f.C_Digest(h, data.P, 32, 0, n.P))
	wantRV(t, "C_DigestUpdate after the query", m.f.C_DigestUpdate(h, data.P, 32), ck.CKR_OPERATION_ACTIVE)
	m.ok("C_DigestInit after the refusal", m.f.C_DigestInit(h, sha.P))
	m.ok("C_DigestFinal with no parts", m.f.C_DigestFinal(h, out.P, n.P))

	// Sign: a failed C_SignUpdate (NULL part with a length) ends the
	// signature, so the next C_SignInit is not CKR_OPERATION_ACTIVE.
	_, priv := m.ecKeyPair(h)
	ecdsa := m.mech(ck.CKM_ECDSA_SHA256, nil)
	m.ok("C_SignInit", m.f.C_SignInit(h, ecdsa.P, priv))
	wantRV(t, "C_SignUpdate(NULL part)", m.f.C_SignUpdate(h, 0, 5), ck.CKR_ARGUMENTS_BAD)
	m.ok("C_SignInit after the failure", m.f.C_SignInit(h, ecdsa.P, priv))
}
