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

// TestMultipartBlocksThroughFunctionList: C_EncryptUpdate and
// C_DecryptUpdate with AES-CBC-PAD and AES-ECB hand back the complete
// blocks of every part, with the NULL-buffer and short-buffer convention
// (*pulLen set to what the part needs, nothing written, the part taken
// only by the call with room), in place (output over the input already
// consumed), and in all the bytes Go's cipher makes with the same key.
func TestMultipartBlocksThroughFunctionList(t *testing.T) {
	m := ready(t)
	h := m.user()
	clear := []byte("multi-part test key 32 bytes....")
	tmpl, na := m.attrs(ck.CKA_CLASS, ck.CKO_SECRET_KEY, ck.CKA_KEY_TYPE, ck.CKK_AES, ck.CKA_VALUE, clear,
		ck.CKA_ENCRYPT, true, ck.CKA_DECRYPT, true)
	ph := m.ulong(0)
	m.ok("C_CreateObject", m.f.C_CreateObject(h, tmpl.P, uintptr(na), ph.P))
	key := uintptr(ctest.ULong(ph.P))
	blk, err := aes.NewCipher(clear)
	if err != nil {
		t.Fatal(err)
	}
	iv := []byte("fedcba9876543210")
	plain := make([]byte, 5000)
	for i := range plain {
		plain[i] = byte(i * 13)
	}
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{8}, 8)...)
	cbcCT := make([]byte, len(padded))
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(cbcCT, padded)
	ecbPlain := plain[:4992]
	ecbCT := make([]byte, len(ecbPlain))
	for i := 0; i < len(ecbPlain); i += 16 {
		blk.Encrypt(ecbCT[i:], ecbPlain[i:i+16])
	}
	cases := []struct {
		name      string
		mech      ctest.Mem
		plain, ct []byte
		pad       bool
	}{
		{"AES-CBC-PAD", m.mech(ck.CKM_AES_CBC_PAD, iv), plain, cbcCT, true},
		{"AES-ECB", m.mech(ck.CKM_AES_ECB, nil), ecbPlain, ecbCT, false},
	}
	n := m.ulong(0)
	for _, c := range cases {
		for _, chunk := range []int{17, 1000} {
			for _, decrypt := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%d/decrypt=%v", c.name, chunk, decrypt), func(t *testing.T) {
					ok := func(what string, rv uint) { // m.ok would stop the parent test
						t.Helper()
						if ck.RV(rv) != ck.CKR_OK {
							t.Fatalf("%s: %v", what, ck.RV(rv))
						}
					}
					initOp, update, final := m.f.C_EncryptInit, m.f.C_EncryptUpdate, m.f.C_EncryptFinal
					in, want := c.plain, c.ct
					if decrypt {
						initOp, update, final = m.f.C_DecryptInit, m.f.C_DecryptUpdate, m.f.C_DecryptFinal
						in, want = c.ct, c.plain
					}
					// buf holds the input; the output goes over it, at
					// the output so far, which never passes the input
					// consumed.
					buf := m.alloc(len(in) + 16)
					copy(buf.Bytes(), in)
					ok("Init", initOp(h, c.mech.P, key))
					outOff := 0
					for off := 0; off < len(in); off += chunk {
						part := min(chunk, len(in)-off)
						consumed := off + part
						owed := consumed / 16 * 16
						if decrypt && c.pad {
							owed = (consumed - 1) / 16 * 16
						}
						need := uint(owed - outOff)
						ctest.SetULong(n.P, 12345)
						ok("Update(NULL)", update(h, buf.At(off), uintptr(part), 0, n.P))
						if got := ctest.ULong(n.P); got != need {
							t.Fatalf("Update(NULL) at %d: *pulLen = %d, want %d", off, got, need)
						}
						if need > 0 {
							short := m.alloc(int(need))
							ctest.SetULong(n.P, need-1)
							wantRV(t, "Update short", update(h, buf.At(off), uintptr(part), short.P, n.P), ck.CKR_BUFFER_TOO_SMALL)
							if got := ctest.ULong(n.P); got != need || !bytes.Equal(short.Bytes(), make([]byte, need)) {
								t.Fatalf("short buffer at %d: *pulLen = %d (want %d), written: %v", off, got, need, !bytes.Equal(short.Bytes(), make([]byte, need)))
							}
						}
						ctest.SetULong(n.P, uint(consumed-outOff))
						ok("Update", update(h, buf.At(off), uintptr(part), buf.At(outOff), n.P))
						if got := ctest.ULong(n.P); got != need {
							t.Fatalf("Update at %d output %d bytes, want %d", off, got, need)
						}
						outOff += int(need)
					}
					ctest.SetULong(n.P, 0)
					ok("Final(NULL)", final(h, 0, n.P))
					last := ctest.ULong(n.P)
					if want := uint(len(want) - outOff); last != want {
						t.Fatalf("Final(NULL): %d bytes, want %d", last, want)
					}
					// pkcs11-tool gives Final a buffer of one block.
					tail := m.alloc(16)
					ctest.SetULong(n.P, 16)
					ok("Final", final(h, tail.P, n.P))
					got := append(bytes.Clone(buf.Bytes()[:outOff]), tail.Bytes()[:ctest.ULong(n.P)]...)
					if !bytes.Equal(got, want) {
						t.Fatalf("multi-part output of %d bytes is not Go's (%d bytes)", len(got), len(want))
					}
					ctest.SetULong(n.P, 16)
					wantRV(t, "Final again", final(h, tail.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
				})
			}
		}
	}
	// A bad padding fails at C_DecryptFinal and ends the operation.
	m.ok("C_DecryptInit", m.f.C_DecryptInit(h, cases[0].mech.P, key))
	bad := make([]byte, 32)
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(bad, append(bytes.Repeat([]byte{1}, 31), 0))
	in := m.bytes(bad)
	out := m.alloc(32)
	ctest.SetULong(n.P, 32)
	m.ok("C_DecryptUpdate", m.f.C_DecryptUpdate(h, in.P, 32, out.P, n.P))
	if ctest.ULong(n.P) != 16 {
		t.Fatalf("C_DecryptUpdate of 2 blocks output %d bytes, want 16 (the last block is held back)", ctest.ULong(n.P))
	}
	ctest.SetULong(n.P, 32)
	wantRV(t, "C_DecryptFinal bad padding", m.f.C_DecryptFinal(h, out.P, n.P), ck.CKR_ENCRYPTED_DATA_INVALID)
	wantRV(t, "C_DecryptFinal after the failure", m.f.C_DecryptFinal(h, out.P, n.P), ck.CKR_OPERATION_NOT_INITIALIZED)
	// A NULL length pointer is a bad argument.
	m.ok("C_EncryptInit", m.f.C_EncryptInit(h, cases[1].mech.P, key))
	wantRV(t, "C_EncryptUpdate(pulLen NULL)", m.f.C_EncryptUpdate(h, in.P, 32, out.P, 0), ck.CKR_ARGUMENTS_BAD)
}
