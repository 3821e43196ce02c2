package cabi_test

import (
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// BenchmarkCallGetSessionInfo is the cost of one trivial call through the
// function list: C wrapper, fork guard, cgo transition, module lock.
func BenchmarkCallGetSessionInfo(b *testing.B) {
	m := ready(b)
	h := m.open(ccaSlot, false)
	info := m.alloc(ctest.SizeofSession)
	for b.Loop() {
		if rv := m.f.C_GetSessionInfo(h, info.P); rv != 0 {
			b.Fatal(ck.RV(rv))
		}
	}
}

// BenchmarkAESCBCPadEncrypt4K is C_EncryptInit + C_Encrypt of 4 KiB with
// an AES-256 secure key through the C layer.
func BenchmarkAESCBCPadEncrypt4K(b *testing.B) {
	m := ready(b)
	h := m.user()
	key := m.aesKey(h, false)
	mech := m.mech(ck.CKM_AES_CBC_PAD, make([]byte, 16))
	in, out, n := m.alloc(4096), m.alloc(4096+16), m.ulong(0)
	b.SetBytes(4096)
	for b.Loop() {
		if rv := m.f.C_EncryptInit(h, mech.P, key); rv != 0 {
			b.Fatal(ck.RV(rv))
		}
		ctest.SetULong(n.P, uint(out.N))
		if rv := m.f.C_Encrypt(h, in.P, 4096, out.P, n.P); rv != 0 {
			b.Fatal(ck.RV(rv))
		}
	}
}
