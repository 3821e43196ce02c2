package mkchange

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

var (
	cca1 = apqn.MustParse("01.0033")
	cca2 = apqn.MustParse("02.0033")
	ep1  = apqn.MustParse("06.0033")
	ep2  = apqn.MustParse("0e.0033")
)

type fixture struct {
	t   testing.TB
	ctx context.Context
	hsm *sim.HSM
	st  *store.Store
	dk  *store.DataKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	err := sim.Init(filepath.Join(dir, "sim"), sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{cca1, cca2}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{ep1, ep2}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := sim.Open(filepath.Join(dir, "sim"), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	cheap := store.KDF{Algorithm: store.KDFArgon2id, Time: 1, MemoryKiB: 64, Threads: 1}
	st, err := store.Open(filepath.Join(dir, "token"), store.Options{KDF: cheap, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.InitToken(ctx, []byte("87654321"), "cca"); err != nil {
		t.Fatal(err)
	}
	so, err := st.Login(ctx, store.SO, []byte("87654321"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.InitUserPIN(ctx, so, []byte("12345678")); err != nil {
		t.Fatal(err)
	}
	dk, err := st.Login(ctx, store.User, []byte("12345678"))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: ctx, hsm: h, st: st, dk: dk}
}

// key stores a key object whose blob the simulator made on q.
func (f *fixture) key(q apqn.ID, spec hsm.KeySpec, label string, private bool) *store.Object {
	f.t.Helper()
	var blob []byte
	var err error
	class := ck.CKO_SECRET_KEY
	if spec.Type == hsm.KeyEC || spec.Type == hsm.KeyRSA {
		blob, _, err = f.hsm.GenerateKeyPair(f.ctx, q, spec)
		class = ck.CKO_PRIVATE_KEY
	} else {
		blob, err = f.hsm.GenerateKey(f.ctx, q, spec)
	}
	if err != nil {
		f.t.Fatal(err)
	}
	o := &store.Object{Class: uint(class), Private: private, Attrs: map[uint32][]byte{
		uint32(ck.CKA_LABEL): []byte(label), attrOpaque: blob,
	}}
	if err := f.st.Create(f.ctx, f.dk, o); err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *fixture) get(o *store.Object) map[uint32][]byte {
	f.t.Helper()
	got, err := f.st.Get(f.ctx, f.dk, o.Handle)
	if err != nil {
		f.t.Fatal(err)
	}
	return got.Attrs
}

func (f *fixture) loadNew(t mkvp.Type, qs ...apqn.ID) mkvp.Pattern {
	f.t.Helper()
	key := bytes.Repeat([]byte{0x42}, sim.KeySize(t))
	var p mkvp.Pattern
	for _, q := range qs {
		var err error
		if p, err = f.hsm.LoadNew(f.ctx, q, t, key, hsm.Part{}); err != nil {
			f.t.Fatal(err)
		}
		if t == mkvp.EP11WK {
			if err := f.hsm.Commit(f.ctx, q); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	return p
}

func (f *fixture) set(t mkvp.Type, qs ...apqn.ID) {
	f.t.Helper()
	for _, q := range qs {
		if err := f.hsm.Set(f.ctx, q, t); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) current(q apqn.ID, t mkvp.Type) mkvp.Pattern {
	info, err := f.hsm.Queue(f.ctx, q)
	if err != nil {
		f.t.Fatal(err)
	}
	return info.MK[t].Current.Pattern
}

func encrypt(t testing.TB, f *fixture, q apqn.ID, blob, data []byte) ([]byte, error) {
	return f.hsm.Encrypt(f.ctx, q, blob, hsm.MechAESCBC, hsm.Params{IV: make([]byte, 16)}, data)
}

func TestCCARotation(t *testing.T) {
	f := newFixture(t)
	aes := f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, "aes", true)
	des := f.key(cca2, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, "des", false)
	ec := f.key(cca1, hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}, "ec", true)
	data := &store.Object{Class: uint(ck.CKO_DATA), Attrs: map[uint32][]byte{uint32(ck.CKA_VALUE): []byte("x")}}
	if err := f.st.Create(f.ctx, f.dk, data); err != nil {
		t.Fatal(err)
	}
	oldAES := f.current(cca1, mkvp.CCAAES)
	plain := bytes.Repeat([]byte("secret!!"), 4)
	before, err := encrypt(t, f, cca1, f.get(aes)[attrOpaque], plain)
	if err != nil {
		t.Fatal(err)
	}

	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Abc123", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	tok := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2},
		Expected: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: oldAES}}
	if !tok.Affected(op) {
		t.Fatal("not affected")
	}
	cur, err := tok.Query(f.ctx, f.hsm, op, state.ActReencipher, nil)
	if err != nil || cur[mkvp.CCAAES] != oldAES {
		t.Fatalf("reencipher query: %v %v", cur, err)
	}
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActFinalize, nil); err == nil || !strings.Contains(err.Error(), "is not the operation's new one") {
		t.Fatalf("finalize query before set: %v", err)
	}
	n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil)
	if err != nil || n != 1 {
		t.Fatalf("reencipher pass: %d %v", n, err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n != 0 {
		t.Fatalf("repeated pass changed %d objects: %v", n, err)
	}
	if _, ok := f.get(des)[attrReenc]; ok {
		t.Fatal("DES key (SYM master key) re-enciphered for an AES change")
	}
	if _, ok := f.get(ec)[attrReenc]; ok {
		t.Fatal("EC key (APKA master key) re-enciphered for an AES change")
	}
	reenc := f.get(aes)[attrReenc]
	if ri, _ := hsm.Inspect(reenc); ri.Pattern != newAES {
		t.Fatalf("REENC under %s, want %s", ri.Pattern, newAES)
	}

	// The officer activates APQN by APQN. Meanwhile cancel is possible
	// only before the first activation, finalize only after the last.
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActCancel, cur); err != nil {
		t.Fatalf("cancel query before set: %v", err)
	}
	f.set(mkvp.CCAAES, cca1)
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActCancel, cur); err == nil || !strings.Contains(err.Error(), "no longer the one") {
		t.Fatalf("cancel query after a set: %v", err)
	}
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActFinalize, nil); err == nil {
		t.Fatal("finalize query with one APQN left")
	}
	// The old blob still works on the activated APQN (OLD register).
	if _, err := encrypt(t, f, cca1, f.get(aes)[attrOpaque], plain); err != nil {
		t.Fatalf("old blob after set: %v", err)
	}
	f.set(mkvp.CCAAES, cca2)
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActFinalize, nil); err != nil {
		t.Fatalf("finalize query: %v", err)
	}
	n, err = tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, nil)
	if err != nil || n != 1 {
		t.Fatalf("finalize pass: %d %v", n, err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, nil); err != nil || n != 0 {
		t.Fatalf("repeated finalize changed %d: %v", n, err)
	}
	attrs := f.get(aes)
	if oi, _ := hsm.Inspect(attrs[attrOpaque]); oi.Pattern != newAES {
		t.Fatal("OPAQUE not under the new key")
	}
	if oi, _ := hsm.Inspect(attrs[attrOld]); oi.Pattern != oldAES {
		t.Fatal("OLD not under the old key")
	}
	if _, ok := attrs[attrReenc]; ok {
		t.Fatal("REENC left after finalize")
	}
	after, err := encrypt(t, f, cca2, attrs[attrOpaque], plain)
	if err != nil || !bytes.Equal(after, before) {
		t.Fatalf("key changed meaning across the rotation: %v", err)
	}
}

func TestCancelAndErrors(t *testing.T) {
	f := newFixture(t)
	aes := f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}, "aes", false)
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Abc123", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	tok := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}}

	// Finalizing a key that was never re-enciphered would lose it.
	if _, err := Finalize(f.get(aes), op); !errors.Is(err, ErrNoReenc) {
		t.Fatalf("finalize without REENC: %v", err)
	}
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActCancel, nil); err != nil || n != 1 {
		t.Fatalf("cancel pass: %d %v", n, err)
	}
	if _, ok := f.get(aes)[attrReenc]; ok {
		t.Fatal("REENC left after cancel")
	}

	queryErr := func(tok Token, op *state.Op, a state.Action, want string) {
		t.Helper()
		_, err := tok.Query(f.ctx, f.hsm, op, a, nil)
		if err == nil || !strings.Contains(err.Error(), want) || errclass.Hint(err) == "" && !strings.Contains(want, "no CURRENT") {
			t.Errorf("query: %v, want %q", err, want)
		}
	}
	queryErr(Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, apqn.MustParse("03.0033")}}, op, state.ActReencipher,
		"APQN 03.0033 must be included in this operation")
	wrong := &state.Op{ID: "Abc124", APQNs: op.APQNs, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: mustPattern(mkvp.CCAAES, "0102030405060708")}}
	queryErr(tok, wrong, state.ActReencipher, "does not match the specified pattern 0102030405060708")
	apka := &state.Op{ID: "Abc125", APQNs: op.APQNs, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAPKA: newAES}}
	queryErr(tok, apka, state.ActReencipher, "no NEW CCA APKA master key is loaded on APQN 01.0033 (NEW is empty)")
	expect := tok
	expect.Expected = map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: mustPattern(mkvp.CCAAES, "1111111111111111")}
	queryErr(expect, op, state.ActReencipher, "does not match the expected one (1111111111111111)")

	// The configuration must follow the change before finalize.
	f.set(mkvp.CCAAES, cca1, cca2)
	old := mustPattern(mkvp.CCAAES, "1111111111111111")
	stale := tok
	stale.Configured = func() (map[mkvp.Type]mkvp.Pattern, string, error) {
		return map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: old}, "/etc/pkcshsm/ccatok.conf", nil
	}
	queryErr(stale, op, state.ActFinalize, "the expected CCA AES pattern in /etc/pkcshsm/ccatok.conf (1111111111111111) does not specify the new master key")
	// Offline APQNs cannot be checked.
	if err := f.hsm.Do(f.ctx, func(tx *sim.Tx) error { return tx.SetOnline(cca2, false) }); err != nil {
		t.Fatal(err)
	}
	queryErr(tok, op, state.ActFinalize, "APQN 02.0033 is offline")
}

func TestEP11Rotation(t *testing.T) {
	f := newFixture(t)
	k := f.key(ep1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, "ep11-aes", true)
	rsa := f.key(ep2, hsm.KeySpec{Type: hsm.KeyEC, Bits: 384}, "ep11-ec", true)
	newWK := f.loadNew(mkvp.EP11WK, ep1, ep2)
	op := &state.Op{ID: "Ep1100", APQNs: apqn.List{ep1, ep2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.EP11WK: newWK}}
	tok := Token{Slot: 4, Type: config.TypeEP11, APQNAny: true, APQNs: []apqn.ID{ep1, ep2}}
	cca := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1}}
	if !tok.Affected(op) || cca.Affected(op) {
		t.Fatal("affectedness")
	}
	if _, err := tok.Query(f.ctx, f.hsm, op, state.ActReencipher, nil); err != nil {
		t.Fatal(err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n != 2 {
		t.Fatalf("pass: %d %v", n, err)
	}
	f.set(mkvp.EP11WK, ep1, ep2)
	// EP11 has no OLD register: the old blob is dead now, the REENC works.
	if _, err := encrypt(t, f, ep1, f.get(k)[attrOpaque], make([]byte, 16)); !errors.Is(err, hsm.ErrWrongMK) {
		t.Fatalf("old EP11 blob after set: %v", err)
	}
	if _, err := encrypt(t, f, ep1, f.get(k)[attrReenc], make([]byte, 16)); err != nil {
		t.Fatalf("REENC blob after set: %v", err)
	}
	var done, total int
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, func(d, tt int) { done, total = d, tt }); err != nil || n != 2 {
		t.Fatalf("finalize: %d %v", n, err)
	}
	if done != 2 || total != 2 {
		t.Fatalf("progress %d/%d", done, total)
	}
	if _, err := encrypt(t, f, ep2, f.get(k)[attrOpaque], make([]byte, 16)); err != nil {
		t.Fatalf("finalized blob: %v", err)
	}
	if _, ok := f.get(rsa)[attrOld]; !ok {
		t.Fatal("no OLD blob")
	}
}

func mustPattern(t mkvp.Type, s string) mkvp.Pattern {
	p, _, err := mkvp.Parse(t, s)
	if err != nil {
		panic(err)
	}
	return p
}
