package tokenlib

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/hsm/hsmtest"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/objcache"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// fillForeign writes n data objects to the CCA token through its own store
// handle, as another process would: labels obj-%05d, even ones private.
func fillForeign(t testing.TB, layout paths.Layout, n int) {
	t.Helper()
	st, err := store.Open(layout.TokenDir("ccatok"), store.Options{KDF: testKDF})
	must(t, err)
	defer st.Close()
	ctx := context.Background()
	dk, err := st.Login(ctx, store.User, []byte(userPIN))
	must(t, err)
	err = st.Batch(ctx, dk, func(tx *store.Tx) error {
		for i := range n {
			tmpl := template{
				ck.CKA_CLASS: ulongBytes(uint(ck.CKO_DATA)), ck.CKA_TOKEN: boolBytes(true),
				ck.CKA_PRIVATE: boolBytes(i%2 == 0), ck.CKA_LABEL: fmt.Appendf(nil, "obj-%05d", i),
			}
			_ = objectDefaults(tmpl, ck.CKO_DATA)
			o := &object{attrs: tmpl}
			so := toStore(o)
			so.UniqueID = ""
			if err := tx.Create(so); err != nil {
				return err
			}
		}
		return nil
	})
	must(t, err)
}

func decoded(t testing.TB, l *Library) uint64 {
	t.Helper()
	tok, err := l.token(slotCCA)
	must(t, err)
	return tok.db.st.Stats().Decoded
}

// TestOpenAndFindAreLazy: opening a token, logging in and finding one
// object by label decode no object; using the object decodes it, once.
func TestOpenAndFindAreLazy(t *testing.T) {
	_, layout := newTestLib(t)
	fillForeign(t, layout, 600)
	l := openTestLib(t, layout)
	h := userSession(t, l, slotCCA)
	if _, err := l.GetTokenInfo(slotCCA); err != nil {
		t.Fatal(err)
	}
	if d := decoded(t, l); d != 0 {
		t.Fatalf("opening and logging in decoded %d objects", d)
	}
	for _, label := range []string{"obj-00421", "obj-00422"} { // public and private
		base := decoded(t, l)
		hs := find(t, l, h, String(ck.CKA_LABEL, label))
		if len(hs) != 1 {
			t.Fatalf("find %s: %v", label, hs)
		}
		if d := decoded(t, l) - base; d != 0 {
			t.Fatalf("finding %s decoded %d objects", label, d)
		}
		for range 3 {
			if got := string(getAttr(t, l, h, hs[0], ck.CKA_LABEL)); got != label {
				t.Fatalf("label %q, want %q", got, label)
			}
		}
		if d := decoded(t, l) - base; d != 1 {
			t.Fatalf("three uses decoded the object %d times, want once", d)
		}
	}
}

// TestCacheBoundRespected: a process that uses more objects than the
// cache holds keeps at most the bound, and still reads every object
// correctly (an evicted object is read again).
func TestCacheBoundRespected(t *testing.T) {
	_, layout := newTestLib(t)
	fillForeign(t, layout, 200)
	l := openTestLib(t, layout)
	h := userSession(t, l, slotCCA)
	tok := l.slots[slotCCA]
	tok.mu.Lock()
	tok.cache = objcache.New[*object](16)
	tok.mu.Unlock()
	hs := find(t, l, h, Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)))
	if len(hs) != 200 || !slices.IsSorted(hs) {
		t.Fatalf("found %d objects (sorted %v)", len(hs), slices.IsSorted(hs))
	}
	for round := range 2 {
		for i, oh := range hs {
			if got, want := string(getAttr(t, l, h, oh, ck.CKA_LABEL)), fmt.Sprintf("obj-%05d", i); got != want {
				t.Fatalf("round %d: object %d label %q, want %q", round, oh, got, want)
			}
			tok.mu.Lock()
			n := tok.cache.Len()
			tok.mu.Unlock()
			if n > 16 {
				t.Fatalf("cache holds %d objects, bound 16", n)
			}
		}
	}
	if d := decoded(t, l); d != 400 {
		t.Errorf("decoded %d objects in two rounds over 200 with a cache of 16, want 400", d)
	}
}

// TestFindPagesInOrder: FindObjects in small pages returns every match
// once, token objects by handle and then session objects, across a logout
// that hides the private ones.
func TestFindPagesInOrder(t *testing.T) {
	_, layout := newTestLib(t)
	fillForeign(t, layout, 50)
	l := openTestLib(t, layout)
	h := userSession(t, l, slotCCA)
	var sess []ObjectHandle
	for i := range 4 {
		o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), Bool(ck.CKA_PRIVATE, i%2 == 0),
			String(ck.CKA_LABEL, fmt.Sprintf("sess-%d", i))})
		must(t, err)
		sess = append(sess, o)
	}
	all := find(t, l, h, Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)))
	if len(all) != 54 || !slices.IsSorted(all) || !slices.Equal(all[50:], sess) {
		t.Fatalf("paged find: %d handles, sorted %v, tail %v want %v", len(all), slices.IsSorted(all), all[50:], sess)
	}
	// Private only, token only, by the store's columns.
	priv := find(t, l, h, Bool(ck.CKA_PRIVATE, true), Bool(ck.CKA_TOKEN, true))
	if len(priv) != 25 {
		t.Fatalf("private token objects: %d, want 25", len(priv))
	}
	if hs := find(t, l, h, Bool(ck.CKA_TOKEN, false)); !slices.Equal(hs, sess) {
		t.Fatalf("session objects: %v, want %v", hs, sess)
	}
	// A logout in the middle of a search hides private objects from the
	// rest of it.
	must(t, l.FindObjectsInit(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA))}))
	first, err := l.FindObjects(h, 10)
	must(t, err)
	must(t, l.Logout(h))
	var rest []ObjectHandle
	for {
		hs, err := l.FindObjects(h, 7)
		must(t, err)
		if len(hs) == 0 {
			break
		}
		rest = append(rest, hs...)
	}
	must(t, l.FindObjectsFinal(h))
	if len(first) != 10 || len(rest) != 20+2 { // 20 public token objects left, 2 public session objects
		t.Fatalf("search across logout: %d then %d handles", len(first), len(rest))
	}
	for _, oh := range rest {
		if _, err := l.GetAttributes(h, oh, ck.CKA_LABEL); err != nil {
			t.Fatalf("handle %d returned after logout is not usable: %v", oh, err)
		}
	}
}

// TestDamagedObjectIsolated: an object whose stored attributes are damaged
// (cut short, or a sealed value that no longer authenticates) is still
// found, fails with an error naming its handle when used, and leaves
// every other object usable.
func TestDamagedObjectIsolated(t *testing.T) {
	for _, damage := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"truncated attributes", func(b []byte) []byte { return b[:40] }},
		{"sealed value does not unseal", func(b []byte) []byte { b[len(b)-40] ^= 1; return b }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			l, layout := newTestLib(t)
			h := userSession(t, l, slotCCA)
			var keys []ObjectHandle
			for i := range 5 {
				keys = append(keys, genAES(t, l, h, fmt.Sprintf("k%d", i), true))
			}
			victim := keys[2]
			db, err := sql.Open("sqlite", layout.TokenDir("ccatok")+"/"+store.DBName)
			must(t, err)
			var blob []byte
			must(t, db.QueryRow(`SELECT attrs FROM object WHERE handle = ?`, int64(victim)).Scan(&blob))
			if _, err := db.Exec(`UPDATE object SET attrs = ? WHERE handle = ?`, damage.change(blob), int64(victim)); err != nil {
				t.Fatal(err)
			}
			db.Close()
			l2 := openTestLib(t, layout)
			h2 := userSession(t, l2, slotCCA)
			found := find(t, l2, h2, Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)))
			if !slices.Equal(found, keys) {
				t.Fatalf("found %v, want %v", found, keys)
			}
			_, err = l2.GetAttributes(h2, victim, ck.CKA_LABEL)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("object handle %d", victim)) ||
				errclass.Of(err) != errclass.DataLoss || RV(err) != ck.CKR_DEVICE_ERROR {
				t.Fatalf("damaged object: %v (rv %v)", err, RV(err))
			}
			for i, k := range keys {
				if k == victim {
					continue
				}
				if got := string(getAttr(t, l2, h2, k, ck.CKA_LABEL)); got != fmt.Sprintf("k%d", i) {
					t.Errorf("key %d: label %q", k, got)
				}
				if _, err := l2.GetAttributes(h2, k, ck.CKA_IBM_OPAQUE); err != nil {
					t.Errorf("key %d unusable: %v", k, err)
				}
			}
		})
	}
}

// TestSessionPassPages: the session-object pass takes the keys in pages of
// sessionPage, in handle order, and transforms every one of them.
func TestSessionPassPages(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	var keys []ObjectHandle
	for i := range 11 {
		keys = append(keys, genAES(t, l, h, fmt.Sprint("s", i), false))
	}
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	old := sessionPage
	sessionPage = 3
	t.Cleanup(func() { sessionPage = old })
	tok := l.slots[slotCCA]
	var seen []ObjectHandle
	for after := ObjectHandle(0); ; {
		page := tok.sessionPageAfter(after, sessionPage)
		if len(page) == 0 {
			break
		}
		if len(page) > 3 {
			t.Fatalf("page of %d", len(page))
		}
		for _, o := range page {
			seen = append(seen, o.handle)
		}
		after = page[len(page)-1].handle
	}
	if !slices.Equal(seen, keys) {
		t.Fatalf("pages gave %v, want %v", seen, keys)
	}
	view, err := tok.mkView(ctx)
	must(t, err)
	n, err := tok.sessionPass(ctx, view, op, state.ActReencipher)
	if err != nil || n != len(keys) {
		t.Fatalf("session pass: %d changed, %v", n, err)
	}
	for _, k := range keys {
		wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})
	}
}

// TestSessionPassInFlight: the agents' session-key pass keeps
// PKCSHSM_PASS_INFLIGHT requests inside the backend at once on each APQN
// (none returns before all are in), never more, and every key ends with
// its REENC blob.
func TestSessionPassInFlight(t *testing.T) {
	t.Setenv(mkchange.InFlightEnv, "3")
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	var keys []ObjectHandle
	for i := range 14 {
		keys = append(keys, genAES(t, l, h, fmt.Sprint("s", i), false))
	}
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	tok := l.slots[slotCCA]
	view, err := tok.mkView(ctx)
	must(t, err)
	g := hsmtest.NewHeld(l.backend, 6)
	real := l.backend
	l.backend = g
	n, err := tok.sessionPass(ctx, view, op, state.ActReencipher)
	l.backend = real
	if err != nil || n != len(keys) {
		t.Fatalf("session pass: %d changed, %v", n, err)
	}
	if g.Most(cca1) != 3 || g.Most(cca2) != 3 {
		t.Fatalf("most requests in flight per APQN %d and %d, want 3 on each", g.Most(cca1), g.Most(cca2))
	}
	for _, k := range keys {
		wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})
	}
}
