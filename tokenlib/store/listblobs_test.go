package store

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// TestListBlobs: ListBlobs returns each object's blob attributes and
// nothing else, with the blob row's version; an Update of such an object
// rewrites the blob row alone (the attribute list stays byte for byte, the
// other attributes read back intact through another handle) and refuses
// to change anything the blob row does not hold, changing nothing.
func TestListBlobs(t *testing.T) {
	ctx := context.Background()
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprint("private=", private), func(t *testing.T) {
			dir := t.TempDir()
			s, dk := newTokenIn(t, dir, testOptions(t))
			other := openTest(t, dir)
			var made []*Object
			for i := range 5 {
				o := keyObject(fmt.Sprint("k", i), private)
				o.Attrs[typeOpaqueOld] = []byte(fmt.Sprint("old", i))
				if err := s.Create(ctx, dk, o); err != nil {
					t.Fatal(err)
				}
				made = append(made, o)
			}
			objs, err := s.ListBlobs(ctx, dk, Filter{After: made[0].Handle, Limit: 3})
			if err != nil || len(objs) != 3 {
				t.Fatalf("page: %d objects, %v", len(objs), err)
			}
			for i, o := range objs {
				want := made[i+1]
				if o.Handle != want.Handle || o.UniqueID != want.UniqueID || o.Version != 1 || o.Private != private {
					t.Fatalf("object %d: %+v", i, o)
				}
				if !slices.Equal(slices.Sorted(maps.Keys(o.Attrs)), []uint32{ckaOpaque, typeOpaqueOld}) ||
					!bytes.Equal(o.Attrs[ckaOpaque], want.Attrs[ckaOpaque]) || string(o.Attrs[typeOpaqueOld]) != fmt.Sprint("old", i+1) {
					t.Fatalf("object %d: attributes %v, want its two blobs", o.Handle, o.Attrs)
				}
			}
			p := objs[0]
			attrs0, blobs0, _ := storedRow(t, s, p.Handle)
			// Refused: anything but a blob attribute, the class, the
			// private flag. Nothing changes.
			for name, change := range map[string]func(o *Object){
				"label":   func(o *Object) { o.Attrs[ckaLabel] = []byte("x") },
				"class":   func(o *Object) { o.Class++ },
				"private": func(o *Object) { o.Private = !o.Private },
			} {
				q, err := s.ListBlobs(ctx, dk, Filter{UniqueID: p.UniqueID})
				if err != nil || len(q) != 1 {
					t.Fatal(q, err)
				}
				change(q[0])
				q[0].Attrs[typeOpaqueReenc] = []byte("new")
				if err := s.Update(ctx, dk, q[0]); errclass.Of(err) != errclass.InvalidArgument || !strings.Contains(err.Error(), "ListBlobs") {
					t.Fatalf("%s change: %v, want an invalid argument naming ListBlobs", name, err)
				}
				if a, b, v := storedRow(t, s, p.Handle); !bytes.Equal(a, attrs0) || !bytes.Equal(b, blobs0) || v != 1 {
					t.Fatalf("%s change: the refused update changed the stored rows", name)
				}
			}
			p.Attrs[typeOpaqueReenc] = []byte("reenc")
			delete(p.Attrs, typeOpaqueOld)
			if err := s.Update(ctx, dk, p); err != nil {
				t.Fatal(err)
			}
			attrs1, blobs1, v1 := storedRow(t, s, p.Handle)
			if !bytes.Equal(attrs1, attrs0) || bytes.Equal(blobs1, blobs0) || v1 != 2 || p.Version != 2 {
				t.Fatalf("blob update: attribute list rewritten %v, blobs rewritten %v, version %d/%d",
					!bytes.Equal(attrs1, attrs0), !bytes.Equal(blobs1, blobs0), v1, p.Version)
			}
			got, err := other.Get(ctx, dk, p.Handle)
			if err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(made[1].Attrs)
			want[typeOpaqueReenc] = []byte("reenc")
			delete(want, typeOpaqueOld)
			if !maps.EqualFunc(got.Attrs, want, bytes.Equal) {
				t.Fatalf("read back %v, want %v", got.Attrs, want)
			}
			// The object read again updates again (its sealed blobs
			// reused where unchanged); the stale copy conflicts.
			stale := objs[1]
			fresh, err := other.ListBlobs(ctx, dk, Filter{After: stale.Handle - 1, Limit: 1})
			if err != nil || len(fresh) != 1 {
				t.Fatal(fresh, err)
			}
			fresh[0].Attrs[typeOpaqueReenc] = []byte("first")
			if err := other.Update(ctx, dk, fresh[0]); err != nil {
				t.Fatal(err)
			}
			stale.Attrs[typeOpaqueReenc] = []byte("second")
			if err := s.Update(ctx, dk, stale); errclass.Of(err) != errclass.Conflict {
				t.Fatalf("stale update: %v, want a conflict", err)
			}
			if g, err := s.Get(ctx, dk, stale.Handle); err != nil || string(g.Attrs[typeOpaqueReenc]) != "first" || string(g.Attrs[ckaLabel]) != "k2" {
				t.Fatalf("after the conflict: %v %v", g.Attrs, err)
			}
			// Without a data key: private objects are not listed, and an
			// attribute filter is refused.
			if pub, err := s.ListBlobs(ctx, nil, Filter{}); err != nil || (private && len(pub) != 0) || (!private && len(pub) != 5) {
				t.Fatalf("without a data key: %d objects, %v", len(pub), err)
			}
			if _, err := s.ListBlobs(ctx, dk, Filter{Only: BlobTypes}); errclass.Of(err) != errclass.InvalidArgument {
				t.Fatalf("ListBlobs with Only: %v", err)
			}
		})
	}
}

// TestListBlobsAuthenticates: the blob list read alone is still bound to
// its object: swapped between two objects, or read under another class,
// it is data loss naming the objects; a damaged attribute list, which
// ListBlobs does not read, is not laundered by its Update (Get still
// refuses the object afterwards).
func TestListBlobsAuthenticates(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	var hs []uint64
	for i := range 4 {
		o := keyObject(fmt.Sprint("k", i), true)
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, o.Handle)
	}
	_, b0, _ := storedRow(t, s, hs[0])
	_, b1, _ := storedRow(t, s, hs[1])
	execSQL(t, s, `UPDATE blob SET blobs = ? WHERE handle = ?`, b1, hs[0])
	execSQL(t, s, `UPDATE blob SET blobs = ? WHERE handle = ?`, b0, hs[1])
	execSQL(t, s, `UPDATE object SET class = class + 1 WHERE handle = ?`, hs[2])
	objs, err := s.ListBlobs(ctx, dk, Filter{})
	if errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), fmt.Sprint([]uint64{hs[0], hs[1], hs[2]})) {
		t.Fatalf("swapped blob lists and a changed class: %v, want data loss naming %v", err, hs[:3])
	}
	if len(objs) != 1 || objs[0].Handle != hs[3] {
		t.Fatalf("the readable objects: %v", objs)
	}
	// Damage the attribute list of the last object: ListBlobs reads and
	// updates its blobs, Get still finds the damage.
	attrs, _, _ := storedRow(t, s, hs[3])
	attrs = bytes.Clone(attrs)
	attrs[len(attrs)-1] ^= 1 // the set tag
	execSQL(t, s, `UPDATE object SET attrs = ? WHERE handle = ?`, attrs, hs[3])
	objs[0].Attrs[typeOpaqueReenc] = []byte("reenc")
	if err := s.Update(ctx, dk, objs[0]); err != nil {
		t.Fatal(err)
	}
	if a, _, _ := storedRow(t, s, hs[3]); !bytes.Equal(a, attrs) {
		t.Fatal("the blob update rewrote the damaged attribute list")
	}
	if _, err := s.Get(ctx, dk, hs[3]); errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("Get of the damaged object after the blob update: %v, want data loss", err)
	}
}
