package cabi_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// The large crypto calls read the application's input in place (no copy
// into Go memory), buffer multi-part input in reused buffers and let the
// simulator write its output into reused buffers (package tokenlib/opbuf).
// These tests hold those paths to the output of Go's own ciphers with the
// same clear key: in-place calls (input and output one buffer), the
// length conventions of PKCS#11 v2.40 §5.2 (NULL output: the length; a
// short buffer: CKR_BUFFER_TOO_SMALL, the length, nothing written, and the
// same call again succeeds), parts of odd sizes, and operations back to
// back in one session with different data, so that a reused buffer that
// still held the previous operation's bytes, or was handed back while its
// result was pending, shows.

// bufKey is an AES-256 key with a known value, and Go's cipher for it.
func bufKey(t *testing.T, m *module, h uintptr) (uintptr, cipher.Block) {
	t.Helper()
	clear := []byte("buffer-reuse key of 32 bytes....")
	tmpl, na := m.attrs(ck.CKA_CLASS, ck.CKO_SECRET_KEY, ck.CKA_KEY_TYPE, ck.CKK_AES, ck.CKA_VALUE, clear,
		ck.CKA_ENCRYPT, true, ck.CKA_DECRYPT, true)
	ph := m.ulong(0)
	m.ok("C_CreateObject", m.f.C_CreateObject(h, tmpl.P, uintptr(na), ph.P))
	blk, err := aes.NewCipher(clear)
	if err != nil {
		t.Fatal(err)
	}
	return uintptr(ctest.ULong(ph.P)), blk
}

// gcmMech is CKM_AES_GCM with a 12-byte IV, the AAD and a 128-bit tag.
func gcmMech(m *module, iv, aad []byte) ctest.Mem {
	ivm, aadm := m.bytes(iv), m.bytes(aad)
	p := m.keep(ctest.Words(ivm.P, uintptr(len(iv)), uintptr(len(iv)*8), aadm.P, uintptr(len(aad)), 128))
	return m.keep(ctest.PutMechanism(uint(ck.CKM_AES_GCM), p.P, ctest.SizeofGCM))
}

func plainOf(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + seed*31 + i>>8)
	}
	return b
}

func cbcPadOf(blk cipher.Block, iv, plain []byte) []byte {
	k := 16 - len(plain)%16
	in := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(k)}, k)...)
	out := make([]byte, len(in))
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(out, in)
	return out
}

func gcmOf(t *testing.T, blk cipher.Block, iv, aad, plain []byte) []byte {
	g, err := cipher.NewGCM(blk)
	if err != nil {
		t.Fatal(err)
	}
	return g.Seal(nil, iv, plain, aad)
}

// singleInPlace runs init + one single-part call over buf in place: a
// length query, a short buffer, then the call. in is the input; the
// result must be want.
func singleInPlace(t *testing.T, m *module, h uintptr, initOp, call func(uintptr, uintptr, uintptr, uintptr, uintptr) uint,
	mech ctest.Mem, key uintptr, in, want []byte, what string) {
	t.Helper()
	ok := func(name string, rv uint) {
		t.Helper()
		if ck.RV(rv) != ck.CKR_OK {
			t.Fatalf("%s %s: %v", what, name, ck.RV(rv))
		}
	}
	buf := m.alloc(max(len(in), len(want)))
	copy(buf.Bytes(), in)
	n := m.ulong(0)
	if rv := initOp(h, mech.P, key, 0, 0); ck.RV(rv) != ck.CKR_OK {
		t.Fatalf("%s init: %v", what, ck.RV(rv))
	}
	ok("(NULL)", call(h, buf.P, uintptr(len(in)), 0, n.P))
	if got := ctest.ULong(n.P); got != uint(len(want)) {
		t.Fatalf("%s (NULL): *pulLen = %d, want %d", what, got, len(want))
	}
	short := m.alloc(len(want))
	ctest.SetULong(n.P, uint(len(want)-1))
	wantRV(t, what+" short", call(h, buf.P, uintptr(len(in)), short.P, n.P), ck.CKR_BUFFER_TOO_SMALL)
	if got := ctest.ULong(n.P); got != uint(len(want)) {
		t.Fatalf("%s short buffer: *pulLen = %d, want %d", what, got, len(want))
	}
	if !bytes.Equal(short.Bytes(), make([]byte, len(want))) {
		t.Fatalf("%s: the short buffer was written to", what)
	}
	if !bytes.Equal(buf.Bytes()[:len(in)], in) {
		t.Fatalf("%s: the input changed before the call that has room", what)
	}
	ctest.SetULong(n.P, uint(buf.N))
	ok("in place", call(h, buf.P, uintptr(len(in)), buf.P, n.P))
	if got := ctest.ULong(n.P); got != uint(len(want)) || !bytes.Equal(buf.Bytes()[:got], want) {
		t.Fatalf("%s in place: %d bytes, equal to Go's %d: %v", what, got, len(want), bytes.Equal(buf.Bytes()[:min(int(got), buf.N)], want))
	}
}

// adapt2 turns the Init calls into one shape for singleInPlace.
func adapt2(f func(h, mech, key uintptr) uint) func(uintptr, uintptr, uintptr, uintptr, uintptr) uint {
	return func(h, mech, key, _, _ uintptr) uint { return f(h, mech, key) }
}

func TestLargeSinglePartInPlace(t *testing.T) {
	m := ready(t)
	h := m.user()
	key, blk := bufKey(t, m, h)
	iv := []byte("0123456789abcdef")
	aad := []byte("additional data")
	encInit, decInit := adapt2(m.f.C_EncryptInit), adapt2(m.f.C_DecryptInit)
	// Sizes around the pooled buffers' threshold (4 KiB) and powers of
	// two, where the output (input + tag or padding) needs the next size.
	for round, size := range []int{4095, 4096, 65536, 65521, 100000, 65536, 4096} {
		plain := plainOf(size, round)
		cbcCT := cbcPadOf(blk, iv, plain)
		gcmCT := gcmOf(t, blk, iv[:12], aad, plain)
		cbcMech, gcmM := m.mech(ck.CKM_AES_CBC_PAD, iv), gcmMech(m, iv[:12], aad)
		name := fmt.Sprintf("round %d, %d bytes", round, size)
		singleInPlace(t, m, h, encInit, m.f.C_Encrypt, cbcMech, key, plain, cbcCT, name+" CBC-PAD encrypt")
		singleInPlace(t, m, h, decInit, m.f.C_Decrypt, cbcMech, key, cbcCT, plain, name+" CBC-PAD decrypt")
		singleInPlace(t, m, h, encInit, m.f.C_Encrypt, gcmM, key, plain, gcmCT, name+" GCM encrypt")
		singleInPlace(t, m, h, decInit, m.f.C_Decrypt, gcmM, key, gcmCT, plain, name+" GCM decrypt")
	}
}

// TestGCMPartsOddChunks: a multi-part AES-GCM encryption and decryption
// in parts of odd sizes outputs nothing before Final, and Final, after a
// length query and a short buffer, outputs what Go's GCM makes of the
// whole; a tampered tag fails at C_DecryptFinal with
// CKR_ENCRYPTED_DATA_INVALID and the next operation in the session is
// still right.
func TestGCMPartsOddChunks(t *testing.T) {
	m := ready(t)
	h := m.user()
	key, blk := bufKey(t, m, h)
	iv, aad := []byte("twelve bytes"), []byte("aad")
	mech := gcmMech(m, iv, aad)
	n := m.ulong(0)
	run := func(decrypt bool, in []byte, chunk int) ([]byte, ck.RV) {
		t.Helper()
		initOp, update, final := m.f.C_EncryptInit, m.f.C_EncryptUpdate, m.f.C_EncryptFinal
		if decrypt {
			initOp, update, final = m.f.C_DecryptInit, m.f.C_DecryptUpdate, m.f.C_DecryptFinal
		}
		src := m.bytes(in)
		m.ok("Init", initOp(h, mech.P, key))
		out := m.alloc(16)
		for off := 0; off < len(in); off += chunk {
			part := min(chunk, len(in)-off)
			ctest.SetULong(n.P, 16)
			m.ok("Update", update(h, src.At(off), uintptr(part), out.P, n.P))
			if ctest.ULong(n.P) != 0 {
				t.Fatalf("GCM Update output %d bytes; it outputs everything at Final", ctest.ULong(n.P))
			}
		}
		ctest.SetULong(n.P, 0)
		if rv := ck.RV(final(h, 0, n.P)); rv != ck.CKR_OK {
			return nil, rv
		}
		need := int(ctest.ULong(n.P))
		short := m.alloc(need)
		ctest.SetULong(n.P, uint(need-1))
		wantRV(t, "Final short", final(h, short.P, n.P), ck.CKR_BUFFER_TOO_SMALL)
		if int(ctest.ULong(n.P)) != need || !bytes.Equal(short.Bytes(), make([]byte, need)) {
			t.Fatalf("Final short buffer: *pulLen %d (want %d), written to: %v", ctest.ULong(n.P), need, !bytes.Equal(short.Bytes(), make([]byte, need)))
		}
		res := m.alloc(need)
		ctest.SetULong(n.P, uint(need))
		m.ok("Final", final(h, res.P, n.P))
		wantRV(t, "Final again", final(h, res.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
		return bytes.Clone(res.Bytes()[:ctest.ULong(n.P)]), ck.CKR_OK
	}
	for round, c := range []struct{ size, chunk int }{{70000, 1 << 14}, {5000, 17}, {65536, 4099}, {70001, 1 << 15}, {4096, 1}, {65536, 65535}} {
		plain := plainOf(c.size, round)
		want := gcmOf(t, blk, iv, aad, plain)
		ct, rv := run(false, plain, c.chunk)
		if rv != ck.CKR_OK || !bytes.Equal(ct, want) {
			t.Fatalf("round %d: GCM encryption of %d bytes in parts of %d: %v, equal to Go's: %v", round, c.size, c.chunk, rv, bytes.Equal(ct, want))
		}
		pt, rv := run(true, ct, c.chunk)
		if rv != ck.CKR_OK || !bytes.Equal(pt, plain) {
			t.Fatalf("round %d: GCM decryption of %d bytes in parts of %d: %v, equal: %v", round, len(ct), c.chunk, rv, bytes.Equal(pt, plain))
		}
		ct[len(ct)-1] ^= 1
		if _, rv := run(true, ct, c.chunk); rv != ck.CKR_ENCRYPTED_DATA_INVALID {
			t.Fatalf("round %d: a tampered tag: %v, want CKR_ENCRYPTED_DATA_INVALID", round, rv)
		}
	}
}

// TestCBCPadPartsOddChunks: a large multi-part AES-CBC-PAD operation (the
// streaming path, whose backend output comes in reused buffers) in parts
// of odd sizes gives Go's output, twice in a row with different data.
func TestCBCPadPartsOddChunks(t *testing.T) {
	m := ready(t)
	h := m.user()
	key, blk := bufKey(t, m, h)
	iv := []byte("fedcba9876543210")
	mech := m.mech(ck.CKM_AES_CBC_PAD, iv)
	n := m.ulong(0)
	for round, c := range []struct{ size, chunk int }{{65536, 1 << 14}, {70001, 4099}, {65536, 1 << 14}, {9000, 8191}} {
		plain := plainOf(c.size, round)
		want := cbcPadOf(blk, iv, plain)
		for _, decrypt := range []bool{false, true} {
			initOp, update, final := m.f.C_EncryptInit, m.f.C_EncryptUpdate, m.f.C_EncryptFinal
			in, exp := plain, want
			if decrypt {
				initOp, update, final = m.f.C_DecryptInit, m.f.C_DecryptUpdate, m.f.C_DecryptFinal
				in, exp = want, plain
			}
			src := m.bytes(in)
			out := m.alloc(len(in) + 16)
			m.ok("Init", initOp(h, mech.P, key))
			done := 0
			for off := 0; off < len(in); off += c.chunk {
				part := min(c.chunk, len(in)-off)
				ctest.SetULong(n.P, uint(out.N-done))
				m.ok("Update", update(h, src.At(off), uintptr(part), out.At(done), n.P))
				done += int(ctest.ULong(n.P))
			}
			ctest.SetULong(n.P, uint(out.N-done))
			m.ok("Final", final(h, out.At(done), n.P))
			done += int(ctest.ULong(n.P))
			if !bytes.Equal(out.Bytes()[:done], exp) {
				t.Fatalf("round %d, decrypt=%v: %d bytes in parts of %d differ from Go's", round, decrypt, c.size, c.chunk)
			}
		}
	}
}

// BenchmarkAES64K is one 64 KiB AES-256 encryption through the function
// list (Init + Encrypt, or Init + 4 Updates of 16 KiB + Final) with a
// secure key on the simulator: what scripts/bench-softhsm.sh's 64 KiB
// lines measure from C, here with the allocations per operation.
func BenchmarkAES64K(b *testing.B) {
	m := ready(b)
	h := m.user()
	key := m.aesKey(h, false)
	const size, part = 64 << 10, 16 << 10
	in, out, n := m.alloc(size), m.alloc(size+16), m.ulong(0)
	iv := []byte("0123456789abcdef")
	mechs := map[string]ctest.Mem{"gcm": gcmMech(m, iv[:12], []byte("aad")), "cbc-pad": m.mech(ck.CKM_AES_CBC_PAD, iv)}
	for _, name := range []string{"gcm", "cbc-pad"} {
		mech := mechs[name]
		b.Run(name+"/single", func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if rv := m.f.C_EncryptInit(h, mech.P, key); rv != 0 {
					b.Fatal(ck.RV(rv))
				}
				ctest.SetULong(n.P, uint(out.N))
				if rv := m.f.C_Encrypt(h, in.P, size, out.P, n.P); rv != 0 {
					b.Fatal(ck.RV(rv))
				}
			}
		})
		b.Run(name+"/parts", func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if rv := m.f.C_EncryptInit(h, mech.P, key); rv != 0 {
					b.Fatal(ck.RV(rv))
				}
				done := 0
				for off := 0; off < size; off += part {
					ctest.SetULong(n.P, uint(out.N-done))
					if rv := m.f.C_EncryptUpdate(h, in.At(off), part, out.At(done), n.P); rv != 0 {
						b.Fatal(ck.RV(rv))
					}
					done += int(ctest.ULong(n.P))
				}
				ctest.SetULong(n.P, uint(out.N-done))
				if rv := m.f.C_EncryptFinal(h, out.At(done), n.P); rv != 0 {
					b.Fatal(ck.RV(rv))
				}
			}
		})
	}
}
