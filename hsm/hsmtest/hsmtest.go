// Package hsmtest is the contract every hsm.Backend (with its hsm.Officer)
// must pass: register transitions, which secure keys work on which APQN
// before and after each officer step, both re-encipher directions, every
// mechanism and the error classes.
//
// A backend's tests call [Run] with a function that makes a fresh
// environment for each subtest:
//
//	func TestContract(t *testing.T) {
//		hsmtest.Run(t, func(t *testing.T) hsmtest.Env {
//			h := newBackend(t) // CURRENT keys valid, NEW registers empty
//			return hsmtest.Env{Backend: h, Officer: h, CCA: ccaAPQNs, EP11: ep11APQNs}
//		})
//	}
package hsmtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"slices"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Env is one fresh backend under test.
type Env struct {
	Backend hsm.Backend
	Officer hsm.Officer
	// CCA and EP11 list APQNs of each mode, online, with valid CURRENT
	// master keys and empty NEW registers; at least one of each, and two
	// EP11 APQNs with the same wrapping key and no EP11 session.
	CCA, EP11 []apqn.ID
	// Limits are what the backend refuses by design; the suite checks
	// each is refused with the error named instead of using it.
	Limits Limits
}

// Limits of a backend against the full contract (the simulator has
// none). The host backends follow what IBM's libraries offer as
// openCryptoki uses them (docs/ARCHITECTURE.md, "Host libraries").
type Limits struct {
	// NoCCAKeyWrap: AES-KW/KWP with CCA keys fails with ErrMechanism
	// (openCryptoki's CCA token has no AES key wrap verb).
	NoCCAKeyWrap bool
	// NoCCAImport: ImportKey on CCA APQNs fails with ErrMechanism.
	NoCCAImport bool
	// NoCCAOAEPLabel: RSA-OAEP with a label on CCA fails with
	// ErrMechanism (CSNDPKD takes none).
	NoCCAOAEPLabel bool
	// NoCCASymOldPattern: the CCA SYM OLD register's state is reported,
	// its pattern is not (zero).
	NoCCASymOldPattern bool
	// NoCCADES3ECB: DES3-ECB with CCA keys fails with ErrMechanism (the
	// CCA DES encipher verbs CSNBENC/CSNBDEC offer CBC-based modes only,
	// CCA Basic Services Reference, "Encipher").
	NoCCADES3ECB bool
	// NoEP11SessionStatus: SessionStatus fails with FailedPrecondition
	// (the EP11 host library reports no session count).
	NoEP11SessionStatus bool
}

// Run runs the contract suite; newEnv is called once per subtest.
func Run(t *testing.T, newEnv func(t *testing.T) Env) { RunOnly(t, newEnv) }

// RunOnly runs the named subtests of the suite (all when none is named);
// naming one the suite does not have is an error.
func RunOnly(t *testing.T, newEnv func(t *testing.T) Env, names ...string) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e Env)
	}{
		{"Queues", testQueues},
		{"UnknownAPQN", testUnknownAPQN},
		{"CCATransitions", testCCATransitions},
		{"CCAKeyParts", testCCAKeyParts},
		{"EP11Transitions", testEP11Transitions},
		{"WrongStateChangesNothing", testWrongState},
		{"CCABlobLifecycle", testCCALifecycle},
		{"EP11BlobLifecycle", testEP11Lifecycle},
		{"Mechanisms", testMechanisms},
		{"KnownAnswers", testKnownAnswers},
		{"Errors", testErrors},
		{"EP11SessionLogin", testSessionLogin},
		{"EP11SessionBinding", testSessionBinding},
		{"EP11SessionReencipher", testSessionReencipher},
	}
	for _, n := range names {
		if !slices.ContainsFunc(tests, func(tc struct {
			name string
			fn   func(t *testing.T, e Env)
		}) bool {
			return tc.name == n
		}) {
			t.Fatalf("hsmtest: no subtest %q", n)
		}
	}
	for _, tc := range tests {
		if len(names) > 0 && !slices.Contains(names, tc.name) {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if len(e.CCA) == 0 || len(e.EP11) == 0 || e.Backend == nil || e.Officer == nil {
				t.Fatal("hsmtest: Env needs a Backend, an Officer and at least one CCA and one EP11 APQN")
			}
			tc.fn(t, e)
		})
	}
}

var ctx = context.Background()

func queue(t *testing.T, e Env, q apqn.ID) hsm.QueueInfo {
	t.Helper()
	info, err := e.Backend.Queue(ctx, q)
	if err != nil {
		t.Fatalf("Queue(%s): %v", q, err)
	}
	return info
}

// wantErr asserts err matches the sentinel and has its class.
func wantErr(t *testing.T, what string, err, sentinel error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("%s: err = %v, want %v", what, err, sentinel)
	}
	if got, want := errclass.Of(err), errclass.Of(sentinel); got != want {
		t.Fatalf("%s: class %s, want %s (err %v)", what, got, want, err)
	}
}

func must[T any](t *testing.T, what string) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func ok(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func testQueues(t *testing.T, e Env) {
	qs, err := e.Backend.Queues(ctx)
	ok(t, "Queues", err)
	if !slices.IsSortedFunc(qs, func(a, b hsm.QueueInfo) int { return a.ID.Compare(b.ID) }) {
		t.Error("Queues not in ascending order")
	}
	byID := map[apqn.ID]hsm.QueueInfo{}
	for _, q := range qs {
		byID[q.ID] = q
	}
	check := func(ids []apqn.ID, mode apqn.Mode, types []mkvp.Type) {
		for _, id := range ids {
			q, found := byID[id]
			if !found {
				t.Fatalf("Queues lacks %s", id)
			}
			if q.Mode != mode || !q.Online {
				t.Errorf("%s: mode %s online %v, want %s online", id, q.Mode, q.Online, mode)
			}
			if len(q.MK) != len(types) {
				t.Errorf("%s: %d MK types, want %d", id, len(q.MK), len(types))
			}
			for _, mt := range types {
				r := q.MK[mt]
				if r.Current.State != apqn.StateValid || r.Current.Pattern.Len() != mt.Size() {
					t.Errorf("%s %s CURRENT = %v %s, want valid with a %d-byte pattern", id, mt, r.Current.State, r.Current.Pattern, mt.Size())
				}
				if r.New.State != apqn.StateEmpty || !r.New.Pattern.IsZero() {
					t.Errorf("%s %s NEW = %v, want empty", id, mt, r.New.State)
				}
			}
		}
	}
	check(e.CCA, apqn.ModeCCA, mkvp.CCATypes())
	check(e.EP11, apqn.ModeEP11, []mkvp.Type{mkvp.EP11WK})
	if r := byID[e.EP11[0]].MK[mkvp.EP11WK]; r.Old != (hsm.Register{}) {
		t.Errorf("EP11 has an OLD register: %+v", r.Old)
	}
}

func testUnknownAPQN(t *testing.T, e Env) {
	ghost := apqn.ID{Card: 0xfe, Domain: 0xfffe}
	_, err := e.Backend.Queue(ctx, ghost)
	wantErr(t, "Queue", err, hsm.ErrNoSuchAPQN)
	_, err = e.Backend.GenerateKey(ctx, ghost, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	wantErr(t, "GenerateKey", err, hsm.ErrNoSuchAPQN)
	_, err = e.Officer.LoadNew(ctx, ghost, mkvp.CCAAES, nil, hsm.Part{})
	wantErr(t, "LoadNew", err, hsm.ErrNoSuchAPQN)
}

func testCCATransitions(t *testing.T, e Env) {
	q := e.CCA[0]
	for _, mt := range mkvp.CCATypes() {
		before := queue(t, e, q).MK[mt]
		p := must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mt, nil, hsm.Part{}))
		r := queue(t, e, q).MK[mt]
		if r.New.State != apqn.StateFull || r.New.Pattern != p || p.Len() != mt.Size() {
			t.Fatalf("%s after load: NEW %v %s, want full %s", mt, r.New.State, r.New.Pattern, p)
		}
		if r.Current != before.Current {
			t.Fatalf("%s: load changed CURRENT", mt)
		}
		ok(t, "Set", e.Officer.Set(ctx, q, mt))
		r = queue(t, e, q).MK[mt]
		wantOld := before.Current.Pattern
		if mt == mkvp.CCASYM && e.Limits.NoCCASymOldPattern {
			wantOld = mkvp.Pattern{}
		}
		if r.New.State != apqn.StateEmpty || r.Current.State != apqn.StateValid || r.Current.Pattern != p ||
			r.Old.State != apqn.StateValid || r.Old.Pattern != wantOld {
			t.Fatalf("%s after set: %+v", mt, r)
		}
		// Load and clear leaves everything else as it was.
		must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mt, nil, hsm.Part{}))
		ok(t, "ClearNew", e.Officer.ClearNew(ctx, q, mt))
		if r2 := queue(t, e, q).MK[mt]; r2 != r {
			t.Fatalf("%s after load+clear: %+v, want %+v", mt, r2, r)
		}
	}
	wantErr(t, "Commit on CCA", e.Officer.Commit(ctx, q), hsm.ErrWrongMode)
	_, err := e.Officer.LoadNew(ctx, q, mkvp.EP11WK, nil, hsm.Part{})
	wantErr(t, "LoadNew WK on CCA", err, hsm.ErrWrongMode)
}

func testCCAKeyParts(t *testing.T, e Env) {
	q := e.CCA[0]
	k1 := bytes.Repeat([]byte{0x5c}, 32)
	k2 := bytes.Repeat([]byte{0x3a}, 32)
	p := must[mkvp.Pattern](t, "part 1/2")(e.Officer.LoadNew(ctx, q, mkvp.CCAAES, k1, hsm.Part{Index: 1, Total: 2}))
	if !p.IsZero() {
		t.Errorf("part 1/2 returned pattern %s, want none", p)
	}
	r := queue(t, e, q).MK[mkvp.CCAAES]
	if r.New.State != apqn.StatePartial {
		t.Fatalf("after part 1/2 NEW is %v, want partial", r.New.State)
	}
	_, err := e.Officer.LoadNew(ctx, q, mkvp.CCAAES, k1, hsm.Part{Index: 1, Total: 2})
	wantErr(t, "part 1/2 twice", err, hsm.ErrRegisterState)
	wantErr(t, "Set while partial", e.Officer.Set(ctx, q, mkvp.CCAAES), hsm.ErrRegisterState)
	p = must[mkvp.Pattern](t, "part 2/2")(e.Officer.LoadNew(ctx, q, mkvp.CCAAES, k2, hsm.Part{Index: 2, Total: 2}))
	r = queue(t, e, q).MK[mkvp.CCAAES]
	if r.New.State != apqn.StateFull || r.New.Pattern != p || p.IsZero() {
		t.Fatalf("after part 2/2: NEW %v %s (returned %s)", r.New.State, r.New.Pattern, p)
	}
	// The parts add up (XOR) to the key a single load gives.
	x := make([]byte, 32)
	for i := range x {
		x[i] = k1[i] ^ k2[i]
	}
	ok(t, "ClearNew", e.Officer.ClearNew(ctx, q, mkvp.CCAAES))
	single := must[mkvp.Pattern](t, "single load")(e.Officer.LoadNew(ctx, q, mkvp.CCAAES, x, hsm.Part{}))
	if single != p {
		t.Errorf("XOR of parts gives %s, single load of the XOR %s", p, single)
	}
	// AES and APKA patterns are IBM's: SHA-256(0x01 || key)[:8].
	sum := sha256.Sum256(append([]byte{0x01}, x...))
	if !bytes.Equal(single.Bytes(), sum[:8]) {
		t.Errorf("AES pattern %s, want %x", single, sum[:8])
	}
}

func testEP11Transitions(t *testing.T, e Env) {
	q := e.EP11[0]
	before := queue(t, e, q).MK[mkvp.EP11WK]
	wantErr(t, "Commit with NEW empty", e.Officer.Commit(ctx, q), hsm.ErrRegisterState)
	p := must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mkvp.EP11WK, nil, hsm.Part{}))
	r := queue(t, e, q).MK[mkvp.EP11WK]
	if r.New.State != apqn.StateUncommitted || r.New.Pattern != p || p.Len() != 16 {
		t.Fatalf("after load: NEW %v %s, want uncommitted %s", r.New.State, r.New.Pattern, p)
	}
	wantErr(t, "Set uncommitted", e.Officer.Set(ctx, q, mkvp.EP11WK), hsm.ErrRegisterState)
	ok(t, "Commit", e.Officer.Commit(ctx, q))
	if r = queue(t, e, q).MK[mkvp.EP11WK]; r.New.State != apqn.StateCommitted {
		t.Fatalf("after commit: NEW %v", r.New.State)
	}
	wantErr(t, "Commit twice", e.Officer.Commit(ctx, q), hsm.ErrRegisterState)
	ok(t, "Set", e.Officer.Set(ctx, q, mkvp.EP11WK))
	r = queue(t, e, q).MK[mkvp.EP11WK]
	if r.New.State != apqn.StateEmpty || r.Current.Pattern != p || r.Current.State != apqn.StateValid ||
		r.Old != (hsm.Register{}) || p == before.Current.Pattern {
		t.Fatalf("after set: %+v", r)
	}
	_, err := e.Officer.LoadNew(ctx, q, mkvp.CCAAES, nil, hsm.Part{})
	wantErr(t, "LoadNew AES on EP11", err, hsm.ErrWrongMode)
}

func testWrongState(t *testing.T, e Env) {
	steps := []struct {
		name string
		q    apqn.ID
		run  func(q apqn.ID) error
		want error
	}{
		{"CCA set with NEW empty", e.CCA[0], func(q apqn.ID) error { return e.Officer.Set(ctx, q, mkvp.CCAAES) }, hsm.ErrRegisterState},
		{"CCA part 2 first", e.CCA[0], func(q apqn.ID) error {
			_, err := e.Officer.LoadNew(ctx, q, mkvp.CCASYM, nil, hsm.Part{Index: 2, Total: 3})
			return err
		}, hsm.ErrRegisterState},
		{"EP11 set with NEW empty", e.EP11[0], func(q apqn.ID) error { return e.Officer.Set(ctx, q, mkvp.EP11WK) }, hsm.ErrRegisterState},
		{"EP11 commit with NEW empty", e.EP11[0], func(q apqn.ID) error { return e.Officer.Commit(ctx, q) }, hsm.ErrRegisterState},
		{"EP11 set APKA", e.EP11[0], func(q apqn.ID) error { return e.Officer.Set(ctx, q, mkvp.CCAAPKA) }, hsm.ErrWrongMode},
	}
	for _, s := range steps {
		before := queue(t, e, s.q)
		wantErr(t, s.name, s.run(s.q), s.want)
		after := queue(t, e, s.q)
		for mt, r := range before.MK {
			if after.MK[mt] != r {
				t.Errorf("%s changed %s registers: %+v -> %+v", s.name, mt, r, after.MK[mt])
			}
		}
	}
	// A loaded NEW register refuses a second load.
	must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, e.CCA[0], mkvp.CCAAES, nil, hsm.Part{}))
	before := queue(t, e, e.CCA[0]).MK[mkvp.CCAAES]
	_, err := e.Officer.LoadNew(ctx, e.CCA[0], mkvp.CCAAES, nil, hsm.Part{})
	wantErr(t, "load over full NEW", err, hsm.ErrRegisterState)
	if after := queue(t, e, e.CCA[0]).MK[mkvp.CCAAES]; after != before {
		t.Errorf("failed load changed registers")
	}
}

// secretOps makes a key of each CCA-relevant type and returns a check that
// it still works (or fails with want) on q.
type keyCase struct {
	spec hsm.KeySpec
	mt   mkvp.Type // CCA MK type
}

var lifecycleKeys = []keyCase{
	{hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, mkvp.CCAAES},
	{hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, mkvp.CCASYM},
	{hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 256}, mkvp.CCAAES},
	{hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}, mkvp.CCAAPKA},
}

func makeKey(t *testing.T, e Env, q apqn.ID, spec hsm.KeySpec) []byte {
	t.Helper()
	if spec.Type == hsm.KeyEC || spec.Type == hsm.KeyRSA {
		priv, _, err := e.Backend.GenerateKeyPair(ctx, q, spec)
		ok(t, "GenerateKeyPair", err)
		return priv
	}
	return must[[]byte](t, "GenerateKey")(e.Backend.GenerateKey(ctx, q, spec))
}

// use does one operation with the key and checks its result.
func use(e Env, q apqn.ID, spec hsm.KeySpec, key []byte) error {
	data := []byte("0123456789abcdef")
	switch spec.Type {
	case hsm.KeyAES, hsm.KeyDES3:
		m, iv := hsm.MechAESCBCPad, make([]byte, 16)
		if spec.Type == hsm.KeyDES3 {
			m, iv = hsm.MechDES3CBC, make([]byte, 8)
		}
		c, err := e.Backend.Encrypt(ctx, q, key, m, hsm.Params{IV: iv}, data)
		if err != nil {
			return err
		}
		p, err := e.Backend.Decrypt(ctx, q, key, m, hsm.Params{IV: iv}, c)
		if err != nil {
			return err
		}
		if !bytes.Equal(p, data) {
			return errors.New("round trip changed the data")
		}
		return nil
	case hsm.KeyHMAC:
		mac, err := e.Backend.Sign(ctx, q, key, hsm.MechHMACSHA256, hsm.Params{}, data)
		if err != nil {
			return err
		}
		return e.Backend.Verify(ctx, q, key, hsm.MechHMACSHA256, hsm.Params{}, data, mac)
	default:
		d := sha256.Sum256(data)
		m := hsm.MechECDSA
		p := hsm.Params{}
		if spec.Type == hsm.KeyRSA {
			m, p = hsm.MechRSAPSS, hsm.Params{Hash: crypto.SHA256}
		}
		sig, err := e.Backend.Sign(ctx, q, key, m, p, d[:])
		if err != nil {
			return err
		}
		return e.Backend.Verify(ctx, q, key, m, p, d[:], sig)
	}
}

func inspect(t *testing.T, blob []byte) hsm.BlobInfo {
	t.Helper()
	return must[hsm.BlobInfo](t, "Inspect")(hsm.Inspect(blob))
}

func testCCALifecycle(t *testing.T, e Env) {
	q := e.CCA[0]
	start := queue(t, e, q)
	orig := map[hsm.KeyType][]byte{}
	for _, k := range lifecycleKeys {
		b := makeKey(t, e, q, k.spec)
		info := inspect(t, b)
		want := hsm.BlobInfo{Mode: apqn.ModeCCA, MKType: k.mt, Pattern: start.MK[k.mt].Current.Pattern, KeyType: k.spec.Type, Bits: k.spec.Bits}
		if info != want {
			t.Fatalf("Inspect(%s) = %+v, want %+v", k.spec.Type, info, want)
		}
		orig[k.spec.Type] = b
	}
	// Re-encipher to NEW needs a full NEW register.
	_, err := e.Backend.Reencipher(ctx, q, orig[hsm.KeyAES], hsm.ToNew)
	wantErr(t, "ToNew with NEW empty", err, hsm.ErrRegisterState)
	newP := map[mkvp.Type]mkvp.Pattern{}
	for _, mt := range []mkvp.Type{mkvp.CCASYM, mkvp.CCAAES, mkvp.CCAAPKA} {
		newP[mt] = must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mt, nil, hsm.Part{}))
	}
	renc := map[hsm.KeyType][]byte{}
	for _, k := range lifecycleKeys {
		r := must[[]byte](t, "ToNew")(e.Backend.Reencipher(ctx, q, orig[k.spec.Type], hsm.ToNew))
		if p := inspect(t, r).Pattern; p != newP[k.mt] {
			t.Fatalf("%s re-enciphered to %s, want NEW %s", k.spec.Type, p, newP[k.mt])
		}
		// Not usable before NEW is set; the original still is.
		wantErr(t, "re-enciphered key before set", use(e, q, k.spec, r), hsm.ErrWrongMK)
		ok(t, "original before set", use(e, q, k.spec, orig[k.spec.Type]))
		renc[k.spec.Type] = r
	}
	for _, mt := range []mkvp.Type{mkvp.CCASYM, mkvp.CCAAES, mkvp.CCAAPKA} {
		ok(t, "Set", e.Officer.Set(ctx, q, mt))
	}
	fromOld := map[hsm.KeyType][]byte{}
	for _, k := range lifecycleKeys {
		// CCA keeps the blob made before set usable through OLD.
		ok(t, "original after set (OLD)", use(e, q, k.spec, orig[k.spec.Type]))
		ok(t, "re-enciphered after set", use(e, q, k.spec, renc[k.spec.Type]))
		f := must[[]byte](t, "FromOld")(e.Backend.Reencipher(ctx, q, orig[k.spec.Type], hsm.FromOld))
		if p := inspect(t, f).Pattern; p != newP[k.mt] {
			t.Fatalf("FromOld gave pattern %s, want CURRENT %s", p, newP[k.mt])
		}
		ok(t, "FromOld key", use(e, q, k.spec, f))
		_, err := e.Backend.Reencipher(ctx, q, renc[k.spec.Type], hsm.FromOld)
		wantErr(t, "FromOld of a CURRENT key", err, hsm.ErrWrongMK)
		fromOld[k.spec.Type] = f
	}
	// A second change pushes the original out of OLD.
	for _, mt := range []mkvp.Type{mkvp.CCASYM, mkvp.CCAAES, mkvp.CCAAPKA} {
		must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mt, nil, hsm.Part{}))
		ok(t, "Set", e.Officer.Set(ctx, q, mt))
	}
	for _, k := range lifecycleKeys {
		wantErr(t, "original after two changes", use(e, q, k.spec, orig[k.spec.Type]), hsm.ErrWrongMK)
		_, err := e.Backend.Reencipher(ctx, q, orig[k.spec.Type], hsm.FromOld)
		wantErr(t, "FromOld of a dead key", err, hsm.ErrWrongMK)
		ok(t, "FromOld key, now under OLD", use(e, q, k.spec, fromOld[k.spec.Type]))
	}
}

func testEP11Lifecycle(t *testing.T, e Env) {
	q := e.EP11[0]
	cur := queue(t, e, q).MK[mkvp.EP11WK].Current.Pattern
	specs := []hsm.KeySpec{{Type: hsm.KeyAES, Bits: 128}, {Type: hsm.KeyHMAC, Bits: 512}, {Type: hsm.KeyEC, Bits: 384}, {Type: hsm.KeyDES3, Bits: 192}}
	orig := make([][]byte, len(specs))
	for i, s := range specs {
		orig[i] = makeKey(t, e, q, s)
		info := inspect(t, orig[i])
		if info != (hsm.BlobInfo{Mode: apqn.ModeEP11, MKType: mkvp.EP11WK, Pattern: cur, KeyType: s.Type, Bits: s.Bits}) {
			t.Fatalf("Inspect = %+v", info)
		}
	}
	newP := must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mkvp.EP11WK, nil, hsm.Part{}))
	_, err := e.Backend.Reencipher(ctx, q, orig[0], hsm.ToNew)
	wantErr(t, "ToNew while uncommitted", err, hsm.ErrRegisterState)
	ok(t, "Commit", e.Officer.Commit(ctx, q))
	renc := make([][]byte, len(specs))
	for i, s := range specs {
		renc[i] = must[[]byte](t, "ToNew")(e.Backend.Reencipher(ctx, q, orig[i], hsm.ToNew))
		if p := inspect(t, renc[i]).Pattern; p != newP {
			t.Fatalf("re-enciphered pattern %s, want %s", p, newP)
		}
		ok(t, "original before set", use(e, q, s, orig[i]))
		wantErr(t, "re-enciphered before set", use(e, q, s, renc[i]), hsm.ErrWrongMK)
	}
	ok(t, "Set", e.Officer.Set(ctx, q, mkvp.EP11WK))
	for i, s := range specs {
		// EP11 has no OLD register: the old blob is dead at once.
		wantErr(t, "original after set", use(e, q, s, orig[i]), hsm.ErrWrongMK)
		ok(t, "re-enciphered after set", use(e, q, s, renc[i]))
		_, err := e.Backend.Reencipher(ctx, q, orig[i], hsm.FromOld)
		wantErr(t, "FromOld on EP11", err, hsm.ErrWrongMode)
	}
	_, err = e.Backend.Reencipher(ctx, q, orig[0], hsm.ToNew)
	wantErr(t, "ToNew with NEW empty", err, hsm.ErrRegisterState)
}

func testMechanisms(t *testing.T, e Env) {
	for _, q := range []apqn.ID{e.CCA[0], e.EP11[0]} {
		t.Run(q.String(), func(t *testing.T) { mechanismsOn(t, e, q) })
	}
}

func mechanismsOn(t *testing.T, e Env, q apqn.ID) {
	aes256 := makeKey(t, e, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	des3 := makeKey(t, e, q, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192})
	iv16, iv8, iv12 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 8), bytes.Repeat([]byte{3}, 12)
	block := bytes.Repeat([]byte("sixteen byte blk"), 4)
	odd := []byte("not a multiple of the block size")[:29]
	sym := []struct {
		name string
		key  []byte
		m    hsm.Mechanism
		p    hsm.Params
		data []byte
	}{
		{"AES-ECB", aes256, hsm.MechAESECB, hsm.Params{}, block},
		{"AES-CBC", aes256, hsm.MechAESCBC, hsm.Params{IV: iv16}, block},
		{"AES-CBC-PAD", aes256, hsm.MechAESCBCPad, hsm.Params{IV: iv16}, odd},
		{"AES-CBC-PAD-empty", aes256, hsm.MechAESCBCPad, hsm.Params{IV: iv16}, nil},
		{"AES-GCM", aes256, hsm.MechAESGCM, hsm.Params{IV: iv12, AAD: []byte("aad")}, odd},
		{"AES-GCM-96", aes256, hsm.MechAESGCM, hsm.Params{IV: iv12, TagBits: 96}, odd},
		{"AES-GCM-16-byte-IV", aes256, hsm.MechAESGCM, hsm.Params{IV: iv16}, odd},
		{"DES3-CBC", des3, hsm.MechDES3CBC, hsm.Params{IV: iv8}, block},
		{"DES3-ECB", des3, hsm.MechDES3ECB, hsm.Params{}, block},
	}
	for _, c := range sym {
		t.Run(c.name, func(t *testing.T) {
			if c.m == hsm.MechDES3ECB && e.Limits.NoCCADES3ECB && slices.Contains(e.CCA, q) {
				_, err := e.Backend.Encrypt(ctx, q, c.key, c.m, c.p, c.data)
				if !errors.Is(err, hsm.ErrMechanism) {
					t.Fatalf("DES3-ECB on a CCA APQN: %v, want ErrMechanism", err)
				}
				return
			}
			ct := must[[]byte](t, "Encrypt")(e.Backend.Encrypt(ctx, q, c.key, c.m, c.p, c.data))
			if len(c.data) > 0 && bytes.Contains(ct, c.data) {
				t.Fatal("ciphertext contains the plaintext")
			}
			pt := must[[]byte](t, "Decrypt")(e.Backend.Decrypt(ctx, q, c.key, c.m, c.p, ct))
			if !bytes.Equal(pt, c.data) {
				t.Fatalf("round trip: %x, want %x", pt, c.data)
			}
			// A backend that appends (hsm.Appender) keeps dst's bytes and
			// appends what Encrypt and Decrypt return (GCM and CBC are
			// deterministic for a given IV).
			if ap, ok := e.Backend.(hsm.Appender); ok {
				prefix := []byte("kept")
				got := must[[]byte](t, "EncryptAppend")(ap.EncryptAppend(ctx, q, c.key, c.m, c.p, bytes.Clone(prefix), c.data))
				if !bytes.Equal(got, append(bytes.Clone(prefix), ct...)) {
					t.Fatalf("EncryptAppend: %x, want %q + %x", got, prefix, ct)
				}
				got = must[[]byte](t, "DecryptAppend")(ap.DecryptAppend(ctx, q, c.key, c.m, c.p, bytes.Clone(prefix), ct))
				if !bytes.Equal(got, append(bytes.Clone(prefix), c.data...)) {
					t.Fatalf("DecryptAppend: %x, want %q + %x", got, prefix, c.data)
				}
			}
		})
	}
	t.Run("AES-KW/KWP", func(t *testing.T) {
		for _, tc := range []struct {
			m    hsm.Mechanism
			spec hsm.KeySpec
		}{
			{hsm.MechAESKW, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}},
			{hsm.MechAESKW, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}},
			{hsm.MechAESKWP, hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 200}},
			{hsm.MechAESKWP, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}},
		} {
			target := makeKey(t, e, q, tc.spec)
			if e.Limits.NoCCAKeyWrap && slices.Contains(e.CCA, q) {
				_, err := e.Backend.WrapKey(ctx, q, aes256, tc.m, hsm.Params{}, target)
				wantErr(t, "WrapKey (limit)", err, hsm.ErrMechanism)
				_, err = e.Backend.UnwrapKey(ctx, q, aes256, tc.m, hsm.Params{}, make([]byte, 24), tc.spec)
				wantErr(t, "UnwrapKey (limit)", err, hsm.ErrMechanism)
				continue
			}
			wrapped := must[[]byte](t, "WrapKey")(e.Backend.WrapKey(ctx, q, aes256, tc.m, hsm.Params{}, target))
			back := must[[]byte](t, "UnwrapKey")(e.Backend.UnwrapKey(ctx, q, aes256, tc.m, hsm.Params{}, wrapped, tc.spec))
			if info := inspect(t, back); info.KeyType != tc.spec.Type || info.Bits != tc.spec.Bits {
				t.Fatalf("unwrapped %+v, want %+v", info, tc.spec)
			}
			// The unwrapped key is the same key: it wraps to the same bytes.
			again := must[[]byte](t, "WrapKey")(e.Backend.WrapKey(ctx, q, aes256, tc.m, hsm.Params{}, back))
			if !bytes.Equal(again, wrapped) {
				t.Fatalf("%s: unwrapped key differs from the original", tc.m)
			}
		}
	})
	t.Run("HMAC-SHA256", func(t *testing.T) {
		k := makeKey(t, e, q, hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 256})
		mac := must[[]byte](t, "Sign")(e.Backend.Sign(ctx, q, k, hsm.MechHMACSHA256, hsm.Params{}, block))
		if len(mac) != 32 {
			t.Fatalf("MAC of %d bytes", len(mac))
		}
		ok(t, "Verify", e.Backend.Verify(ctx, q, k, hsm.MechHMACSHA256, hsm.Params{}, block, mac))
		mac[0] ^= 1
		wantErr(t, "Verify bad MAC", e.Backend.Verify(ctx, q, k, hsm.MechHMACSHA256, hsm.Params{}, block, mac), hsm.ErrSignature)
	})
	for _, bits := range []int{256, 384} {
		t.Run("ECDSA-"+map[int]string{256: "P256", 384: "P384"}[bits], func(t *testing.T) {
			priv, pubDER, err := e.Backend.GenerateKeyPair(ctx, q, hsm.KeySpec{Type: hsm.KeyEC, Bits: bits})
			ok(t, "GenerateKeyPair", err)
			if got := must[[]byte](t, "PublicKey")(e.Backend.PublicKey(ctx, q, priv)); !bytes.Equal(got, pubDER) {
				t.Fatal("PublicKey differs from the generated public key")
			}
			pub := must[any](t, "ParsePKIXPublicKey")(x509.ParsePKIXPublicKey(pubDER)).(*ecdsa.PublicKey)
			d := sha256.Sum256(block)
			sig := must[[]byte](t, "Sign")(e.Backend.Sign(ctx, q, priv, hsm.MechECDSA, hsm.Params{}, d[:]))
			n := (bits + 7) / 8
			if len(sig) != 2*n {
				t.Fatalf("signature of %d bytes, want r||s of %d", len(sig), 2*n)
			}
			if !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
				t.Fatal("standard library rejects the r||s signature")
			}
			ok(t, "Verify with blob", e.Backend.Verify(ctx, q, priv, hsm.MechECDSA, hsm.Params{}, d[:], sig))
			ok(t, "Verify with SPKI", e.Backend.Verify(ctx, q, pubDER, hsm.MechECDSA, hsm.Params{}, d[:], sig))
			sig[3] ^= 1
			wantErr(t, "Verify bad", e.Backend.Verify(ctx, q, pubDER, hsm.MechECDSA, hsm.Params{}, d[:], sig), hsm.ErrSignature)
		})
	}
	t.Run("RSA", func(t *testing.T) {
		priv, pubDER, err := e.Backend.GenerateKeyPair(ctx, q, hsm.KeySpec{Type: hsm.KeyRSA, Bits: 2048})
		ok(t, "GenerateKeyPair", err)
		pub := must[any](t, "ParsePKIXPublicKey")(x509.ParsePKIXPublicKey(pubDER)).(*rsa.PublicKey)
		if pub.N.BitLen() != 2048 {
			t.Fatalf("modulus of %d bits", pub.N.BitLen())
		}
		d := sha256.Sum256(block)
		sig := must[[]byte](t, "Sign PKCS")(e.Backend.Sign(ctx, q, priv, hsm.MechRSAPKCS, hsm.Params{Hash: crypto.SHA256}, d[:]))
		ok(t, "std verify PKCS", rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig))
		ok(t, "Verify PKCS", e.Backend.Verify(ctx, q, pubDER, hsm.MechRSAPKCS, hsm.Params{Hash: crypto.SHA256}, d[:], sig))
		raw := must[[]byte](t, "Sign raw PKCS")(e.Backend.Sign(ctx, q, priv, hsm.MechRSAPKCS, hsm.Params{}, []byte("raw DigestInfo")))
		ok(t, "std verify raw PKCS", rsa.VerifyPKCS1v15(pub, 0, []byte("raw DigestInfo"), raw))
		pss := hsm.Params{Hash: crypto.SHA256, SaltLen: 32}
		sig = must[[]byte](t, "Sign PSS")(e.Backend.Sign(ctx, q, priv, hsm.MechRSAPSS, pss, d[:]))
		ok(t, "std verify PSS", rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: 32}))
		ok(t, "Verify PSS", e.Backend.Verify(ctx, q, priv, hsm.MechRSAPSS, pss, d[:], sig))
		sig[0] ^= 1
		wantErr(t, "Verify bad PSS", e.Backend.Verify(ctx, q, priv, hsm.MechRSAPSS, pss, d[:], sig), hsm.ErrSignature)
		oaep := hsm.Params{Hash: crypto.SHA256, Label: []byte("label")}
		if e.Limits.NoCCAOAEPLabel && slices.Contains(e.CCA, q) {
			ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, []byte("secret"), oaep.Label)
			ok(t, "std OAEP", err)
			_, err = e.Backend.Decrypt(ctx, q, priv, hsm.MechRSAOAEP, oaep, ct)
			wantErr(t, "Decrypt OAEP with a label (limit)", err, hsm.ErrMechanism)
			oaep.Label = nil
		}
		ct := must[[]byte](t, "Encrypt OAEP")(e.Backend.Encrypt(ctx, q, pubDER, hsm.MechRSAOAEP, oaep, []byte("secret")))
		pt := must[[]byte](t, "Decrypt OAEP")(e.Backend.Decrypt(ctx, q, priv, hsm.MechRSAOAEP, oaep, ct))
		if string(pt) != "secret" {
			t.Fatalf("OAEP round trip gave %q", pt)
		}
		std, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, []byte("from outside"), oaep.Label)
		ok(t, "std OAEP", err)
		pt = must[[]byte](t, "Decrypt std OAEP")(e.Backend.Decrypt(ctx, q, priv, hsm.MechRSAOAEP, oaep, std))
		if string(pt) != "from outside" {
			t.Fatalf("OAEP of the standard library gave %q", pt)
		}
	})
}

// testKnownAnswers imports known keys and compares with published vectors
// and the standard library, so "round trip" cannot hide a wrong algorithm.
func testKnownAnswers(t *testing.T, e Env) {
	hx := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, q := range []apqn.ID{e.CCA[0], e.EP11[0]} {
		if e.Limits.NoCCAImport && slices.Contains(e.CCA, q) {
			_, err := e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}, hx("000102030405060708090A0B0C0D0E0F"))
			wantErr(t, "ImportKey (limit)", err, hsm.ErrMechanism)
			continue
		}
		kek := must[[]byte](t, "ImportKey")(e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}, hx("000102030405060708090A0B0C0D0E0F")))
		data := must[[]byte](t, "ImportKey")(e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}, hx("00112233445566778899AABBCCDDEEFF")))
		// RFC 3394 §4.1.
		w := must[[]byte](t, "WrapKey")(e.Backend.WrapKey(ctx, q, kek, hsm.MechAESKW, hsm.Params{}, data))
		if want := hx("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"); !bytes.Equal(w, want) {
			t.Errorf("%s AES-KW = %X, want %X", q, w, want)
		}
		// RFC 5649 §6, 20-octet key (KEK of 192 bits).
		kek192 := must[[]byte](t, "ImportKey")(e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 192}, hx("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8")))
		hm := must[[]byte](t, "ImportKey")(e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 160}, hx("c37b7e6492584340bed12207808941155068f738")))
		w = must[[]byte](t, "WrapKey KWP")(e.Backend.WrapKey(ctx, q, kek192, hsm.MechAESKWP, hsm.Params{}, hm))
		if want := hx("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"); !bytes.Equal(w, want) {
			t.Errorf("%s AES-KWP = %x, want %x", q, w, want)
		}
		// AES-ECB against the standard library.
		blk, _ := aes.NewCipher(hx("00112233445566778899AABBCCDDEEFF"))
		in := []byte("exactly 16 bytes")
		want := make([]byte, 16)
		blk.Encrypt(want, in)
		got := must[[]byte](t, "Encrypt ECB")(e.Backend.Encrypt(ctx, q, data, hsm.MechAESECB, hsm.Params{}, in))
		if !bytes.Equal(got, want) {
			t.Errorf("%s AES-ECB = %x, want %x", q, got, want)
		}
		// An imported EC key signs for its own public key.
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		blob := must[[]byte](t, "ImportKey EC")(e.Backend.ImportKey(ctx, q, hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}, der))
		d := sha256.Sum256(in)
		sig := must[[]byte](t, "Sign")(e.Backend.Sign(ctx, q, blob, hsm.MechECDSA, hsm.Params{}, d[:]))
		if !ecdsa.Verify(&k.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			t.Errorf("%s: imported EC key signs for another key", q)
		}
	}
}

func testErrors(t *testing.T, e Env) {
	cq, eq := e.CCA[0], e.EP11[0]
	aesC := makeKey(t, e, cq, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	hmacC := makeKey(t, e, cq, hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 256})
	iv := make([]byte, 16)
	tampered := bytes.Clone(aesC)
	tampered[len(tampered)-1] ^= 1
	patt := bytes.Clone(aesC)
	patt[10] ^= 1 // the MKVP of an AES CIPHER token
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"CCA key on EP11", func() error {
			_, err := e.Backend.Encrypt(ctx, eq, aesC, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
			return err
		}(), hsm.ErrWrongMode},
		{"tampered payload", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, tampered, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
			return err
		}(), hsm.ErrBadBlob},
		{"garbage blob", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, []byte("garbage"), hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
			return err
		}(), hsm.ErrBadBlob},
		{"changed pattern", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, patt, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
			return err
		}(), hsm.ErrWrongMK},
		{"HMAC key for AES-ECB", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, hmacC, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
			return err
		}(), hsm.ErrMechanism},
		{"AES key for HMAC", func() error {
			_, err := e.Backend.Sign(ctx, cq, aesC, hsm.MechHMACSHA256, hsm.Params{}, []byte("x"))
			return err
		}(), hsm.ErrMechanism},
		{"ECB partial block", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, aesC, hsm.MechAESECB, hsm.Params{}, make([]byte, 15))
			return err
		}(), hsm.ErrBadData},
		{"CBC short IV", func() error {
			_, err := e.Backend.Encrypt(ctx, cq, aesC, hsm.MechAESCBC, hsm.Params{IV: iv[:8]}, make([]byte, 16))
			return err
		}(), hsm.ErrMechanism},
		{"CBC-PAD bad padding", func() error {
			_, err := e.Backend.Decrypt(ctx, cq, aesC, hsm.MechAESCBCPad, hsm.Params{IV: iv}, make([]byte, 16))
			if err == nil {
				// One in 256 random blocks ends in 0x01; try another.
				_, err = e.Backend.Decrypt(ctx, cq, aesC, hsm.MechAESCBCPad, hsm.Params{IV: iv}, bytes.Repeat([]byte{9}, 16))
			}
			return err
		}(), hsm.ErrBadData},
		{"GCM bad tag", func() error {
			p := hsm.Params{IV: make([]byte, 12)}
			ct, err := e.Backend.Encrypt(ctx, cq, aesC, hsm.MechAESGCM, p, []byte("data"))
			if err != nil {
				return err
			}
			ct[0] ^= 1
			_, err = e.Backend.Decrypt(ctx, cq, aesC, hsm.MechAESGCM, p, ct)
			return err
		}(), hsm.ErrBadData},
		{"KW unwrap garbage", func() error {
			_, err := e.Backend.UnwrapKey(ctx, cq, aesC, hsm.MechAESKW, hsm.Params{}, make([]byte, 24), hsm.KeySpec{Type: hsm.KeyAES, Bits: 128})
			return err
		}(), hsm.ErrBadData},
		{"bad key size", func() error {
			_, err := e.Backend.GenerateKey(ctx, cq, hsm.KeySpec{Type: hsm.KeyAES, Bits: 100})
			return err
		}(), errclass.InvalidArgument},
		{"import wrong length", func() error {
			_, err := e.Backend.ImportKey(ctx, cq, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, make([]byte, 16))
			return err
		}(), hsm.ErrBadData},
		{"ToNew with NEW empty", func() error {
			_, err := e.Backend.Reencipher(ctx, cq, aesC, hsm.ToNew)
			return err
		}(), hsm.ErrRegisterState},
	}
	for _, c := range cases {
		if c.name == "KW unwrap garbage" && e.Limits.NoCCAKeyWrap || c.name == "import wrong length" && e.Limits.NoCCAImport {
			c.want = hsm.ErrMechanism
		}
		wantErr(t, c.name, c.err, c.want)
	}
}
