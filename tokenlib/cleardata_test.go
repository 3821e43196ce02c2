package tokenlib

import (
	"bytes"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// kwUnwrap is RFC 3394 key unwrap in software, to learn the clear value of
// a key the HSM generated, through a wrapping key the test knows.
func kwUnwrap(t *testing.T, kek, wrapped []byte) []byte {
	t.Helper()
	b, err := aes.NewCipher(kek)
	must(t, err)
	n := len(wrapped)/8 - 1
	a := bytes.Clone(wrapped[:8])
	r := make([][]byte, n)
	for i := range r {
		r[i] = bytes.Clone(wrapped[8*(i+1) : 8*(i+2)])
	}
	buf := make([]byte, 16)
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			tt := uint64(n*j + i)
			x := binary.BigEndian.Uint64(a) ^ tt
			binary.BigEndian.PutUint64(buf[:8], x)
			copy(buf[8:], r[i-1])
			b.Decrypt(buf, buf)
			a = bytes.Clone(buf[:8])
			r[i-1] = bytes.Clone(buf[8:])
		}
	}
	if !bytes.Equal(a, bytes.Repeat([]byte{0xa6}, 8)) {
		t.Fatal("software unwrap: integrity check failed")
	}
	return bytes.Join(r, nil)
}

// TestNoClearKeyMaterialInStore imports known clear keys and learns the
// clear value of generated keys (wrapped under a known key and unwrapped
// in software), then searches every file of the token directory for them.
func TestNoClearKeyMaterialInStore(t *testing.T) {
	l, layout := newTestLib(t)
	var secrets [][]byte
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		h := userSession(t, l, slot)
		kek := bytes.Repeat([]byte{0xc3, 0x5a, 0x11, 0x9e}, 8)
		imported, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, kek), Bool(ck.CKA_TOKEN, true)})
		must(t, err)
		secrets = append(secrets, kek)
		ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(t, err)
		d, _ := ecPriv.Bytes()
		params, _ := ECParams("P-256")
		_, err = l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_PRIVATE_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)), Bytes(ck.CKA_EC_PARAMS, params), Bytes(ck.CKA_VALUE, d),
			Bool(ck.CKA_TOKEN, true)})
		must(t, err)
		secrets = append(secrets, d)
		for i := range 3 {
			k := genAES(t, l, h, "gen", true)
			n, err := l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, imported, k, nil)
			must(t, err)
			wrapped := make([]byte, n)
			_, err = l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, imported, k, wrapped)
			must(t, err)
			clearKey := kwUnwrap(t, kek, wrapped)
			if len(clearKey) != 32 {
				t.Fatalf("key %d: unwrapped %d bytes", i, len(clearKey))
			}
			secrets = append(secrets, clearKey)
		}
	}
	must(t, l.Close())
	files := 0
	err := filepath.Walk(layout.TokensDir(), func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		files++
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range secrets {
			if bytes.Contains(raw, s) || bytes.Contains(raw, s[:16]) {
				t.Errorf("%s holds clear key material", path)
			}
		}
		return nil
	})
	must(t, err)
	if files < 2 {
		t.Fatalf("searched only %d files", files)
	}
}
