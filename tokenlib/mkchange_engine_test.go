package tokenlib

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// The tests of this file drive the application side of a master key
// change the way pkcshsm_mk_change and the security officer would: the
// operation files through package state, the adapters through the
// simulator's officer interface. Libraries run without the runtime agent,
// so every reconcile happens where the test calls it.

var ep11q = apqn.MustParse("06.0033")

// openMKLib opens a Library without the runtime agent.
func openMKLib(t testing.TB, layout paths.Layout) *Library {
	t.Helper()
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoAgent: true})
	must(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

// newMKLib opens a Library without the runtime agent on layout and
// initializes the tokens of slots.
func newMKLib(t testing.TB, layout paths.Layout, slots ...SlotID) *Library {
	t.Helper()
	l := openMKLib(t, layout)
	for _, s := range slots {
		initTestToken(t, l, s)
	}
	return l
}

// loadNew loads one new random master key of type mt into the NEW register
// of every APQN of qs (committing it on EP11) and returns its pattern.
func loadNew(t testing.TB, o *sim.HSM, mt mkvp.Type, qs ...apqn.ID) mkvp.Pattern {
	t.Helper()
	ctx := context.Background()
	key := make([]byte, sim.KeySize(mt))
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	var p mkvp.Pattern
	for _, q := range qs {
		got, err := o.LoadNew(ctx, q, mt, key, hsm.Part{})
		must(t, err)
		if mt == mkvp.EP11WK {
			must(t, o.Commit(ctx, q))
		}
		if !p.IsZero() && got != p {
			t.Fatalf("the same key has patterns %s and %s", p, got)
		}
		p = got
	}
	return p
}

// setMK activates the NEW master key of type mt on every APQN of qs.
func setMK(t testing.TB, o *sim.HSM, mt mkvp.Type, qs ...apqn.ID) {
	t.Helper()
	for _, q := range qs {
		must(t, o.Set(context.Background(), q, mt))
	}
}

// currentMK returns the CURRENT pattern of type mt on q.
func currentMK(t testing.TB, o *sim.HSM, q apqn.ID, mt mkvp.Type) mkvp.Pattern {
	t.Helper()
	qi, err := o.Queue(context.Background(), q)
	must(t, err)
	return qi.MK[mt].Current.Pattern
}

// opsDir opens the operation directory for writing, as the tool does.
func opsDir(t testing.TB, layout paths.Layout) *state.Dir {
	t.Helper()
	d, err := state.Open(layout.MKChangeDir(), state.Options{Logger: testLogger(t)})
	must(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

// statePath lists the states an operation passes on its way to a state.
var statePath = map[state.State][]state.State{
	state.Initial:       nil,
	state.Reenciphering: {state.Reenciphering},
	state.Reenciphered:  {state.Reenciphering, state.Reenciphered},
	state.Finalizing:    {state.Reenciphering, state.Reenciphered, state.Finalizing},
	state.Canceling:     {state.Reenciphering, state.Reenciphered, state.Canceling},
	state.Error:         {state.Reenciphering, state.Reenciphered, state.Finalizing, state.Error},
}

// createOp stores an operation changing mt to p on qs and moves it to st.
func createOp(t testing.TB, d *state.Dir, mt mkvp.Type, p mkvp.Pattern, st state.State, qs ...apqn.ID) *state.Op {
	t.Helper()
	op, err := d.Create(context.Background(), &state.Op{APQNs: apqn.List(qs), New: map[mkvp.Type]mkvp.Pattern{mt: p}})
	must(t, err)
	for _, s := range statePath[st] {
		op = moveOp(t, d, op.ID, s)
	}
	return op
}

func moveOp(t testing.TB, d *state.Dir, id state.ID, to state.State) *state.Op {
	t.Helper()
	op, err := d.Update(context.Background(), id, func(o *state.Op) error { return o.Move(to, time.Now()) })
	must(t, err)
	return op
}

// blobInfo inspects blob attribute a of a key; ok is false when the key
// has no such attribute.
func blobInfo(t testing.TB, l *Library, h SessionHandle, o ObjectHandle, a ck.Attribute) (info hsm.BlobInfo, raw []byte, ok bool) {
	t.Helper()
	v, err := l.GetAttributes(h, o, a)
	if RV(err) == ck.CKR_ATTRIBUTE_TYPE_INVALID {
		return hsm.BlobInfo{}, nil, false
	}
	must(t, err)
	if len(v[0]) == 0 {
		return hsm.BlobInfo{}, nil, false
	}
	info, err = hsm.Inspect(v[0])
	must(t, err)
	return info, v[0], true
}

// wantBlobs checks the patterns of a key's three blob attributes; a zero
// pattern means the attribute must be absent.
func wantBlobs(t testing.TB, l *Library, h SessionHandle, o ObjectHandle, opaque, reenc, old mkvp.Pattern) {
	t.Helper()
	for _, c := range []struct {
		a    ck.Attribute
		want mkvp.Pattern
	}{{ck.CKA_IBM_OPAQUE, opaque}, {ck.CKA_IBM_OPAQUE_REENC, reenc}, {ck.CKA_IBM_OPAQUE_OLD, old}} {
		info, _, ok := blobInfo(t, l, h, o, c.a)
		switch {
		case c.want.IsZero() && ok:
			t.Errorf("key %d: %v present (pattern %s), want none", o, c.a, info.Pattern)
		case !c.want.IsZero() && !ok:
			t.Errorf("key %d: %v missing, want pattern %s", o, c.a, c.want)
		case ok && info.Pattern != c.want:
			t.Errorf("key %d: %v has pattern %s, want %s", o, c.a, info.Pattern, c.want)
		}
	}
}

// aesRoundTrip encrypts a block with key k and decrypts it again.
func aesRoundTrip(l *Library, h SessionHandle, k ObjectHandle) error {
	m := Mechanism{Type: ck.CKM_AES_ECB}
	in := []byte("0123456789abcdef")
	if err := l.EncryptInit(h, m, k); err != nil {
		return err
	}
	ct := make([]byte, 16)
	if _, err := l.Encrypt(h, in, ct); err != nil {
		return err
	}
	if err := l.DecryptInit(h, m, k); err != nil {
		return err
	}
	pt := make([]byte, 16)
	if _, err := l.Decrypt(h, ct, pt); err != nil {
		return err
	}
	if !bytes.Equal(pt, in) {
		return newErr(ck.CKR_GENERAL_ERROR, errclass.Internal, "round trip gave %x", pt)
	}
	return nil
}

func activeOpIDs(l *Library, slot SlotID) []state.ID {
	var ids []state.ID
	for _, op := range l.slots[slot].activeOps() {
		ids = append(ids, op.ID)
	}
	return ids
}

// TestMKOpenFollowsOperations: Open reads the operation files before the
// tokens check their adapters; only an active operation adds REENC blobs
// to new keys.
func TestMKOpenFollowsOperations(t *testing.T) {
	for _, tc := range []struct {
		name      string
		op        bool
		st        state.State
		wantReenc bool
	}{
		{name: "no operation directory"},
		{name: "INITIAL", op: true, st: state.Initial},
		{name: "REENCIPHERING", op: true, st: state.Reenciphering, wantReenc: true},
		{name: "REENCIPHERED", op: true, st: state.Reenciphered, wantReenc: true},
		{name: "ERROR", op: true, st: state.Error, wantReenc: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout := writeTestRoot(t)
			o := officer(t, layout)
			cur := currentMK(t, o, cca1, mkvp.CCAAES)
			var op *state.Op
			var newP mkvp.Pattern
			if tc.op {
				newP = loadNew(t, o, mkvp.CCAAES, cca1, cca2)
				op = createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, tc.st, cca1, cca2)
			} else if _, err := os.Stat(layout.MKChangeDir()); !os.IsNotExist(err) {
				t.Fatalf("operation directory: %v", err)
			}
			l := newMKLib(t, layout, slotCCA)
			h := userSession(t, l, slotCCA)
			k := genAES(t, l, h, "s", false)
			tk := genAES(t, l, h, "t", true)
			var want mkvp.Pattern
			if tc.wantReenc {
				want = newP
				if ids := activeOpIDs(l, slotCCA); len(ids) != 1 || ids[0] != op.ID {
					t.Fatalf("active operations %v, want %s", ids, op.ID)
				}
			} else if ids := activeOpIDs(l, slotCCA); len(ids) != 0 {
				t.Fatalf("active operations %v, want none", ids)
			}
			wantBlobs(t, l, h, k, cur, want, mkvp.Pattern{})
			wantBlobs(t, l, h, tk, cur, want, mkvp.Pattern{})
			must(t, aesRoundTrip(l, h, k))
			res, err := l.reconcile(context.Background())
			must(t, err)
			if tc.op {
				r, ok := res[op.ID][slotCCA]
				if !ok || r.affected != tc.wantReenc || r.err != nil || r.objects != 0 {
					t.Errorf("reconcile: %+v (found %v), want affected=%v with no object changed", r, ok, tc.wantReenc)
				}
			} else if len(res) != 0 {
				t.Errorf("reconcile without operations: %v", res)
			}
			// The EP11 token is not affected by a CCA operation.
			initTestToken(t, l, slotEP11)
			he := userSession(t, l, slotEP11)
			ke := genAES(t, l, he, "e", false)
			wantBlobs(t, l, he, ke, currentMK(t, o, ep11q, mkvp.EP11WK), mkvp.Pattern{}, mkvp.Pattern{})
		})
	}
}

// TestMKReconcileActivates: a reconcile that finds an operation active
// re-enciphers the session keys only, and a second one changes nothing.
func TestMKReconcileActivates(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotCCA, slotEP11)
	h := userSession(t, l, slotCCA)
	s1 := genAES(t, l, h, "s1", false)
	s2 := genAES(t, l, h, "s2", false)
	tk := genAES(t, l, h, "tk", true)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	// An APKA key is not touched by a change of the AES master key.
	params, _ := ECParams("P-256")
	_, ecPriv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
		[]Attribute{Bytes(ck.CKA_EC_PARAMS, params), Bool(ck.CKA_TOKEN, false)}, []Attribute{Bool(ck.CKA_TOKEN, false)})
	must(t, err)
	apka := currentMK(t, o, cca1, mkvp.CCAAPKA)

	res, err := l.reconcile(ctx)
	must(t, err)
	if len(res) != 0 {
		t.Fatalf("reconcile without operations: %v", res)
	}

	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	res, err = l.reconcile(ctx)
	must(t, err)
	r, ok := res[op.ID][slotCCA]
	if !ok || !r.affected || r.err != nil || r.objects != 2 {
		t.Fatalf("first reconcile: %+v (found %v), want affected with 2 objects", r, ok)
	}
	if _, ok := res[op.ID][slotEP11]; ok {
		t.Fatal("the EP11 token was reconciled with a CCA operation")
	}
	wantBlobs(t, l, h, s1, cur, newP, mkvp.Pattern{})
	wantBlobs(t, l, h, s2, cur, newP, mkvp.Pattern{})
	wantBlobs(t, l, h, tk, cur, mkvp.Pattern{}, mkvp.Pattern{}) // the tool's business
	wantBlobs(t, l, h, ecPriv, apka, mkvp.Pattern{}, mkvp.Pattern{})
	_, before, _ := blobInfo(t, l, h, s1, ck.CKA_IBM_OPAQUE_REENC)

	for _, again := range []func() (int, error){
		func() (int, error) {
			res, err := l.reconcile(ctx)
			return res[op.ID][slotCCA].objects, err
		},
		func() (int, error) { return 0, agentHandler{l}.Reconcile(ctx) },
	} {
		n, err := again()
		must(t, err)
		if n != 0 {
			t.Fatalf("repeated reconcile changed %d objects", n)
		}
		_, after, _ := blobInfo(t, l, h, s1, ck.CKA_IBM_OPAQUE_REENC)
		if !bytes.Equal(before, after) {
			t.Fatal("repeated reconcile replaced a REENC blob")
		}
		wantBlobs(t, l, h, tk, cur, mkvp.Pattern{}, mkvp.Pattern{})
	}
	for _, k := range []ObjectHandle{s1, s2, tk} {
		must(t, aesRoundTrip(l, h, k))
	}
}

// TestMKEP11FallbackToReenc: once the officer set the new wrapping key,
// session keys work through their REENC blobs; a key without one fails
// loudly.
func TestMKEP11FallbackToReenc(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotEP11)
	h := userSession(t, l, slotEP11)
	cur := currentMK(t, o, ep11q, mkvp.EP11WK)
	sk := genAES(t, l, h, "session", false)
	tk := genAES(t, l, h, "token", true)
	params, _ := ECParams("P-256")
	pub, priv, err := l.GenerateKeyPair(h, Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
		[]Attribute{Bytes(ck.CKA_EC_PARAMS, params), Bool(ck.CKA_TOKEN, false)},
		[]Attribute{String(ck.CKA_LABEL, "ec"), Bool(ck.CKA_TOKEN, false)})
	must(t, err)

	newP := loadNew(t, o, mkvp.EP11WK, ep11q)
	op := createOp(t, opsDir(t, layout), mkvp.EP11WK, newP, state.Reenciphered, ep11q)
	res, err := l.reconcile(ctx)
	must(t, err)
	if r := res[op.ID][slotEP11]; !r.affected || r.err != nil || r.objects < 2 {
		t.Fatalf("reconcile: %+v, want the AES and EC private session keys", r)
	}
	wantBlobs(t, l, h, sk, cur, newP, mkvp.Pattern{})
	wantBlobs(t, l, h, priv, cur, newP, mkvp.Pattern{})
	madeBefore := genAES(t, l, h, "before set", false) // REENC at creation
	wantBlobs(t, l, h, madeBefore, cur, newP, mkvp.Pattern{})

	setMK(t, o, mkvp.EP11WK, ep11q)
	msg := []byte("signed after the wrapping key changed")
	for _, k := range []ObjectHandle{sk, madeBefore} {
		must(t, aesRoundTrip(l, h, k))
	}
	signVerify(t, l, h, Mechanism{Type: ck.CKM_ECDSA_SHA256}, priv, pub, msg)

	err = aesRoundTrip(l, h, tk)
	wantRV(t, err, ck.CKR_DEVICE_ERROR)
	if !strings.Contains(err.Error(), "master key") {
		t.Errorf("message %q does not name the master key", err)
	}
	// The token recovers after the failure: keys made now are under the
	// new wrapping key (their REENC blob is the same key) and work.
	after := genAES(t, l, h, "after set", false)
	wantBlobs(t, l, h, after, newP, newP, mkvp.Pattern{})
	must(t, aesRoundTrip(l, h, after))
	must(t, aesRoundTrip(l, h, sk))
}

// TestMKCCAMixedAPQNs: while the officer sets the new master key APQN by
// APQN, keys under either master key keep working on a token whose
// round robin spans both kinds of APQN.
func TestMKCCAMixedAPQNs(t *testing.T) {
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	tokOld := genAES(t, l, h, "token, no REENC", true)

	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	_, err := l.reconcile(context.Background())
	must(t, err)
	sessOld := genAES(t, l, h, "session", false)
	wantBlobs(t, l, h, sessOld, cur, newP, mkvp.Pattern{})

	setMK(t, o, mkvp.CCAAES, cca1)
	// Make a key until the round robin lands on 01.0033, which makes it
	// under the new master key.
	var sessNew ObjectHandle
	for i := 0; ; i++ {
		if i == 6 {
			t.Fatal("no key was made on the APQN with the new master key")
		}
		k := genAES(t, l, h, "new", false)
		if info, _, _ := blobInfo(t, l, h, k, ck.CKA_IBM_OPAQUE); info.Pattern == newP {
			sessNew = k
			break
		}
		must(t, encryptOnce(l, h, k)) // moves the round robin on by one
	}
	wantBlobs(t, l, h, sessNew, newP, newP, mkvp.Pattern{})
	if cv := getAttr(t, l, h, sessNew, ck.CKA_CHECK_VALUE); len(cv) != 3 {
		t.Fatalf("check value %x", cv)
	}
	// Imported keys get the right check value on either APQN, and key
	// wrapping works with a wrapping key under the new master key and a
	// key under the old one.
	clearKey := bytes.Repeat([]byte{0x5a}, 16)
	c, _ := aes.NewCipher(clearKey)
	wantCV := make([]byte, 16)
	c.Encrypt(wantCV, wantCV)
	for range 2 {
		k, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)),
			Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, clearKey)})
		must(t, err)
		if got := getAttr(t, l, h, k, ck.CKA_CHECK_VALUE); !bytes.Equal(got, wantCV[:3]) {
			t.Fatalf("imported key: check value %x, want %x", got, wantCV[:3])
		}
		if _, _, ok := blobInfo(t, l, h, k, ck.CKA_IBM_OPAQUE_REENC); !ok {
			t.Fatal("imported key without REENC blob")
		}
		must(t, encryptOnce(l, h, k))
	}
	for range 2 {
		wrapped := run(t, func(out []byte) (int, error) {
			return l.WrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, sessNew, tokOld, out)
		}, nil)
		u, err := l.UnwrapKey(h, Mechanism{Type: ck.CKM_AES_KEY_WRAP}, sessNew, wrapped, []Attribute{
			Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))})
		must(t, err)
		if a, b := getAttr(t, l, h, tokOld, ck.CKA_CHECK_VALUE), getAttr(t, l, h, u, ck.CKA_CHECK_VALUE); !bytes.Equal(a, b) {
			t.Fatalf("unwrapped key: check value %x, want %x", b, a)
		}
	}

	for _, step := range []string{"01.0033 set", "both set"} {
		if step == "both set" {
			setMK(t, o, mkvp.CCAAES, cca2)
		}
		// Four round trips are eight uses: each key meets each APQN first
		// several times.
		for _, k := range []ObjectHandle{sessNew, sessOld, tokOld} {
			for range 4 {
				if err := aesRoundTrip(l, h, k); err != nil {
					t.Fatalf("%s: key %d: %v", step, k, err)
				}
			}
		}
	}
	wantBlobs(t, l, h, tokOld, cur, mkvp.Pattern{}, mkvp.Pattern{})
}

// TestMKTokenStartMixedAPQNs: a token whose APQNs hold different master
// keys starts only while an operation changing that key is active.
func TestMKTokenStartMixedAPQNs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		st     state.State
		noOp   bool
		setAll bool // the officer set the new key on 01.0033 too
		starts bool
	}{
		{name: "REENCIPHERED", st: state.Reenciphered, starts: true},
		{name: "REENCIPHERING", st: state.Reenciphering, starts: true},
		{name: "REENCIPHERED, every APQN set", st: state.Reenciphered, setAll: true, starts: true},
		{name: "INITIAL", st: state.Initial},
		{name: "no operation", noOp: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout := writeTestRoot(t)
			o := officer(t, layout)
			cur := currentMK(t, o, cca1, mkvp.CCAAES)
			newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
			if !tc.noOp {
				createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, tc.st, cca1, cca2)
			}
			setMK(t, o, mkvp.CCAAES, cca2)
			if tc.setAll {
				setMK(t, o, mkvp.CCAAES, cca1)
			}
			l := newMKLib(t, layout, slotCCA)
			h := userSession(t, l, slotCCA)
			_, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("k", false))
			if !tc.starts {
				wantRV(t, err, ck.CKR_DEVICE_ERROR)
				for _, want := range []string{"02.0033", newP.String(), cur.String()} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("message %q lacks %q", err, want)
					}
				}
				return
			}
			must(t, err)
			qs, err := l.TokenAPQNs(slotCCA)
			must(t, err)
			if len(qs) != 2 {
				t.Fatalf("token uses %d APQNs, want both", len(qs))
			}
			for range 3 {
				k := genAES(t, l, h, "k", false)
				for range 2 {
					must(t, aesRoundTrip(l, h, k))
				}
			}
		})
	}
}

// TestMKFinalizing: a reconcile of FINALIZING finalizes the session keys
// and ends the operation in the token, which then expects the new key.
func TestMKFinalizing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		expected bool // EXPECTED_MKVPS names the AES master key
	}{
		{name: "learned patterns"},
		{name: "EXPECTED_MKVPS", expected: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			layout := writeTestRoot(t)
			o := officer(t, layout)
			cur := currentMK(t, o, cca1, mkvp.CCAAES)
			if tc.expected {
				writeCCAConf(t, layout, "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\nEXPECTED_MKVPS {\n AES = \""+cur.String()+"\"\n}\n")
			}
			newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
			d := opsDir(t, layout)
			op := createOp(t, d, mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
			l := newMKLib(t, layout, slotCCA)
			h := userSession(t, l, slotCCA)
			k := genAES(t, l, h, "k", false)
			wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})

			setMK(t, o, mkvp.CCAAES, cca1, cca2)
			moveOp(t, d, op.ID, state.Finalizing)
			res, err := l.reconcile(ctx)
			must(t, err)
			if r := res[op.ID][slotCCA]; !r.affected || r.err != nil || r.objects != 1 {
				t.Fatalf("reconcile: %+v, want affected with 1 object", r)
			}
			if ids := activeOpIDs(l, slotCCA); len(ids) != 0 {
				t.Fatalf("operations still active: %v", ids)
			}
			wantBlobs(t, l, h, k, newP, mkvp.Pattern{}, cur)
			must(t, aesRoundTrip(l, h, k))
			n := genAES(t, l, h, "after", false)
			wantBlobs(t, l, h, n, newP, mkvp.Pattern{}, mkvp.Pattern{})
			must(t, aesRoundTrip(l, h, n))

			// The tool removes the file; the token keeps working and
			// nothing changes.
			must(t, d.Remove(ctx, op.ID, state.Finalized))
			_, err = l.reconcile(ctx)
			must(t, err)
			wantBlobs(t, l, h, k, newP, mkvp.Pattern{}, cur)
			for range 2 {
				genAES(t, l, h, "later", false)
			}
			// The blob kept in CKA_IBM_OPAQUE_OLD still works after a
			// restore: CCA adapters keep the old key in their OLD register.
			must(t, l.RestoreOldBlob(h, k))
			wantBlobs(t, l, h, k, cur, mkvp.Pattern{}, mkvp.Pattern{})
			for range 2 {
				must(t, aesRoundTrip(l, h, k))
			}
		})
	}
}

// TestMKCanceling: a reconcile of CANCELING drops the REENC blobs and ends
// the operation in the token.
func TestMKCanceling(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	d := opsDir(t, layout)
	op := createOp(t, d, mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	keys := []ObjectHandle{genAES(t, l, h, "a", false), genAES(t, l, h, "b", false)}

	moveOp(t, d, op.ID, state.Canceling)
	for i := range 2 { // a repeated reconcile is harmless
		res, err := l.reconcile(ctx)
		must(t, err)
		want := map[int]int{0: 2, 1: 0}[i]
		if r := res[op.ID][slotCCA]; !r.affected || r.err != nil || r.objects != want {
			t.Fatalf("reconcile %d: %+v, want affected with %d objects", i, r, want)
		}
		if ids := activeOpIDs(l, slotCCA); len(ids) != 0 {
			t.Fatalf("operations still active: %v", ids)
		}
		for _, k := range keys {
			wantBlobs(t, l, h, k, cur, mkvp.Pattern{}, mkvp.Pattern{})
			must(t, aesRoundTrip(l, h, k))
		}
	}
	n := genAES(t, l, h, "after", false)
	wantBlobs(t, l, h, n, cur, mkvp.Pattern{}, mkvp.Pattern{})
}

// TestMKSettleMissedEnd: an active operation whose file disappeared is
// settled by what the adapters hold.
func TestMKSettleMissedEnd(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  bool // the officer set the new key on every APQN
	}{
		{name: "finalized", set: true},
		{name: "canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			layout := writeTestRoot(t)
			o := officer(t, layout)
			cur := currentMK(t, o, cca1, mkvp.CCAAES)
			newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
			d := opsDir(t, layout)
			op := createOp(t, d, mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
			l := newMKLib(t, layout, slotCCA)
			h := userSession(t, l, slotCCA)
			k := genAES(t, l, h, "k", false)
			wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})

			outcome := state.Canceled
			if tc.set {
				setMK(t, o, mkvp.CCAAES, cca1, cca2)
				outcome = state.Finalized
			} else {
				for _, q := range []apqn.ID{cca1, cca2} {
					must(t, o.ClearNew(ctx, q, mkvp.CCAAES))
				}
			}
			must(t, d.Remove(ctx, op.ID, outcome))
			_, err := l.reconcile(ctx)
			must(t, err)
			if ids := activeOpIDs(l, slotCCA); len(ids) != 0 {
				t.Fatalf("operations still active: %v", ids)
			}
			if tc.set {
				wantBlobs(t, l, h, k, newP, mkvp.Pattern{}, cur)
			} else {
				wantBlobs(t, l, h, k, cur, mkvp.Pattern{}, mkvp.Pattern{})
			}
			must(t, aesRoundTrip(l, h, k))
			n := genAES(t, l, h, "after", false)
			want := cur
			if tc.set {
				want = newP
			}
			wantBlobs(t, l, h, n, want, mkvp.Pattern{}, mkvp.Pattern{})
		})
	}
}

// TestMKAgentHandler: the handler answers for every initialized token and
// reconciles only on master key change events.
func TestMKAgentHandler(t *testing.T) {
	for _, tc := range []struct {
		name    string
		initEP  bool
		evType  string
		reconc  bool
		results map[uint32]event.Outcome
	}{
		{name: "reencipher", initEP: true, evType: state.ActReencipher.EventType(), reconc: true,
			results: map[uint32]event.Outcome{uint32(slotCCA): event.Affected, uint32(slotEP11): event.NotAffected}},
		{name: "uninitialized token not listed", evType: state.ActReencipher.EventType(), reconc: true,
			results: map[uint32]event.Outcome{uint32(slotCCA): event.Affected}},
		{name: "foreign event", initEP: true, evType: "backup.start"},
		{name: "unknown mkchange verb", initEP: true, evType: "mkchange.rotate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			layout := writeTestRoot(t)
			o := officer(t, layout)
			slots := []SlotID{slotCCA}
			if tc.initEP {
				slots = append(slots, slotEP11)
			}
			l := newMKLib(t, layout, slots...)
			h := userSession(t, l, slotCCA)
			keys := []ObjectHandle{genAES(t, l, h, "a", false), genAES(t, l, h, "b", false), genAES(t, l, h, "c", false)}
			genAES(t, l, h, "token", true) // not counted: the tool's
			cur := currentMK(t, o, cca1, mkvp.CCAAES)
			newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
			op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)

			reply := agentHandler{l}.HandleEvent(ctx, event.Event{ID: "ev-1", Type: tc.evType, OpID: string(op.ID)})
			if reply.EventID != "ev-1" {
				t.Errorf("reply to event %q", reply.EventID)
			}
			want := mkvp.Pattern{}
			if tc.reconc {
				want = newP
			}
			for _, k := range keys {
				wantBlobs(t, l, h, k, cur, want, mkvp.Pattern{})
			}
			if len(reply.Tokens) != len(tc.results) {
				t.Fatalf("reply lists %d tokens, want %d: %+v", len(reply.Tokens), len(tc.results), reply.Tokens)
			}
			info, err := l.GetTokenInfo(slotCCA)
			must(t, err)
			for _, r := range reply.Tokens {
				want, ok := tc.results[r.Slot]
				if !ok || r.Result != want || r.Error != "" {
					t.Errorf("slot %d: %+v, want %q", r.Slot, r, want)
				}
				if r.Slot == uint32(slotCCA) {
					if r.Objects != len(keys) {
						t.Errorf("slot %d: %d objects, want %d", r.Slot, r.Objects, len(keys))
					}
					if r.Serial != strings.TrimSpace(info.SerialNumber) {
						t.Errorf("slot %d: serial %q, want %q", r.Slot, r.Serial, info.SerialNumber)
					}
				} else if r.Objects != 0 {
					t.Errorf("slot %d: %d objects for a token not affected", r.Slot, r.Objects)
				}
			}
			toks := agentHandler{l}.Tokens()
			if len(toks) != len(slots) {
				t.Fatalf("Tokens() = %+v, want %d tokens", toks, len(slots))
			}
			if toks[0].Type != event.CCA || (len(toks) > 1 && toks[1].Type != event.EP11) {
				t.Errorf("token types %+v", toks)
			}
		})
	}
}

var ep11q2 = apqn.MustParse("07.0033")

// writeEP11PairRoot is writeTestRoot with a second EP11 APQN (07.0033) in
// the EP11 token's allowlist.
func writeEP11PairRoot(t testing.TB) paths.Layout {
	t.Helper()
	layout := writeTestRoot(t)
	must(t, os.RemoveAll(layout.SimDir()))
	topo := sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{cca1, cca2}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{ep11q, ep11q2}},
	}, Seed: []byte("tokenlib test")}
	must(t, sim.Init(layout.SimDir(), topo))
	must(t, os.WriteFile(filepath.Join(layout.ConfDir(), "ep11tok.conf"), []byte("APQN_ALLOWLIST\n6 0x33\n7 0x33\nEND\n"), 0o644))
	return layout
}

// TestMKEP11Pinning: while an operation is active an EP11 token uses one
// APQN, so its new keys do not alternate between the old and the new
// wrapping key while the officer sets the APQNs one by one; it moves to
// another APQN only when the pinned one fails.
func TestMKEP11Pinning(t *testing.T) {
	ctx := context.Background()
	layout := writeEP11PairRoot(t)
	o := officer(t, layout)
	cur := currentMK(t, o, ep11q, mkvp.EP11WK)
	if p := currentMK(t, o, ep11q2, mkvp.EP11WK); p != cur {
		t.Fatalf("the EP11 APQNs start with different wrapping keys: %s, %s", cur, p)
	}
	newP := loadNew(t, o, mkvp.EP11WK, ep11q, ep11q2)
	op := createOp(t, opsDir(t, layout), mkvp.EP11WK, newP, state.Reenciphered, ep11q, ep11q2)
	setMK(t, o, mkvp.EP11WK, ep11q2) // mixed: the token starts only because op is active
	l := newMKLib(t, layout, slotEP11)
	if ids := activeOpIDs(l, slotEP11); len(ids) != 1 || ids[0] != op.ID {
		t.Fatalf("active operations %v", ids)
	}
	h := userSession(t, l, slotEP11)
	first := genAES(t, l, h, "k", false)
	info, _, _ := blobInfo(t, l, h, first, ck.CKA_IBM_OPAQUE)
	for i := range 4 {
		k := genAES(t, l, h, "k", false)
		wantBlobs(t, l, h, k, info.Pattern, newP, mkvp.Pattern{})
		must(t, aesRoundTrip(l, h, k))
		if i == 1 {
			must(t, encryptOnce(l, h, k)) // the round robin would change parity
		}
	}
	// The pinned APQN fails: the token moves to the other one and stays.
	pinned, other := ep11q, ep11q2
	if info.Pattern == newP {
		pinned, other = ep11q2, ep11q
	}
	must(t, o.Do(ctx, func(tx *sim.Tx) error { return tx.SetOnline(pinned, false) }))
	must(t, aesRoundTrip(l, h, first))
	must(t, o.Do(ctx, func(tx *sim.Tx) error { return tx.SetOnline(pinned, true) }))
	otherP := currentMK(t, o, other, mkvp.EP11WK)
	for range 3 {
		k := genAES(t, l, h, "moved", false)
		wantBlobs(t, l, h, k, otherP, newP, mkvp.Pattern{})
	}
}

// TestMKConcurrentUse: applications keep using and making keys while the
// officer activates the new master key and the operation finalizes; -race
// watches the engine's locking.
func TestMKConcurrentUse(t *testing.T) {
	for _, tc := range []struct {
		name string
		slot SlotID
		mt   mkvp.Type
		qs   []apqn.ID // set in this order
	}{
		{name: "CCA", slot: slotCCA, mt: mkvp.CCAAES, qs: []apqn.ID{cca1, cca2}},
		{name: "EP11", slot: slotEP11, mt: mkvp.EP11WK, qs: []apqn.ID{ep11q}},
	} {
		t.Run(tc.name, func(t *testing.T) { concurrentUse(t, tc.slot, tc.mt, tc.qs) })
	}
}

func concurrentUse(t *testing.T, slot SlotID, mt mkvp.Type, qs []apqn.ID) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	newP := loadNew(t, o, mt, qs...)
	d := opsDir(t, layout)
	op := createOp(t, d, mt, newP, state.Reenciphered, qs...)
	l := newMKLib(t, layout, slot)
	h0 := userSession(t, l, slot)
	shared := genAES(t, l, h0, "shared", false)

	const workers = 3
	stop := make(chan struct{})
	started := make(chan struct{}, workers)
	errs := make(chan error, workers)
	for range workers {
		h, err := l.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
		must(t, err)
		go func() {
			var first error
			for n := 0; ; n++ {
				select {
				case <-stop:
					errs <- first
					return
				default:
				}
				k := shared
				if n%4 == 0 {
					var err error
					k, err = l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("w", false))
					if err != nil && first == nil {
						first = err
					}
				}
				if err := aesRoundTrip(l, h, k); err != nil && first == nil {
					first = err
				}
				if n == 0 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range workers { // every worker is past its first key use
		<-started
	}
	for _, q := range qs {
		setMK(t, o, mt, q)
		_, err := l.reconcile(ctx)
		must(t, err)
	}
	moveOp(t, d, op.ID, state.Finalizing)
	_, err := l.reconcile(ctx)
	must(t, err)
	close(stop)
	for range workers {
		if err := <-errs; err != nil {
			t.Errorf("application call failed during the change: %v", err)
		}
	}
	if ids := activeOpIDs(l, slot); len(ids) != 0 {
		t.Fatalf("operations still active: %v", ids)
	}
	info, _, _ := blobInfo(t, l, h0, shared, ck.CKA_IBM_OPAQUE)
	if info.Pattern != newP {
		t.Fatalf("shared key under %s after finalize, want %s", info.Pattern, newP)
	}
	must(t, aesRoundTrip(l, h0, shared))
}

// TestMKAgentHandlerFailures: a reconcile that cannot read the operations,
// or cannot re-encipher a session key, answers Failed with the reason.
func TestMKAgentHandlerFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup breaks something after the keys exist; it returns the
		// operation id of the event.
		setup func(t *testing.T, layout paths.Layout, o *sim.HSM) state.ID
		// failed lists the slots that must answer Failed, with a text
		// their error must contain.
		failed map[uint32]string
		class  errclass.Class
		// after checks key creation afterwards.
		after func(t *testing.T, l *Library, h SessionHandle)
	}{
		{
			name: "operation directory is not a directory",
			setup: func(t *testing.T, layout paths.Layout, o *sim.HSM) state.ID {
				must(t, os.MkdirAll(filepath.Dir(layout.MKChangeDir()), 0o755))
				must(t, os.WriteFile(layout.MKChangeDir(), []byte("not a directory"), 0o644))
				return "aaaaaa"
			},
			failed: map[uint32]string{uint32(slotCCA): "not a plain directory", uint32(slotEP11): "not a plain directory"},
			class:  errclass.PermissionDenied,
			after: func(t *testing.T, l *Library, h SessionHandle) {
				genAES(t, l, h, "after", false) // the tokens keep working
			},
		},
		{
			name: "NEW register missing on one APQN",
			setup: func(t *testing.T, layout paths.Layout, o *sim.HSM) state.ID {
				newP := loadNew(t, o, mkvp.CCAAES, cca1) // not on 02.0033
				return createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2).ID
			},
			failed: map[uint32]string{uint32(slotCCA): "02.0033"},
			class:  errclass.FailedPrecondition,
			after: func(t *testing.T, l *Library, h SessionHandle) {
				// 02.0033 cannot give a new key its REENC blob: the key
				// is made on 01.0033 instead, wherever the round robin
				// starts.
				cur, _, _ := blobInfo(t, l, h, find(t, l, h)[0], ck.CKA_IBM_OPAQUE)
				for range 2 {
					k := genAES(t, l, h, "after", false)
					_, reenc, ok := blobInfo(t, l, h, k, ck.CKA_IBM_OPAQUE_REENC)
					if !ok || len(reenc) == 0 {
						t.Fatal("new key without REENC blob")
					}
					wantBlobs(t, l, h, k, cur.Pattern, mustInspect(t, reenc).Pattern, mkvp.Pattern{})
					must(t, encryptOnce(l, h, k)) // the next key starts on the other APQN
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout := writeTestRoot(t)
			o := officer(t, layout)
			l := newMKLib(t, layout, slotCCA, slotEP11)
			h := userSession(t, l, slotCCA)
			for range 4 {
				genAES(t, l, h, "k", false)
			}
			id := tc.setup(t, layout, o)
			reply := agentHandler{l}.HandleEvent(context.Background(),
				event.Event{ID: "ev", Type: state.ActReencipher.EventType(), OpID: string(id)})
			if len(reply.Tokens) != 2 {
				t.Fatalf("reply lists %d tokens, want 2: %+v", len(reply.Tokens), reply.Tokens)
			}
			for _, r := range reply.Tokens {
				text, fails := tc.failed[r.Slot]
				switch {
				case !fails && r.Result != event.NotAffected:
					t.Errorf("slot %d: %+v, want not affected", r.Slot, r)
				case fails && (r.Result != event.Failed || r.Class != tc.class || !strings.Contains(r.Error, text)):
					t.Errorf("slot %d: %+v, want failed, class %v, %q in the error", r.Slot, r, tc.class, text)
				}
			}
			tc.after(t, l, h)
		})
	}
}

func mustInspect(t testing.TB, blob []byte) hsm.BlobInfo {
	t.Helper()
	info, err := hsm.Inspect(blob)
	must(t, err)
	return info
}

// TestMKToolPassSeenByApplication: the token objects are re-enciphered and
// finalized by the tool (another Library); the application sees the
// results through the store and keeps using its token keys.
func TestMKToolPassSeenByApplication(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	app := newMKLib(t, layout, slotEP11)
	h := userSession(t, app, slotEP11)
	cur := currentMK(t, o, ep11q, mkvp.EP11WK)
	keys := []ObjectHandle{
		genAES(t, app, h, "private", true),
		genAES(t, app, h, "public", true, Bool(ck.CKA_PRIVATE, false)),
		genAES(t, app, h, "session", false),
	}
	must(t, aesRoundTrip(app, h, keys[0])) // cached before the tool's pass

	newP := loadNew(t, o, mkvp.EP11WK, ep11q)
	d := opsDir(t, layout)
	op := createOp(t, d, mkvp.EP11WK, newP, state.Reenciphered, ep11q)
	_, err := app.reconcile(ctx)
	must(t, err)
	tool := openMKLib(t, layout)
	userSession(t, tool, slotEP11)
	n, err := tool.MKChangePass(ctx, slotEP11, op, state.ActReencipher, nil)
	must(t, err)
	if n != 2 {
		t.Fatalf("tool re-enciphered %d token objects, want 2", n)
	}
	for _, k := range keys {
		wantBlobs(t, app, h, k, cur, newP, mkvp.Pattern{})
	}

	setMK(t, o, mkvp.EP11WK, ep11q)
	for _, k := range keys {
		must(t, aesRoundTrip(app, h, k))
	}

	op = moveOp(t, d, op.ID, state.Finalizing)
	n, err = tool.MKChangePass(ctx, slotEP11, op, state.ActFinalize, nil)
	must(t, err)
	if n != 2 {
		t.Fatalf("tool finalized %d token objects, want 2", n)
	}
	_, err = app.reconcile(ctx)
	must(t, err)
	for _, k := range keys {
		wantBlobs(t, app, h, k, newP, mkvp.Pattern{}, cur)
		must(t, aesRoundTrip(app, h, k))
	}
}

// A session key replaced while the pass works on it (C_SetAttributeValue
// swaps in a new object) is not skipped: the replacement is transformed.
func TestMKSessionPassFollowsReplacement(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	k := genAES(t, l, h, "k", false)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)

	tok := l.slots[slotCCA]
	tok.mu.Lock()
	stale := tok.sessObjs[ObjectHandle(k)]
	replacement := &object{handle: stale.handle, attrs: stale.attrs.clone(), session: stale.session}
	replacement.attrs[ck.CKA_LABEL] = []byte("renamed")
	tok.sessObjs[ObjectHandle(k)] = replacement
	tok.mu.Unlock()

	ok, err := tok.sessionTransform(ctx, cca1, stale, op, state.ActReencipher)
	if err != nil || !ok {
		t.Fatalf("sessionTransform = %v, %v; want the replacement transformed", ok, err)
	}
	wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})
	if got, _ := l.GetAttributes(h, k, ck.CKA_LABEL); string(got[0]) != "renamed" {
		t.Fatalf("label %q: the replacement's own change was lost", got[0])
	}

	// A destroyed object is skipped without error.
	must(t, l.DestroyObject(h, k))
	if ok, err := tok.sessionTransform(ctx, cca1, replacement, op, state.ActCancel); ok || err != nil {
		t.Fatalf("destroyed object: %v, %v", ok, err)
	}
}
