package sim

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func snapQueue(t testing.TB, h *HSM, q apqn.ID) *queueRT {
	t.Helper()
	s, err := h.view()
	if err != nil {
		t.Fatal(err)
	}
	return s.queues[q]
}

// TestOpenedKeysDroppedWithTheRegister: a private key opened for a
// signature is served from the APQN's cache while the state stands; once
// the EP11 wrapping key it was opened under is replaced, the cache is gone
// with the old snapshot and the key fails as the adapter would (wrong
// master key), never signing from the cache.
func TestOpenedKeysDroppedWithTheRegister(t *testing.T) {
	h, _ := newSim(t)
	q := ep11IDs[0]
	priv, _, err := h.GenerateKeyPair(bg, q, hsm.KeySpec{Type: hsm.KeyEC, Bits: 256})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("data"))
	for range 3 {
		if _, err := h.Sign(bg, q, priv, hsm.MechECDSA, hsm.Params{}, digest[:]); err != nil {
			t.Fatal(err)
		}
	}
	rt := snapQueue(t, h, q)
	if n := rt.opened.len(); n != 1 {
		t.Fatalf("%d keys cached after three signatures with one key, want 1", n)
	}
	u1, _ := rt.useKey(priv)
	if u2, _ := rt.useKey(priv); u1 != u2 {
		t.Fatal("the second use opened the key again")
	}
	// A damaged copy of the blob is not the cached key.
	bad := append([]byte(nil), priv...)
	bad[len(bad)-1] ^= 1
	if _, err := h.Sign(bg, q, bad, hsm.MechECDSA, hsm.Params{}, digest[:]); err == nil {
		t.Fatal("a damaged blob signed")
	}
	// Replace the wrapping key: load, commit, set.
	if err := h.Do(bg, func(tx *Tx) error {
		if _, err := tx.LoadNew(q, mkvp.EP11WK, nil, hsm.Part{}); err != nil {
			return err
		}
		if err := tx.Commit(q); err != nil {
			return err
		}
		return tx.Set(q, mkvp.EP11WK)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Sign(bg, q, priv, hsm.MechECDSA, hsm.Params{}, digest[:]); !errors.Is(err, hsm.ErrWrongMK) {
		t.Fatalf("signature with a key under the replaced wrapping key: %v, want ErrWrongMK", err)
	}
	if n := snapQueue(t, h, q).opened.len(); n != 0 {
		t.Fatalf("%d keys cached under the new wrapping key", n)
	}
}

// TestKeyCacheBounded: the cache never holds more than maxOpenedKeys.
func TestKeyCacheBounded(t *testing.T) {
	var c keyCache
	for i := range maxOpenedKeys*2 + 3 {
		c.put([]byte{byte(i), byte(i >> 8)}, &usable{})
		if c.len() > maxOpenedKeys {
			t.Fatalf("%d keys cached, bound %d", c.len(), maxOpenedKeys)
		}
	}
}

// BenchmarkSign: ECDSA P-256 and RSA-2048 signatures through the
// simulator (the opened key cached), for the CPU an adapter's work costs
// here.
func BenchmarkSign(b *testing.B) {
	dir := b.TempDir()
	if err := Init(dir, testTopology()); err != nil {
		b.Fatal(err)
	}
	h := openSim(b, dir)
	digest := sha256.Sum256([]byte("data"))
	for _, c := range []struct {
		name string
		spec hsm.KeySpec
		m    hsm.Mechanism
	}{{"ecdsa-p256", hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}, hsm.MechECDSA}, {"rsa-2048", hsm.KeySpec{Type: hsm.KeyRSA, Bits: 2048}, hsm.MechRSAPKCS}} {
		priv, _, err := h.GenerateKeyPair(bg, ccaIDs[0], c.spec)
		if err != nil {
			b.Fatal(err)
		}
		in := digest[:]
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := h.Sign(bg, ccaIDs[0], priv, c.m, hsm.Params{}, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
