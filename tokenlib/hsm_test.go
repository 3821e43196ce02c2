package tokenlib

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

var (
	cca1 = apqn.MustParse("01.0033")
	cca2 = apqn.MustParse("02.0033")
)

func officer(t testing.TB, layout paths.Layout) *sim.HSM {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	must(t, err)
	t.Cleanup(func() { h.Close() })
	return h
}

// setNewMK loads a random new master key of type mt on q and activates it.
func setNewMK(t testing.TB, o *sim.HSM, q apqn.ID, mt mkvp.Type) {
	t.Helper()
	ctx := context.Background()
	_, err := o.LoadNew(ctx, q, mt, nil, hsm.Part{})
	must(t, err)
	must(t, o.Set(ctx, q, mt))
}

func encryptOnce(l *Library, h SessionHandle, k ObjectHandle) error {
	m := Mechanism{Type: ck.CKM_AES_ECB}
	if err := l.EncryptInit(h, m, k); err != nil {
		return err
	}
	_, err := l.Encrypt(h, make([]byte, 16), make([]byte, 16))
	return err
}

func TestAPQNFailover(t *testing.T) {
	l, layout := newTestLib(t)
	h := userSession(t, l, slotCCA)
	k := genAES(t, l, h, "k", true)
	o := officer(t, layout)
	must(t, o.Do(context.Background(), func(tx *sim.Tx) error { return tx.SetOnline(cca1, false) }))
	// Every call succeeds: calls that start on the offline APQN move on.
	for range 6 {
		must(t, encryptOnce(l, h, k))
	}
	must(t, o.Do(context.Background(), func(tx *sim.Tx) error { return tx.SetOnline(cca2, false) }))
	err := encryptOnce(l, h, k)
	wantRV(t, err, ck.CKR_DEVICE_ERROR)
	if !strings.Contains(err.Error(), "no APQN") {
		t.Fatalf("message: %v", err)
	}
	must(t, o.Do(context.Background(), func(tx *sim.Tx) error { return tx.SetOnline(cca1, true) }))
	must(t, encryptOnce(l, h, k))
}

func writeCCAConf(t testing.TB, layout paths.Layout, body string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(layout.ConfDir(), "ccatok.conf"), []byte(body), 0o644))
}

func TestExpectedMKVPs(t *testing.T) {
	layout := writeTestRoot(t)
	o := officer(t, layout)
	qi, err := o.Queue(context.Background(), cca1)
	must(t, err)
	aes := qi.MK[mkvp.CCAAES].Current.Pattern

	t.Run("configured and matching", func(t *testing.T) {
		writeCCAConf(t, layout, "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\nEXPECTED_MKVPS {\n AES = \""+aes.String()+"\"\n}\n")
		l := openTestLib(t, layout)
		initTestToken(t, l, slotCCA)
		h := userSession(t, l, slotCCA)
		genAES(t, l, h, "ok", true)
	})
	t.Run("configured and different", func(t *testing.T) {
		writeCCAConf(t, layout, "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\nEXPECTED_MKVPS {\n AES = \"0011223344556677\"\n}\n")
		l := openTestLib(t, layout)
		h := userSession(t, l, slotCCA)
		_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("x", true))
		wantRV(t, err, ck.CKR_DEVICE_ERROR)
		for _, want := range []string{"01.0033", aes.String(), "0011223344556677", "expected"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		}
		// Objects without the HSM still work: the token is usable for
		// everything but crypto.
		_, err = l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), String(ck.CKA_LABEL, "d")})
		must(t, err)
	})
	t.Run("APQNs disagree", func(t *testing.T) {
		writeCCAConf(t, layout, "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n")
		setNewMK(t, o, cca2, mkvp.CCAAES)
		l := openTestLib(t, layout)
		h := userSession(t, l, slotCCA)
		_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("x", true))
		wantRV(t, err, ck.CKR_DEVICE_ERROR)
		if !strings.Contains(err.Error(), "02.0033") || !strings.Contains(err.Error(), "other APQNs") {
			t.Fatalf("message %q", err)
		}
		// A token on one APQN only is fine.
		writeCCAConf(t, layout, "APQN_ALLOWLIST\n1 0x33\nEND\n")
		l2 := openTestLib(t, layout)
		h2 := userSession(t, l2, slotCCA)
		genAES(t, l2, h2, "one", true)
	})
}

// TestNewKeyPatternChecked: when the master key changes under a running
// token (outside any master key change procedure), new keys no longer
// carry the expected pattern and are refused.
func TestNewKeyPatternChecked(t *testing.T) {
	l, layout := newTestLib(t)
	h := userSession(t, l, slotEP11)
	before := find(t, l, h)
	o := officer(t, layout)
	ctx := context.Background()
	q := apqn.MustParse("06.0033")
	_, err := o.LoadNew(ctx, q, mkvp.EP11WK, nil, hsm.Part{})
	must(t, err)
	must(t, o.Commit(ctx, q))
	must(t, o.Set(ctx, q, mkvp.EP11WK))
	_, err = l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("x", true))
	wantRV(t, err, ck.CKR_DEVICE_ERROR)
	if !strings.Contains(err.Error(), "expected") {
		t.Fatalf("message %q", err)
	}
	if after := find(t, l, h); len(after) != len(before) {
		t.Fatal("a refused key was stored")
	}
}

// TestAPQNOnlineLater: an APQN offline when the token started joins once
// every APQN of the pool failed.
func TestAPQNOnlineLater(t *testing.T) {
	layout := writeTestRoot(t)
	o := officer(t, layout)
	ctx := context.Background()
	must(t, o.Do(ctx, func(tx *sim.Tx) error { return tx.SetOnline(cca2, false) }))
	l := openTestLib(t, layout)
	initTestToken(t, l, slotCCA)
	h := userSession(t, l, slotCCA)
	k := genAES(t, l, h, "k", true)
	must(t, o.Do(ctx, func(tx *sim.Tx) error {
		if err := tx.SetOnline(cca2, true); err != nil {
			return err
		}
		return tx.SetOnline(cca1, false)
	}))
	wantRV(t, encryptOnce(l, h, k), ck.CKR_DEVICE_ERROR)
	must(t, encryptOnce(l, h, k))
	qs, err := l.TokenAPQNs(slotCCA)
	must(t, err)
	if len(qs) != 1 || qs[0].ID != cca2 {
		t.Fatalf("token APQNs %v", qs)
	}
}
