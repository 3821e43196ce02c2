package tokenlib

import (
	"bytes"
	"context"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestOutOfBandRollbackUndone: the officer changes the EP11 wrapping key
// outside any master key change while an application runs, and then puts
// the previous key back. In between, the application's key generation is
// refused ("a master key was changed outside a master key change
// procedure") and its keys do not work; once the previous key is back, the
// same running library works again, without a restart.
func TestOutOfBandRollbackUndone(t *testing.T) {
	layout := writeTestRoot(t)
	o := officer(t, layout)
	ctx := context.Background()
	q := apqn.MustParse("06.0033")
	setWK := func(fill byte) {
		t.Helper()
		_, err := o.LoadNew(ctx, q, mkvp.EP11WK, bytes.Repeat([]byte{fill}, 32), hsm.Part{})
		must(t, err)
		must(t, o.Commit(ctx, q))
		must(t, o.Set(ctx, q, mkvp.EP11WK))
	}
	setWK(0xa0) // a wrapping key the test can load again

	l := openTestLib(t, layout)
	initTestToken(t, l, slotEP11)
	h := userSession(t, l, slotEP11)
	key := genAES(t, l, h, "before", true)
	encrypt := func() error {
		if err := l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, key); err != nil {
			return err
		}
		out := make([]byte, 16)
		_, err := l.Encrypt(h, make([]byte, 16), out)
		return err
	}
	must(t, encrypt())

	setWK(0xb0) // out of band
	if _, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("during", true)); err == nil {
		t.Fatal("a key was made under a wrapping key the token's keys are not under")
	}
	// Applications keep trying: every failure makes the token check its
	// adapters again.
	for range 3 {
		if err := encrypt(); err == nil {
			t.Fatal("a key under the previous wrapping key still worked")
		}
		if _, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("during", true)); err == nil {
			t.Fatal("a key was made under a wrapping key the token's keys are not under")
		}
	}

	setWK(0xa0) // the officer undoes it
	if _, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("after", true)); err != nil {
		t.Fatalf("key generation after the rollback was undone: %v", err)
	}
	must(t, encrypt())
}
