package tokenlib

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// BenchmarkAESCBCEncrypt4K encrypts 4 KiB with AES-256-CBC and a secure
// token key: Init + single-part Encrypt, through the simulated HSM.
func BenchmarkAESCBCEncrypt4K(b *testing.B) {
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		b.Run(slot.name(), func(b *testing.B) {
			l, _ := newTestLib(b)
			h := userSession(b, l, slot)
			k := genAES(b, l, h, "bench", true)
			data := bytes.Repeat([]byte{1}, 4096)
			out := make([]byte, 4096)
			m := Mechanism{Type: ck.CKM_AES_CBC, Param: bytes.Repeat([]byte{2}, 16)}
			b.SetBytes(4096)
			b.ResetTimer()
			for b.Loop() {
				must(b, l.EncryptInit(h, m, k))
				if _, err := l.Encrypt(h, data, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGenerateAESTokenKey makes durable AES-256 token keys (HSM key
// generation, blob check, one committed store transaction).
func BenchmarkGenerateAESTokenKey(b *testing.B) {
	l, _ := newTestLib(b)
	h := userSession(b, l, slotCCA)
	b.ResetTimer()
	for b.Loop() {
		genAES(b, l, h, "bench", true)
	}
}

// BenchmarkFindObjects10k searches 10,000 token objects (5,000 private
// keys' worth of data objects and 5,000 public) for one label; the object
// cache is warm, every search revalidates it against the store.
func BenchmarkFindObjects10k(b *testing.B) {
	l, layout := newTestLib(b)
	fill10k(b, layout)
	h := userSession(b, l, slotCCA)
	want := []Attribute{String(ck.CKA_LABEL, "obj-04242")}
	if n := len(find(b, l, h, want...)); n != 1 {
		b.Fatalf("found %d", n)
	}
	b.ResetTimer()
	for b.Loop() {
		must(b, l.FindObjectsInit(h, want))
		hs, err := l.FindObjects(h, 10)
		if err != nil || len(hs) != 1 {
			b.Fatal(err, len(hs))
		}
		must(b, l.FindObjectsFinal(h))
	}
}

// BenchmarkFindObjects10kAfterForeignChange is the worst case of the
// cache: before every search another store handle (as another process
// would) creates an object, so the search reloads all 10,000 objects.
func BenchmarkFindObjects10kAfterForeignChange(b *testing.B) {
	l, layout := newTestLib(b)
	fill10k(b, layout)
	st, err := store.Open(layout.TokenDir("ccatok"), store.Options{KDF: testKDF})
	must(b, err)
	defer st.Close()
	h := userSession(b, l, slotCCA)
	want := []Attribute{String(ck.CKA_LABEL, "obj-04242")}
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		tmpl := template{ck.CKA_CLASS: ulongBytes(uint(ck.CKO_DATA)), ck.CKA_TOKEN: boolBytes(true), ck.CKA_PRIVATE: boolBytes(false)}
		_ = objectDefaults(tmpl, ck.CKO_DATA)
		so := toStore(&object{attrs: tmpl})
		so.UniqueID = ""
		must(b, st.Create(ctx, nil, so))
		b.StartTimer()
		must(b, l.FindObjectsInit(h, want))
		hs, err := l.FindObjects(h, 10)
		if err != nil || len(hs) != 1 {
			b.Fatal(err, len(hs))
		}
		must(b, l.FindObjectsFinal(h))
	}
}

// fill10k stores 10,000 data objects (half private) in the CCA token in one
// transaction: 10,000 creates through the engine would time the store's
// commits, not the search.
func fill10k(b *testing.B, layout paths.Layout) {
	st, err := store.Open(layout.TokenDir("ccatok"), store.Options{KDF: testKDF})
	must(b, err)
	ctx := context.Background()
	dk, err := st.Login(ctx, store.User, []byte(userPIN))
	must(b, err)
	err = st.Batch(ctx, dk, func(tx *store.Tx) error {
		for i := range 10000 {
			tmpl := template{
				ck.CKA_CLASS: ulongBytes(uint(ck.CKO_DATA)), ck.CKA_TOKEN: boolBytes(true),
				ck.CKA_PRIVATE: boolBytes(i%2 == 0), ck.CKA_LABEL: fmt.Appendf(nil, "obj-%05d", i),
			}
			_ = objectDefaults(tmpl, ck.CKO_DATA)
			so := toStore(&object{attrs: tmpl})
			so.UniqueID = ""
			if err := tx.Create(so); err != nil {
				return err
			}
		}
		return nil
	})
	must(b, err)
	st.Close()
}

// BenchmarkLogin logs the USER in and out with the store's default PIN
// derivation (Argon2id, 19 MiB, 2 passes).
func BenchmarkLogin(b *testing.B) {
	layout := writeTestRoot(b)
	l, err := Open(Options{Layout: layout})
	must(b, err)
	defer l.Close()
	initTestToken(b, l, slotCCA)
	h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(b, err)
	b.ResetTimer()
	for b.Loop() {
		must(b, l.Login(h, ck.CKU_USER, []byte(userPIN)))
		must(b, l.Logout(h))
	}
}
