package store

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// encodeLegacy encodes o the way releases before schema 4 did: every
// attribute, blobs included, in one list sealed under setAADPrefix.
func encodeLegacy(o *Object, dk *DataKey) []byte {
	if !o.Private {
		ts := mergedTypes(o.Attrs, nil, nil)
		r := rawObject{}
		for _, t := range ts {
			r.attrs = append(r.attrs, rawAttr{typ: t, val: o.Attrs[t]})
		}
		return encodeRaw(nil, &r)
	}
	return encodeRaw(nil, dk.seal(setAADPrefix, o.UniqueID, uint64(o.Class), o.Attrs, nil, nil, nil))
}

// storedRow returns object h's attribute list and blob list as stored
// (blobs nil for a legacy row) and the blob row's version.
func storedRow(t testing.TB, s *Store, h uint64) (attrs, blobs []byte, version int64) {
	t.Helper()
	err := s.rdb.QueryRow(`SELECT o.attrs, b.blobs, b.version FROM object o JOIN blob b ON b.handle = o.handle WHERE o.handle = ?`, h).
		Scan(&attrs, &blobs, &version)
	if err != nil {
		t.Fatal(err)
	}
	return attrs, blobs, version
}

func listTypes(t testing.TB, b []byte) []uint32 {
	t.Helper()
	var r rawObject
	if err := decodeRaw(b, &r); err != nil {
		t.Fatal(err)
	}
	var ts []uint32
	for _, a := range r.attrs {
		ts = append(ts, a.typ)
	}
	return ts
}

// TestBlobOnlyUpdateLeavesTheRow: an Update that changes only blob
// attributes rewrites the narrow blob row and leaves the object's
// attribute list byte for byte; a change of anything else rewrites it.
// Both are seen by a second handle (another process) with their versions.
func TestBlobOnlyUpdateLeavesTheRow(t *testing.T) {
	ctx := context.Background()
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprint("private=", private), func(t *testing.T) {
			dir := t.TempDir()
			s, dk := newTokenIn(t, dir, testOptions(t))
			other := openTest(t, dir)
			o := keyObject("k", private)
			if err := s.Create(ctx, dk, o); err != nil {
				t.Fatal(err)
			}
			attrs0, blobs0, v0 := storedRow(t, s, o.Handle)
			if slices.Contains(listTypes(t, attrs0), ckaOpaque) || !slices.Equal(listTypes(t, blobs0), []uint32{ckaOpaque}) {
				t.Fatalf("new object: attribute list %x, blob list %x: want the blob in the blob list only", listTypes(t, attrs0), listTypes(t, blobs0))
			}
			// A pass-style read (Only) and a blob-only change.
			objs, err := s.List(ctx, dk, Filter{Only: append([]uint32{ckaLabel}, BlobTypes...)})
			if err != nil || len(objs) != 1 {
				t.Fatal(objs, err)
			}
			p := objs[0]
			p.Attrs[typeOpaqueReenc] = []byte("reenc blob")
			if err := s.Update(ctx, dk, p); err != nil {
				t.Fatal(err)
			}
			attrs1, blobs1, v1 := storedRow(t, s, o.Handle)
			if !bytes.Equal(attrs1, attrs0) {
				t.Fatal("a blob-only update rewrote the object's attribute list")
			}
			if bytes.Equal(blobs1, blobs0) || v1 != v0+1 || p.Version != uint64(v1) {
				t.Fatalf("blob row: changed %v, version %d -> %d (object says %d)", !bytes.Equal(blobs1, blobs0), v0, v1, p.Version)
			}
			if v, err := other.Version(ctx, o.Handle); err != nil || v != uint64(v1) {
				t.Fatalf("other handle: version %d, %v; want %d", v, err, v1)
			}
			got, err := other.Get(ctx, dk, o.Handle)
			if err != nil || string(got.Attrs[typeOpaqueReenc]) != "reenc blob" || string(got.Attrs[ckaLabel]) != "k" ||
				!bytes.Equal(got.Attrs[ckaOpaque], o.Attrs[ckaOpaque]) {
				t.Fatalf("other handle reads %v, %v", got, err)
			}
			// The stale copy (version v0) conflicts and changes nothing.
			o.Attrs[ckaOpaque] = []byte("lost")
			if err := s.Update(ctx, dk, o); errclass.Of(err) != errclass.Conflict {
				t.Fatalf("stale update: %v, want a conflict", err)
			}
			if a, b, v := storedRow(t, s, o.Handle); !bytes.Equal(a, attrs1) || !bytes.Equal(b, blobs1) || v != v1 {
				t.Fatal("a conflicting update changed the stored rows")
			}
			// A full object, a label change: the attribute list is rewritten.
			got.Attrs[ckaLabel] = []byte("renamed")
			delete(got.Attrs, typeOpaqueReenc)
			if err := other.Update(ctx, dk, got); err != nil {
				t.Fatal(err)
			}
			attrs2, blobs2, v2 := storedRow(t, s, o.Handle)
			if bytes.Equal(attrs2, attrs1) || v2 != v1+1 || !slices.Equal(listTypes(t, blobs2), []uint32{ckaOpaque}) {
				t.Fatalf("label change: list rewritten %v, version %d, blobs %x", !bytes.Equal(attrs2, attrs1), v2, listTypes(t, blobs2))
			}
			again, err := s.Get(ctx, dk, o.Handle)
			if err != nil || string(again.Attrs[ckaLabel]) != "renamed" || again.Attrs[typeOpaqueReenc] != nil {
				t.Fatalf("after the label change: %v %v", again, err)
			}
			// A deleted object: a blob-only update is NotFound, and its blob
			// row is gone with it.
			if err := s.Delete(ctx, o.Handle); err != nil {
				t.Fatal(err)
			}
			again.Attrs[ckaOpaque] = []byte("x")
			if err := s.Update(ctx, dk, again); errclass.Of(err) != errclass.NotFound {
				t.Fatalf("update of a deleted object: %v", err)
			}
			var n int
			if err := s.rdb.QueryRow(`SELECT count(*) FROM blob WHERE handle = ?`, o.Handle).Scan(&n); err != nil || n != 0 {
				t.Fatalf("blob rows of a deleted object: %d %v", n, err)
			}
		})
	}
}

// legacyToken makes a token the way a schema-2 release left it — n key
// objects (every third public) with their blobs inside the attribute list —
// and reopens it with the current schema. It returns the store, the data
// key and the objects as written.
func legacyToken(t testing.TB, n int) (*Store, *DataKey, []*Object) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	full := migrations
	migrations = full[:2:2]
	s, dk := newTokenIn(t, dir, testOptions(t))
	var objs []*Object
	err := s.Batch(ctx, dk, func(tx *Tx) error {
		for i := range n {
			o := keyObject(fmt.Sprint("key", i), i%3 != 0)
			o.Attrs[typeOpaqueOld] = []byte(fmt.Sprint("old", i))
			o.UniqueID = newUniqueID()
			res, err := tx.tx.ExecContext(ctx, `INSERT INTO object (unique_id, class, private, version, attrs) VALUES (?, ?, ?, 7, ?)`,
				o.UniqueID, int64(o.Class), boolInt(o.Private), encodeLegacy(o, dk))
			if err != nil {
				return err
			}
			id, _ := res.LastInsertId()
			o.Handle, o.Version = uint64(id), 7
			objs = append(objs, o)
		}
		return nil
	})
	migrations = full
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openTest(t, dir)
	dk2, err := s2.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	return s2, dk2, objs
}

// migrateAndPass checks a legacy token after the migration and runs a
// pass over it the way a master key change does (pages read with
// ListBlobs, which reads a legacy row in full,
// the blobs changed, Update): every object is readable before, moves to
// the split layout at its first update, keeps every other attribute, and
// is rewritten narrowly at the second.
func migrateAndPass(t testing.TB, s *Store, dk *DataKey, objs []*Object) {
	ctx := context.Background()
	var legacy int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM blob WHERE blobs IS NULL AND version = 7`).Scan(&legacy); err != nil || legacy != len(objs) {
		t.Fatalf("%d legacy blob rows with their versions after the migration, want %d (%v)", legacy, len(objs), err)
	}
	pass := func(round int) {
		var after uint64
		for {
			page, err := s.ListBlobs(ctx, dk, Filter{After: after, Limit: 2000})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				return
			}
			err = s.Batch(ctx, dk, func(tx *Tx) error {
				for _, o := range page {
					o.Attrs[typeOpaqueReenc] = []byte(fmt.Sprint("reenc", round, o.Handle))
					if err := tx.Update(o); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			after = page[len(page)-1].Handle
		}
	}
	pass(1)
	attrsAfter1 := map[uint64][]byte{}
	for i, o := range objs {
		attrs, blobs, v := storedRow(t, s, o.Handle)
		if slices.ContainsFunc(listTypes(t, attrs), isBlobType) || len(listTypes(t, blobs)) != 3 || v != 8 {
			t.Fatalf("object %d after the first pass: list %x, blobs %x, version %d", o.Handle, listTypes(t, attrs), listTypes(t, blobs), v)
		}
		if i < 50 || i%997 == 0 {
			attrsAfter1[o.Handle] = attrs
		}
	}
	pass(2)
	for h, before := range attrsAfter1 {
		if attrs, _, v := storedRow(t, s, h); !bytes.Equal(attrs, before) || v != 9 {
			t.Fatalf("object %d: the second pass rewrote its attribute list (version %d)", h, v)
		}
	}
	for i, o := range objs {
		if i >= 50 && i%997 != 0 {
			continue
		}
		got, err := s.Get(ctx, dk, o.Handle)
		if err != nil {
			t.Fatal(err)
		}
		want := maps.Clone(o.Attrs)
		want[typeOpaqueReenc] = []byte(fmt.Sprint("reenc", 2, o.Handle))
		if len(got.Attrs) != len(want) {
			t.Fatalf("object %d: %d attributes, want %d", o.Handle, len(got.Attrs), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got.Attrs[k], v) {
				t.Fatalf("object %d: attribute %#x = %q, want %q", o.Handle, k, got.Attrs[k], v)
			}
		}
	}
}

// TestMigrationToBlobTable: a token written before the blob table opens,
// reads, passes twice (split at the first, narrow at the second) and keeps
// every attribute. BenchmarkBlobMigration100k runs the same on 100,000
// keys.
func TestMigrationToBlobTable(t *testing.T) {
	s, dk, objs := legacyToken(t, 120)
	migrateAndPass(t, s, dk, objs)
}

// BenchmarkBlobMigration100k: the migration and two passes over a legacy
// token of 100,000 keys (PKCSHSM_BLOB_MIGRATION_KEYS overrides the count).
func BenchmarkBlobMigration100k(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("PKCSHSM_BLOB_MIGRATION_KEYS")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		s, dk, objs := legacyToken(b, n)
		migrateAndPass(b, s, dk, objs)
	}
}
