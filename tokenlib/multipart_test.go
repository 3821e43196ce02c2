package tokenlib

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// countingHSM is the simulator, counting the Encrypt and Decrypt calls.
type countingHSM struct {
	*sim.HSM
	calls atomic.Int64
}

func (c *countingHSM) Encrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	c.calls.Add(1)
	return c.HSM.Encrypt(ctx, q, key, m, p, data)
}

func (c *countingHSM) Decrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	c.calls.Add(1)
	return c.HSM.Decrypt(ctx, q, key, m, p, data)
}

// newCountingLib is newTestLib on a backend that counts its crypto calls.
func newCountingLib(t *testing.T) (*Library, *countingHSM) {
	t.Helper()
	layout := writeTestRoot(t)
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	must(t, err)
	t.Cleanup(func() { h.Close() })
	c := &countingHSM{HSM: h}
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, Backend: c})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		initTestToken(t, l, slot)
	}
	return l, c
}

// importSecret makes a session key with a known clear value, so that Go's
// ciphers can say what the token must output.
func importSecret(t testing.TB, l *Library, h SessionHandle, kt ck.KeyType, value []byte) ObjectHandle {
	t.Helper()
	o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(kt)),
		Bytes(ck.CKA_VALUE, value), Bool(ck.CKA_ENCRYPT, true), Bool(ck.CKA_DECRYPT, true)})
	must(t, err)
	return o
}

// blockCase is a block mechanism with a key whose clear value the test
// knows, and Go's version of the mechanism.
type blockCase struct {
	name string
	mech Mechanism
	key  ObjectHandle
	bs   int
	pad  bool
	blk  cipher.Block
	iv   []byte
}

// want is what the mechanism makes of data, computed by Go.
func (c blockCase) want(data []byte, enc bool) []byte {
	in := bytes.Clone(data)
	if c.pad && enc {
		n := c.bs - len(in)%c.bs
		in = append(in, bytes.Repeat([]byte{byte(n)}, n)...)
	}
	out := make([]byte, len(in))
	switch {
	case c.iv == nil:
		for i := 0; i < len(in); i += c.bs {
			if enc {
				c.blk.Encrypt(out[i:], in[i:i+c.bs])
			} else {
				c.blk.Decrypt(out[i:], in[i:i+c.bs])
			}
		}
	case enc:
		cipher.NewCBCEncrypter(c.blk, c.iv).CryptBlocks(out, in)
	default:
		cipher.NewCBCDecrypter(c.blk, c.iv).CryptBlocks(out, in)
	}
	if c.pad && !enc {
		out = out[:len(out)-int(out[len(out)-1])]
	}
	return out
}

func blockCases(t testing.TB, l *Library, h SessionHandle) []blockCase {
	t.Helper()
	aesKey := bytes.Repeat([]byte{0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6}, 4)
	des3Key := []byte("pkcshsm-des3-test-key-24")
	ab, err := aes.NewCipher(aesKey)
	must(t, err)
	db, err := des.NewTripleDESCipher(des3Key)
	must(t, err)
	a := importSecret(t, l, h, ck.CKK_AES, aesKey)
	d := importSecret(t, l, h, ck.CKK_DES3, des3Key)
	iv := []byte("0123456789abcdef")
	return []blockCase{
		{"AES-ECB", Mechanism{Type: ck.CKM_AES_ECB}, a, 16, false, ab, nil},
		{"AES-CBC", Mechanism{Type: ck.CKM_AES_CBC, Param: iv}, a, 16, false, ab, iv},
		{"AES-CBC-PAD", Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, a, 16, true, ab, iv},
		{"DES3-CBC", Mechanism{Type: ck.CKM_DES3_CBC, Param: iv[:8]}, d, 8, false, db, iv[:8]},
	}
}

// emitted is how much output the Update calls owe after consuming c bytes:
// every complete block, except that CBC-PAD decryption keeps the last one
// until it knows more follows.
func (c blockCase) emitted(consumed int, decrypt bool) int {
	if c.pad && decrypt {
		if consumed == 0 {
			return 0
		}
		return (consumed - 1) / c.bs * c.bs
	}
	return consumed / c.bs * c.bs
}

// multipart runs an Update per chunk of in and then Final, checking each
// Update's output length against what the blocks so far owe, through the
// length query and the short-buffer refusal first, and a larger buffer
// than needed then. It returns the whole output and the number of Update
// calls that had output.
func multipart(t *testing.T, l *Library, h SessionHandle, c blockCase, decrypt bool, in []byte, chunk int) ([]byte, int) {
	t.Helper()
	update, final := l.EncryptUpdate, l.EncryptFinal
	initOp := l.EncryptInit
	if decrypt {
		update, final, initOp = l.DecryptUpdate, l.DecryptFinal, l.DecryptInit
	}
	must(t, initOp(h, c.mech, c.key))
	var all []byte
	withOut := 0
	for off := 0; off < len(in); off += chunk {
		part := in[off:min(off+chunk, len(in))]
		want := c.emitted(off+len(part), decrypt) - c.emitted(off, decrypt)
		n, err := update(h, part, nil)
		must(t, err)
		if n != want {
			t.Fatalf("length query at offset %d (%d-byte part): %d, want %d", off, len(part), n, want)
		}
		if want > 0 {
			short := make([]byte, want-1)
			n, err := update(h, part, short)
			wantRV(t, err, ck.CKR_BUFFER_TOO_SMALL)
			if n != want || !bytes.Equal(short, make([]byte, want-1)) {
				t.Fatalf("short buffer at offset %d: reported %d (want %d), buffer written: %v", off, n, want, !bytes.Equal(short, make([]byte, want-1)))
			}
			withOut++
		}
		out := make([]byte, want+c.bs)
		n, err = update(h, part, out)
		must(t, err)
		if n != want {
			t.Fatalf("Update at offset %d (%d-byte part) output %d bytes, want %d", off, len(part), n, want)
		}
		all = append(all, out[:n]...)
	}
	return append(all, run(t, func(out []byte) (int, error) { return final(h, out) }, nil)...), withOut
}

// TestMultipartBlockModes: multi-part encryption and decryption with the
// block mechanisms output, Update by Update, exactly the complete blocks
// they have, and in all exactly what the single-part call and Go's cipher
// output, for parts smaller than, equal to and larger than a block.
func TestMultipartBlockModes(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		for _, c := range blockCases(t, l, h) {
			sizes := []int{5000, 4992, 40}
			if !c.pad {
				sizes = []int{5008 / c.bs * c.bs, 48}
			}
			for _, size := range sizes {
				plain := make([]byte, size)
				for i := range plain {
					plain[i] = byte(i*7 + i/251)
				}
				ct := c.want(plain, true)
				must(t, l.EncryptInit(h, c.mech, c.key))
				single := run(t, func(out []byte) (int, error) { return l.Encrypt(h, plain, out) }, plain)
				if !bytes.Equal(single, ct) {
					t.Fatalf("%s/%s: single-part ciphertext is not Go's", slot.name(), c.name)
				}
				for _, chunk := range []int{1, 15, 16, 17, 100, 5000} {
					t.Run(fmt.Sprintf("%s/%s/%d/%d", slot.name(), c.name, size, chunk), func(t *testing.T) {
						got, _ := multipart(t, l, h, c, false, plain, chunk)
						if !bytes.Equal(got, ct) {
							t.Fatalf("multi-part ciphertext (%d bytes) differs from the single-part one (%d bytes)", len(got), len(ct))
						}
						got, _ = multipart(t, l, h, c, true, ct, chunk)
						if !bytes.Equal(got, plain) {
							t.Fatalf("multi-part decryption (%d bytes) is not the plaintext (%d bytes)", len(got), len(plain))
						}
					})
				}
			}
		}
	}
}

// TestMultipartOneBackendCallPerUpdate: an Update with complete blocks is
// one HSM call, whatever the number of blocks; one with none is no call.
func TestMultipartOneBackendCallPerUpdate(t *testing.T) {
	l, c := newCountingLib(t)
	h := userSession(t, l, slotCCA)
	for _, bc := range blockCases(t, l, h) {
		t.Run(bc.name, func(t *testing.T) {
			plain := bytes.Repeat([]byte("0123456789abcdef"), 300)
			for _, decrypt := range []bool{false, true} {
				in := plain
				if decrypt {
					in = bc.want(plain, true)
				}
				before := c.calls.Load()
				_, withOut := multipart(t, l, h, bc, decrypt, in, 1000)
				calls := c.calls.Load() - before
				want := int64(withOut)
				if bc.pad {
					want++ // Final: the padded block
				}
				if calls != want {
					t.Errorf("decrypt=%v: %d HSM calls for %d Updates with output, want %d", decrypt, calls, withOut, want)
				}
			}
		})
	}
}

// TestMultipartFinalErrors: a total that is not a whole number of blocks,
// no ciphertext at all, and wrong padding are refused at Final with the
// CK_RV PKCS#11 names, and the refusal ends the operation.
func TestMultipartFinalErrors(t *testing.T) {
	l, _ := newTestLib(t)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		cs := blockCases(t, l, h)
		ecb, cbc, pad, des3 := cs[0], cs[1], cs[2], cs[3]
		// badPad is a CBC-PAD ciphertext whose last block decrypts to p.
		badPad := func(last []byte) []byte { return cbc.want(append(bytes.Repeat([]byte{'x'}, 16), last...), true) }
		cases := []struct {
			name    string
			c       blockCase
			decrypt bool
			parts   [][]byte
			rv      ck.RV
		}{
			{"AES-CBC encrypt 17 bytes", cbc, false, [][]byte{make([]byte, 10), make([]byte, 7)}, ck.CKR_DATA_LEN_RANGE},
			{"AES-ECB encrypt 15 bytes", ecb, false, [][]byte{make([]byte, 15)}, ck.CKR_DATA_LEN_RANGE},
			{"DES3-CBC encrypt 12 bytes", des3, false, [][]byte{make([]byte, 12)}, ck.CKR_DATA_LEN_RANGE},
			{"AES-ECB decrypt 20 bytes", ecb, true, [][]byte{make([]byte, 20)}, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"AES-CBC decrypt 33 bytes", cbc, true, [][]byte{make([]byte, 32), {1}}, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"DES3-CBC decrypt 9 bytes", des3, true, [][]byte{make([]byte, 9)}, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"AES-CBC-PAD decrypt 40 bytes", pad, true, [][]byte{make([]byte, 40)}, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"AES-CBC-PAD decrypt nothing", pad, true, [][]byte{{}}, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"AES-CBC-PAD decrypt, no Update", pad, true, nil, ck.CKR_ENCRYPTED_DATA_LEN_RANGE},
			{"AES-CBC-PAD padding byte 0", pad, true, [][]byte{badPad(append(bytes.Repeat([]byte{'y'}, 15), 0))}, ck.CKR_ENCRYPTED_DATA_INVALID},
			{"AES-CBC-PAD padding byte 17", pad, true, [][]byte{badPad(append(bytes.Repeat([]byte{'y'}, 15), 17))}, ck.CKR_ENCRYPTED_DATA_INVALID},
			{"AES-CBC-PAD padding bytes differ", pad, true, [][]byte{badPad(append(bytes.Repeat([]byte{'y'}, 13), 3, 2, 3))}, ck.CKR_ENCRYPTED_DATA_INVALID},
		}
		for _, tc := range cases {
			t.Run(slot.name()+"/"+tc.name, func(t *testing.T) {
				update, final, initOp := l.EncryptUpdate, l.EncryptFinal, l.EncryptInit
				if tc.decrypt {
					update, final, initOp = l.DecryptUpdate, l.DecryptFinal, l.DecryptInit
				}
				must(t, initOp(h, tc.c.mech, tc.c.key))
				buf := make([]byte, 64)
				for _, p := range tc.parts {
					_, err := update(h, p, buf)
					must(t, err)
				}
				_, err := final(h, nil)
				wantRV(t, err, tc.rv)
				_, err = final(h, buf)
				wantRV(t, err, ck.CKR_OPERATION_NOT_INITIALIZED)
			})
		}
		// The padding Final checks is removed: a last block that ends in
		// 4 4 4 4 loses those 4 bytes.
		t.Run(slot.name()+"/AES-CBC-PAD valid crafted padding", func(t *testing.T) {
			msg := append(bytes.Repeat([]byte{'z'}, 28), 4, 4, 4, 4)
			got, _ := multipart(t, l, h, pad, true, cbc.want(msg, true), 7)
			if !bytes.Equal(got, msg[:28]) {
				t.Fatalf("decrypted %q, want %q", got, msg[:28])
			}
		})
	}
}

// TestMultipartUpdateConvention: the length query and a short buffer leave
// the operation where it was, for the buffering mechanisms too (GCM takes
// the part only when it is given a buffer); Update after a Final length
// query and single-part calls inside a multi-part operation are refused.
func TestMultipartUpdateConvention(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	cs := blockCases(t, l, h)
	cbc := cs[1]
	plain := bytes.Repeat([]byte("abcdefghijklmnop"), 4)

	// Asking twice, and a short buffer, do not take the part.
	must(t, l.EncryptInit(h, cbc.mech, cbc.key))
	for range 2 {
		n, err := l.EncryptUpdate(h, plain[:40], nil)
		must(t, err)
		if n != 32 {
			t.Fatalf("length query: %d, want 32", n)
		}
	}
	n, err := l.EncryptUpdate(h, plain[:40], make([]byte, 31))
	wantRV(t, err, ck.CKR_BUFFER_TOO_SMALL)
	if n != 32 {
		t.Fatalf("short buffer reported %d, want 32", n)
	}
	out := make([]byte, 64)
	n, err = l.EncryptUpdate(h, plain[:40], out)
	must(t, err)
	got := bytes.Clone(out[:n])
	n, err = l.EncryptUpdate(h, plain[40:], out)
	must(t, err)
	got = append(got, out[:n]...)
	if !bytes.Equal(got, cbc.want(plain, true)) {
		t.Fatal("ciphertext after the length queries is not the CBC of the data")
	}
	// Single-part inside a multi-part operation.
	_, err = l.Encrypt(h, plain, out)
	wantRV(t, err, ck.CKR_OPERATION_ACTIVE)

	// Update after a Final length query ends the operation.
	must(t, l.EncryptInit(h, cs[2].mech, cs[2].key))
	_, err = l.EncryptUpdate(h, plain[:5], out)
	must(t, err)
	n, err = l.EncryptFinal(h, nil)
	must(t, err)
	if n != 16 {
		t.Fatalf("CBC-PAD Final length %d, want 16", n)
	}
	_, err = l.EncryptUpdate(h, plain[:5], out)
	wantRV(t, err, ck.CKR_OPERATION_ACTIVE)
	_, err = l.EncryptFinal(h, out)
	wantRV(t, err, ck.CKR_OPERATION_NOT_INITIALIZED)

	// GCM buffers: Updates output nothing, a length query does not take
	// the part, Final outputs what single-part does.
	ab, err := aes.NewCipher(bytes.Repeat([]byte{0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6}, 4))
	must(t, err)
	g, err := cipher.NewGCM(ab)
	must(t, err)
	nonce := []byte("gcm nonce 12")
	gcm := Mechanism{Type: ck.CKM_AES_GCM, Param: &GCMParams{IV: nonce, TagBits: 128}}
	must(t, l.EncryptInit(h, gcm, cbc.key))
	for _, p := range [][]byte{plain[:20], plain[20:]} {
		for _, o := range [][]byte{nil, out} {
			n, err := l.EncryptUpdate(h, p, o)
			must(t, err)
			if n != 0 {
				t.Fatalf("GCM Update output %d bytes", n)
			}
		}
	}
	ct := run(t, func(out []byte) (int, error) { return l.EncryptFinal(h, out) }, nil)
	if want := g.Seal(nil, nonce, plain, nil); !bytes.Equal(ct, want) {
		t.Fatalf("GCM multi-part output %x, want %x", ct, want)
	}
}

// chunked runs a multi-part operation with the parts cut gives (each byte
// a part length, the rest in one part) and returns its output, or the
// CK_RV that stopped it.
func chunked(t *testing.T, l *Library, h SessionHandle, c blockCase, decrypt bool, in, cut []byte) ([]byte, ck.RV) {
	update, final, initOp := l.EncryptUpdate, l.EncryptFinal, l.EncryptInit
	if decrypt {
		update, final, initOp = l.DecryptUpdate, l.DecryptFinal, l.DecryptInit
	}
	must(t, initOp(h, c.mech, c.key))
	var out []byte
	buf := make([]byte, len(in)+2*c.bs)
	for len(in) > 0 {
		n := len(in)
		if len(cut) > 0 {
			n, cut = min(int(cut[0]), n), cut[1:]
		}
		m, err := update(h, in[:n], buf)
		must(t, err)
		out, in = append(out, buf[:m]...), in[n:]
	}
	n, err := final(h, buf)
	return append(out, buf[:n]...), RV(err)
}

// FuzzMultipartChunks: however the data is cut into parts, multi-part
// encryption is Go's cipher of it (or CKR_DATA_LEN_RANGE when it is not
// whole blocks), and multi-part decryption of any bytes is Go's
// decryption, or the CK_RV of what is wrong with them.
func FuzzMultipartChunks(f *testing.F) {
	l, _ := newTestLib(f)
	h := userSession(f, l, slotCCA)
	cases := blockCases(f, l, h)
	f.Add(uint8(2), bytes.Repeat([]byte("p"), 100), []byte{1, 15, 16, 17})
	f.Add(uint8(1), make([]byte, 64), []byte{0, 32, 0})
	f.Add(uint8(0), make([]byte, 20), []byte{3})
	f.Add(uint8(3), make([]byte, 24), []byte{7, 9})
	f.Fuzz(func(t *testing.T, which uint8, data, cut []byte) {
		c := cases[int(which)%len(cases)]
		got, rv := chunked(t, l, h, c, false, data, cut)
		switch {
		case !c.pad && len(data)%c.bs != 0:
			if rv != ck.CKR_DATA_LEN_RANGE {
				t.Fatalf("%s: %d bytes encrypted with %v", c.name, len(data), rv)
			}
		case rv != ck.CKR_OK || !bytes.Equal(got, c.want(data, true)):
			t.Fatalf("%s: encryption of %d bytes in parts %v: %v, output differs from Go's", c.name, len(data), cut, rv)
		}
		got, rv = chunked(t, l, h, c, true, data, cut)
		if len(data)%c.bs != 0 || (c.pad && len(data) == 0) {
			if rv != ck.CKR_ENCRYPTED_DATA_LEN_RANGE {
				t.Fatalf("%s: %d bytes of ciphertext decrypted with %v", c.name, len(data), rv)
			}
			return
		}
		raw := c
		raw.pad = false
		plain := raw.want(data, false) // the padding still on
		if c.pad {
			n := int(plain[len(plain)-1])
			if n == 0 || n > c.bs || !bytes.Equal(plain[len(plain)-n:], bytes.Repeat([]byte{byte(n)}, n)) {
				if rv != ck.CKR_ENCRYPTED_DATA_INVALID {
					t.Fatalf("%s: bad padding %x decrypted with %v", c.name, plain[len(plain)-c.bs:], rv)
				}
				return
			}
			plain = plain[:len(plain)-n]
		}
		if rv != ck.CKR_OK || !bytes.Equal(got, plain) {
			t.Fatalf("%s: decryption of %d bytes in parts %v: %v, output differs from Go's", c.name, len(data), cut, rv)
		}
	})
}
