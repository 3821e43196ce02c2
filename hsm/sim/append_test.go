package sim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"testing"

	"github.com/pkcshsm/pkcshsm/hsm"
)

// TestAppendMatchesGo: EncryptAppend and DecryptAppend (hsm.Appender, what
// the token library uses for large operations) keep dst's bytes, append
// exactly what Go's ciphers make with the same clear key — CBC-PAD over
// every length around a block, GCM, ECB, CBC — use dst's room without
// reallocating, and Encrypt and Decrypt give the same bytes.
func TestAppendMatchesGo(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, testTopology()); err != nil {
		t.Fatal(err)
	}
	h := openSim(t, dir)
	id := ccaIDs[0]
	key := bytes.Repeat([]byte{0x5a}, 32)
	blob, err := h.ImportKey(bg, id, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, key)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	iv := []byte("0123456789abcdef")
	prefix := []byte("kept")
	for n := 0; n <= 49; n++ {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte(i*3 + n)
		}
		k := 16 - n%16
		padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(k)}, k)...)
		cbcPad := make([]byte, len(padded))
		cipher.NewCBCEncrypter(blk, iv).CryptBlocks(cbcPad, padded)
		cases := []struct {
			m    hsm.Mechanism
			p    hsm.Params
			want []byte
		}{
			{hsm.MechAESCBCPad, hsm.Params{IV: iv}, cbcPad},
			{hsm.MechAESGCM, hsm.Params{IV: iv[:12], AAD: prefix}, g.Seal(nil, iv[:12], plain, prefix)},
		}
		if n%16 == 0 {
			cbc := make([]byte, n)
			cipher.NewCBCEncrypter(blk, iv).CryptBlocks(cbc, plain)
			ecb := make([]byte, n)
			for i := 0; i < n; i += 16 {
				blk.Encrypt(ecb[i:], plain[i:i+16])
			}
			cases = append(cases, struct {
				m    hsm.Mechanism
				p    hsm.Params
				want []byte
			}{hsm.MechAESCBC, hsm.Params{IV: iv}, cbc}, struct {
				m    hsm.Mechanism
				p    hsm.Params
				want []byte
			}{hsm.MechAESECB, hsm.Params{}, ecb})
		}
		for _, c := range cases {
			dst := make([]byte, len(prefix), 128)
			copy(dst, prefix)
			out, err := h.EncryptAppend(bg, id, blob, c.m, c.p, dst, plain)
			if err != nil {
				t.Fatalf("%v, %d bytes: %v", c.m, n, err)
			}
			if !bytes.Equal(out[:len(prefix)], prefix) || !bytes.Equal(out[len(prefix):], c.want) {
				t.Fatalf("%v, %d bytes: EncryptAppend gives %x, want %q + %x", c.m, n, out, prefix, c.want)
			}
			if &out[0] != &dst[:1][0] {
				t.Fatalf("%v, %d bytes: EncryptAppend reallocated a dst with room", c.m, n)
			}
			if one, err := h.Encrypt(bg, id, blob, c.m, c.p, plain); err != nil || !bytes.Equal(one, c.want) {
				t.Fatalf("%v, %d bytes: Encrypt gives %x, %v", c.m, n, one, err)
			}
			back, err := h.DecryptAppend(bg, id, blob, c.m, c.p, bytes.Clone(prefix), c.want)
			if err != nil || !bytes.Equal(back, append(bytes.Clone(prefix), plain...)) {
				t.Fatalf("%v, %d bytes: DecryptAppend gives %x, %v", c.m, n, back, err)
			}
		}
	}
	// A bad padding or tag is ErrBadData, from the appending calls too.
	ct, _ := h.Encrypt(bg, id, blob, hsm.MechAESGCM, hsm.Params{IV: iv[:12]}, []byte("data"))
	ct[0] ^= 1
	if _, err := h.DecryptAppend(bg, id, blob, hsm.MechAESGCM, hsm.Params{IV: iv[:12]}, nil, ct); !errors.Is(err, hsm.ErrBadData) {
		t.Fatalf("tampered GCM: %v, want ErrBadData", err)
	}
	bad := make([]byte, 16)
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(bad, bytes.Repeat([]byte{0x11}, 16))
	if _, err := h.DecryptAppend(bg, id, blob, hsm.MechAESCBCPad, hsm.Params{IV: iv}, nil, bad); !errors.Is(err, hsm.ErrBadData) {
		t.Fatalf("bad CBC padding: %v, want ErrBadData", err)
	}
}
