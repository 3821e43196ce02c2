package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func keyObject(label string, private bool) *Object {
	return &Object{Class: ckoSecret, Private: private, Attrs: map[uint32][]byte{
		ckaClass:  {4, 0, 0, 0, 0, 0, 0, 0},
		ckaLabel:  []byte(label),
		ckaOpaque: bytes.Repeat([]byte{0xA5}, 64),
		ckaID:     {},
	}}
}

func TestCreateRejectsBadObjects(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	many := map[uint32][]byte{}
	for i := range MaxAttrs + 1 {
		many[uint32(i)] = nil
	}
	tests := []struct {
		name  string
		dk    *DataKey
		o     *Object
		class errclass.Class
		is    error
	}{
		{"nil object", dk, nil, errclass.InvalidArgument, nil},
		{"unique id preset", dk, &Object{UniqueID: "mine"}, errclass.InvalidArgument, nil},
		{"private without key", nil, keyObject("p", true), errclass.PermissionDenied, ErrLoginRequired},
		{"too many attributes", dk, &Object{Attrs: many}, errclass.InvalidArgument, nil},
		{"value too large", dk, &Object{Attrs: map[uint32][]byte{1: make([]byte, MaxValueLen+1)}}, errclass.InvalidArgument, nil},
		{"class out of range", dk, &Object{Class: math.MaxUint64}, errclass.InvalidArgument, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g0, _ := s.Generation(ctx)
			err := s.Create(ctx, tt.dk, tt.o)
			wantClass(t, err, tt.class, tt.is)
			if objectCount(t, s) != 0 {
				t.Fatal("refused Create stored an object")
			}
			if g1, _ := s.Generation(ctx); g1 != g0 {
				t.Fatal("refused Create moved the generation")
			}
		})
	}
}

func TestCreateGetRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	for _, private := range []bool{false, true} {
		t.Run(fmt.Sprintf("private=%v", private), func(t *testing.T) {
			o := keyObject("rt", private)
			o.Attrs[0x7777] = nil // empty values survive
			if err := s.Create(ctx, dk, o); err != nil {
				t.Fatal(err)
			}
			if o.Handle == 0 || len(o.UniqueID) != 32 || o.Version != 1 {
				t.Fatalf("Create assigned %d %q %d", o.Handle, o.UniqueID, o.Version)
			}
			got, err := s.Get(ctx, dk, o.Handle)
			if err != nil {
				t.Fatal(err)
			}
			if got.Handle != o.Handle || got.UniqueID != o.UniqueID || got.Class != o.Class || got.Private != private || got.Version != 1 {
				t.Fatalf("Get = %+v, want %+v", got, o)
			}
			if len(got.Attrs) != len(o.Attrs) {
				t.Fatalf("Get returned %d attributes, want %d", len(got.Attrs), len(o.Attrs))
			}
			for k, v := range o.Attrs {
				if gv, ok := got.Attrs[k]; !ok || !bytes.Equal(gv, v) {
					t.Fatalf("attribute %#x = %x (present %v), want %x", k, gv, ok, v)
				}
			}
			if private {
				_, err := s.Get(ctx, nil, o.Handle)
				wantClass(t, err, errclass.PermissionDenied, ErrLoginRequired)
			} else if _, err := s.Get(ctx, nil, o.Handle); err != nil {
				t.Fatalf("public Get without key: %v", err)
			}
		})
	}
}

func TestGetMissing(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	for _, h := range []uint64{0, 1, 999, math.MaxUint64} {
		_, err := s.Get(ctx, dk, h)
		wantClass(t, err, errclass.NotFound, nil)
		_, err = s.Version(ctx, h)
		wantClass(t, err, errclass.NotFound, nil)
	}
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	o := keyObject("u", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, dk, o.Handle)
	b, _ := s.Get(ctx, dk, o.Handle)
	a.Attrs[ckaLabel] = []byte("from a")
	if err := s.Update(ctx, dk, a); err != nil {
		t.Fatal(err)
	}
	if a.Version != 2 {
		t.Fatalf("version after update %d, want 2", a.Version)
	}
	if v, _ := s.Version(ctx, o.Handle); v != 2 {
		t.Fatalf("stored version %d, want 2", v)
	}
	// b still holds version 1: its write must be refused and change nothing.
	b.Attrs[ckaLabel] = []byte("from b")
	err := s.Update(ctx, dk, b)
	wantClass(t, err, errclass.Conflict, nil)
	if b.Version != 1 {
		t.Fatal("refused Update changed the caller's version")
	}
	got, _ := s.Get(ctx, dk, o.Handle)
	if string(got.Attrs[ckaLabel]) != "from a" || got.Version != 2 {
		t.Fatalf("after conflict: %q v%d", got.Attrs[ckaLabel], got.Version)
	}
	// Without a key a private object cannot be changed, nor made public.
	got.Private = false
	err = s.Update(ctx, nil, got)
	wantClass(t, err, errclass.PermissionDenied, ErrLoginRequired)
	// With a key it can be made public, and its attributes become clear.
	if err := s.Update(ctx, dk, got); err != nil {
		t.Fatal(err)
	}
	pub, err := s.Get(ctx, nil, o.Handle)
	if err != nil || string(pub.Attrs[ckaLabel]) != "from a" {
		t.Fatalf("Get after making public: %v", err)
	}
	// A deleted object cannot be updated.
	if err := s.Delete(ctx, o.Handle); err != nil {
		t.Fatal(err)
	}
	err = s.Update(ctx, dk, pub)
	wantClass(t, err, errclass.NotFound, nil)
	err = s.Update(ctx, dk, &Object{Handle: 5})
	wantClass(t, err, errclass.InvalidArgument, nil)
}

// TestUpdateReusesUnchangedSeals checks the fast path an MK change relies on:
// only changed values are sealed again, unchanged ones keep their bytes.
func TestUpdateReusesUnchangedSeals(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	o := keyObject("seal", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	before := rawAttrs(t, s, o.Handle)
	got, _ := s.Get(ctx, dk, o.Handle)
	got.Attrs[ckaOpaque] = []byte("new blob")
	got.Attrs[ckaLabel][0] ^= 1 // in-place change of a returned slice must be noticed
	if err := s.Update(ctx, dk, got); err != nil {
		t.Fatal(err)
	}
	after := rawAttrs(t, s, o.Handle)
	if !bytes.Equal(before[ckaID], after[ckaID]) || !bytes.Equal(before[ckaClass], after[ckaClass]) {
		t.Error("unchanged attributes were sealed again")
	}
	if bytes.Equal(before[ckaOpaque], after[ckaOpaque]) || bytes.Equal(before[ckaLabel], after[ckaLabel]) {
		t.Error("changed attributes kept their old seal")
	}
	re, err := s.Get(ctx, dk, o.Handle)
	if err != nil || string(re.Attrs[ckaOpaque]) != "new blob" || re.Attrs[ckaLabel][0] != 's'^1 {
		t.Fatalf("Get after update: %v %q", err, re.Attrs[ckaLabel])
	}
}

// rawAttrs returns the stored (sealed) values of an object by type.
func rawAttrs(t *testing.T, s *Store, h uint64) map[uint32][]byte {
	t.Helper()
	var blob, blobs []byte
	if err := s.rdb.QueryRow(`SELECT attrs, (SELECT blobs FROM blob WHERE blob.handle = object.handle) FROM object WHERE handle = ?`, h).Scan(&blob, &blobs); err != nil {
		t.Fatal(err)
	}
	m := map[uint32][]byte{}
	for _, b := range [][]byte{blob, blobs} {
		if b == nil {
			continue
		}
		var r rawObject
		if err := decodeRaw(b, &r); err != nil {
			t.Fatal(err)
		}
		for _, a := range r.attrs {
			m[a.typ] = a.val
		}
	}
	return m
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	o := keyObject("d", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, o.Handle); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx, dk, o.Handle)
	wantClass(t, err, errclass.NotFound, nil)
	err = s.Delete(ctx, o.Handle)
	wantClass(t, err, errclass.NotFound, nil)
	err = s.Delete(ctx, math.MaxUint64)
	wantClass(t, err, errclass.NotFound, nil)
}

func TestListFilters(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	mk := func(class uint, private bool, label string) *Object {
		o := &Object{Class: class, Private: private, Attrs: map[uint32][]byte{ckaLabel: []byte(label)}}
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	pubCert := mk(ckoCert, false, "a")
	privKey := mk(ckoSecret, true, "a")
	privKey2 := mk(ckoSecret, true, "b")
	privPriv := mk(ckoPrivate, true, "a")
	noLabel := &Object{Class: ckoSecret, Private: true}
	if err := s.Create(ctx, dk, noLabel); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dk   *DataKey
		f    Filter
		want []*Object
	}{
		{"all with key", dk, Filter{}, []*Object{pubCert, privKey, privKey2, privPriv, noLabel}},
		{"all without key", nil, Filter{}, []*Object{pubCert}},
		{"class", dk, Filter{Classes: []uint{ckoSecret}}, []*Object{privKey, privKey2, noLabel}},
		{"two classes", dk, Filter{Classes: []uint{ckoCert, ckoPrivate}}, []*Object{pubCert, privPriv}},
		{"class and label", dk, Filter{Classes: []uint{ckoSecret}, Attrs: map[uint32][]byte{ckaLabel: []byte("a")}}, []*Object{privKey}},
		{"label", dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("a")}}, []*Object{pubCert, privKey, privPriv}},
		{"label without key", nil, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("a")}}, []*Object{pubCert}},
		{"no match", dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("zzz")}}, nil},
		{"unique id", dk, Filter{UniqueID: privKey2.UniqueID}, []*Object{privKey2}},
		{"unique id of private without key", nil, Filter{UniqueID: privKey2.UniqueID}, nil},
		{"huge class", dk, Filter{Classes: []uint{math.MaxUint64}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tt.dk, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d objects, want %d", len(got), len(tt.want))
			}
			if len(tt.f.Attrs) == 0 {
				if n, err := s.Count(ctx, tt.dk, tt.f); err != nil || n != len(tt.want) {
					t.Fatalf("Count = %d, %v; want %d", n, err, len(tt.want))
				}
			}
			for i := range got {
				if got[i].Handle != tt.want[i].Handle || string(got[i].Attrs[ckaLabel]) != string(tt.want[i].Attrs[ckaLabel]) {
					t.Fatalf("object %d = handle %d, want %d", i, got[i].Handle, tt.want[i].Handle)
				}
			}
		})
	}
}

func TestBatch(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	keep := keyObject("keep", true)
	if err := s.Create(ctx, dk, keep); err != nil {
		t.Fatal(err)
	}

	t.Run("error rolls back", func(t *testing.T) {
		g0, _ := s.Generation(ctx)
		boom := errors.New("boom")
		var created uint64
		err := s.Batch(ctx, dk, func(tx *Tx) error {
			o := keyObject("gone", true)
			if err := tx.Create(o); err != nil {
				return err
			}
			created = o.Handle
			if _, err := tx.Get(o.Handle); err != nil {
				return fmt.Errorf("own write not visible: %w", err)
			}
			if err := tx.Delete(keep.Handle); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Batch = %v, want the callback's error", err)
		}
		if _, err := s.Get(ctx, dk, created); errclass.Of(err) != errclass.NotFound {
			t.Fatalf("rolled-back create is visible: %v", err)
		}
		if _, err := s.Get(ctx, dk, keep.Handle); err != nil {
			t.Fatalf("rolled-back delete took effect: %v", err)
		}
		if g1, _ := s.Generation(ctx); g1 != g0 {
			t.Fatal("rolled-back batch moved the generation")
		}
	})

	t.Run("commit", func(t *testing.T) {
		g0, _ := s.Generation(ctx)
		var hs []uint64
		err := s.Batch(ctx, dk, func(tx *Tx) error {
			for i := range 50 {
				o := keyObject(fmt.Sprint("b", i), true)
				if err := tx.Create(o); err != nil {
					return err
				}
				hs = append(hs, o.Handle)
			}
			objs, err := tx.List(Filter{Classes: []uint{ckoSecret}})
			if err != nil {
				return err
			}
			for _, o := range objs {
				o.Attrs[ckaOpaque] = []byte("rewritten")
				if err := tx.Update(o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		objs, err := s.List(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaOpaque: []byte("rewritten")}})
		if err != nil || len(objs) != 51 {
			t.Fatalf("after batch: %d rewritten objects, %v; want 51", len(objs), err)
		}
		if g1, _ := s.Generation(ctx); g1 != g0+1 {
			t.Fatalf("generation %d -> %d, want +1 for one batch", g0, g1)
		}
	})

	t.Run("public only without key", func(t *testing.T) {
		err := s.Batch(ctx, nil, func(tx *Tx) error {
			if err := tx.Create(keyObject("pub", false)); err != nil {
				return err
			}
			return tx.Create(keyObject("priv", true))
		})
		wantClass(t, err, errclass.PermissionDenied, ErrLoginRequired)
		if objs, _ := s.List(ctx, nil, Filter{}); len(objs) != 0 {
			t.Fatal("failed batch left a public object")
		}
		err = s.Batch(ctx, nil, func(tx *Tx) error {
			_, err := tx.Get(keep.Handle)
			return err
		})
		wantClass(t, err, errclass.PermissionDenied, ErrLoginRequired)
	})
}

func TestGeneration(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	g := func() uint64 {
		t.Helper()
		v, err := s.Generation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	g0 := g()
	o := keyObject("g", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	g1 := g()
	if g1 <= g0 {
		t.Fatal("Create did not move the generation")
	}
	s.Get(ctx, dk, o.Handle)
	s.List(ctx, dk, Filter{})
	s.Info(ctx)
	if _, err := s.Login(ctx, User, userPIN); err != nil {
		t.Fatal(err)
	}
	if g() != g1 {
		t.Fatal("reads or a clean login moved the generation")
	}
	s.Login(ctx, User, []byte("wrong-wrong"))
	g2 := g()
	if g2 <= g1 {
		t.Fatal("a counted PIN failure did not move the generation")
	}
	o.Attrs[ckaLabel] = []byte("x")
	s.Update(ctx, dk, o)
	g3 := g()
	s.Delete(ctx, o.Handle)
	if g3 <= g2 || g() <= g3 {
		t.Fatal("Update/Delete did not move the generation")
	}
}

func TestDestroyedKey(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	o := keyObject("x", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	dk.Destroy()
	dk.Destroy() // idempotent
	_, err := s.Get(ctx, dk, o.Handle)
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	_, err = s.List(ctx, dk, Filter{})
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	err = s.Create(ctx, dk, keyObject("y", true))
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	var nilKey *DataKey
	nilKey.Destroy()
}

// TestKeyFromOtherToken uses a data key of one token on another.
func TestKeyFromOtherToken(t *testing.T) {
	ctx := context.Background()
	s1, _ := newToken(t)
	_, dk2 := newToken(t)
	err := s1.Create(ctx, dk2, keyObject("z", true))
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
}

func TestListPaging(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	var all []uint64
	for i := range 25 {
		o := keyObject(fmt.Sprint(i), i%2 == 0)
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		all = append(all, o.Handle)
	}
	var got []uint64
	var after uint64
	for pages := 0; ; pages++ {
		objs, err := s.List(ctx, dk, Filter{After: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(objs) > 10 || pages > 3 {
			t.Fatalf("page %d has %d objects", pages, len(objs))
		}
		if len(objs) == 0 {
			break
		}
		for _, o := range objs {
			got = append(got, o.Handle)
		}
		after = objs[len(objs)-1].Handle
	}
	if fmt.Sprint(got) != fmt.Sprint(all) {
		t.Fatalf("paged handles %v, want %v", got, all)
	}
	_, err := s.List(ctx, dk, Filter{Limit: -1})
	wantClass(t, err, errclass.InvalidArgument, nil)
	if objs, err := s.List(ctx, dk, Filter{After: math.MaxUint64}); err != nil || len(objs) != 0 {
		t.Fatalf("List after the last possible handle: %d, %v", len(objs), err)
	}
}
