package tokenlib

import (
	"context"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// TestStaleCacheRevalidatesOneObject: after another process wrote to the
// token, using one object revalidates (and if needed re-reads) just that
// object instead of reloading the whole object cache, and still sees every
// change of the other process.
func TestStaleCacheRevalidatesOneObject(t *testing.T) {
	ctx := context.Background()
	label := func(t *testing.T, l *Library, h SessionHandle, o ObjectHandle) (string, error) {
		v, err := l.GetAttributes(h, o, ck.CKA_LABEL)
		if err != nil {
			return "", err
		}
		return string(v[0]), nil
	}
	tests := []struct {
		name string
		// foreign changes the object o (another key, bystander, exists
		// too) through another store handle, as another process would.
		foreign   func(t *testing.T, st *store.Store, dk *store.DataKey, o, bystander ObjectHandle)
		logout    bool // use the objects logged out (o is then public)
		wantLabel string
		wantRV    ck.RV
	}{
		{name: "changed by another process", wantLabel: "renamed",
			foreign: func(t *testing.T, st *store.Store, dk *store.DataKey, o, _ ObjectHandle) {
				setForeign(t, st, dk, o, func(so *store.Object) { so.Attrs[uint32(ck.CKA_LABEL)] = []byte("renamed") })
			}},
		{name: "another object changed", wantLabel: "target",
			foreign: func(t *testing.T, st *store.Store, dk *store.DataKey, _, bystander ObjectHandle) {
				setForeign(t, st, dk, bystander, func(so *store.Object) { so.Attrs[uint32(ck.CKA_LABEL)] = []byte("other") })
			}},
		{name: "deleted by another process", wantRV: ck.CKR_OBJECT_HANDLE_INVALID,
			foreign: func(t *testing.T, st *store.Store, _ *store.DataKey, o, _ ObjectHandle) {
				must(t, st.Delete(context.Background(), uint64(o)))
			}},
		{name: "made private while logged out", logout: true, wantRV: ck.CKR_OBJECT_HANDLE_INVALID,
			foreign: func(t *testing.T, st *store.Store, dk *store.DataKey, o, _ ObjectHandle) {
				setForeign(t, st, dk, o, func(so *store.Object) {
					so.Private = true
					so.Attrs[uint32(ck.CKA_PRIVATE)] = boolBytes(true)
				})
			}},
		{name: "public object changed while logged out", logout: true, wantLabel: "renamed",
			foreign: func(t *testing.T, st *store.Store, dk *store.DataKey, o, _ ObjectHandle) {
				setForeign(t, st, dk, o, func(so *store.Object) { so.Attrs[uint32(ck.CKA_LABEL)] = []byte("renamed") })
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, layout := newTestLib(t)
			h := userSession(t, l, slotCCA)
			mk := func(name string) ObjectHandle {
				o, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), Bool(ck.CKA_TOKEN, true),
					Bool(ck.CKA_PRIVATE, !tt.logout), String(ck.CKA_LABEL, name), String(ck.CKA_VALUE, "v")})
				must(t, err)
				return o
			}
			o, bystander := mk("target"), mk("bystander")
			if tt.logout {
				must(t, l.Logout(h))
			}
			// Load the cache in this login state.
			if got, err := label(t, l, h, o); err != nil || got != "target" {
				t.Fatalf("label before: %q %v", got, err)
			}
			if got, err := label(t, l, h, bystander); err != nil || got != "bystander" {
				t.Fatalf("bystander label before: %q %v", got, err)
			}
			tok, err := l.token(slotCCA)
			must(t, err)
			tok.mu.Lock()
			cachedBystander, _ := tok.cache.Peek(uint64(bystander))
			tok.mu.Unlock()
			if cachedBystander == nil {
				t.Fatal("bystander not cached")
			}

			st, err := store.Open(layout.TokenDir("ccatok"), store.Options{KDF: testKDF})
			must(t, err)
			defer st.Close()
			dk, err := st.Login(ctx, store.User, []byte(userPIN))
			must(t, err)
			tt.foreign(t, st, dk, o, bystander)

			got, err := label(t, l, h, o)
			if tt.wantRV != 0 {
				wantRV(t, err, tt.wantRV)
			} else if err != nil || got != tt.wantLabel {
				t.Fatalf("label after: %q %v, want %q", got, err, tt.wantLabel)
			}
			tok.mu.Lock()
			nowBystander, _ := tok.cache.Peek(uint64(bystander))
			tok.mu.Unlock()
			if nowBystander != cachedBystander {
				t.Errorf("the bystander was re-read for a change of another object")
			}
			// A search reloads the stale cache and agrees.
			var tmpl []Attribute
			if tt.wantRV == 0 {
				tmpl = []Attribute{String(ck.CKA_LABEL, tt.wantLabel)}
				if hs := find(t, l, h, tmpl...); len(hs) != 1 || hs[0] != o {
					t.Fatalf("search for %q found %v, want [%d]", tt.wantLabel, hs, o)
				}
			} else if hs := find(t, l, h, String(ck.CKA_LABEL, "target")); len(hs) != 0 {
				t.Fatalf("search found the vanished object: %v", hs)
			}
		})
	}
}

// An object another process created after the cache was loaded is found
// by its handle too (the stale cache does not hold it).
func TestStaleCacheFindsForeignNewObject(t *testing.T) {
	ctx := context.Background()
	l, layout := newTestLib(t)
	h := userSession(t, l, slotCCA)
	k := genAES(t, l, h, "mine", true)
	_ = getAttr(t, l, h, k, ck.CKA_LABEL) // load the cache
	st, err := store.Open(layout.TokenDir("ccatok"), store.Options{KDF: testKDF})
	must(t, err)
	defer st.Close()
	dk, err := st.Login(ctx, store.User, []byte(userPIN))
	must(t, err)
	proto, err := st.Get(ctx, dk, uint64(k))
	must(t, err)
	n := &store.Object{Class: proto.Class, Private: proto.Private, Attrs: map[uint32][]byte{}}
	for a, v := range proto.Attrs {
		n.Attrs[a] = v
	}
	n.Attrs[uint32(ck.CKA_LABEL)] = []byte("theirs")
	must(t, st.Create(ctx, dk, n))
	if got := string(getAttr(t, l, h, ObjectHandle(n.Handle), ck.CKA_LABEL)); got != "theirs" {
		t.Fatalf("label of the other process's key: %q", got)
	}
}

func setForeign(t *testing.T, st *store.Store, dk *store.DataKey, o ObjectHandle, change func(*store.Object)) {
	t.Helper()
	ctx := context.Background()
	so, err := st.Get(ctx, dk, uint64(o))
	must(t, err)
	change(so)
	must(t, st.Update(ctx, dk, so))
}
