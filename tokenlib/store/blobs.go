package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The blob table (schema 4).
//
// A master key change rewrites three attributes of every key object — the
// secure key blobs CKA_IBM_OPAQUE, CKA_IBM_OPAQUE_REENC and
// CKA_IBM_OPAQUE_OLD — and nothing else. Stored inside the object's
// attribute list they made every pass rewrite (and reseal) whole rows of a
// kilobyte and more. Since schema 4 they live in their own narrow table,
//
//	blob(handle, version, blobs, mk)
//
// with the object's version: blobs is an encoded attribute list (codec.go)
// holding just the blob attributes, sealed like the object's other
// attributes (each value bound to the token, the object's unique id and
// its type; the list by a set tag of its own kind, blobSetPrefix). An
// Update that changes only blob attributes rewrites this row alone; one
// that changes anything else rewrites both.
//
// The migration to schema 4 adds a blob row for every object with its
// version and a NULL blobs column: such a row is "legacy", its blob
// attributes are still inside object.attrs, sealed under setAADPrefix. The
// first Update of the object moves them out (it rewrites the whole row
// once, as every Update did before); readers take both layouts. So the
// migration itself is one SQL statement, however many objects the token
// has, and needs no data key; a crash leaves every row in one layout or
// the other. The attribute list of a split row is sealed under
// splitSetPrefix, so nulling the blobs column of a split private row
// (which would make its keys vanish) fails the set tag.

// Blob attribute types (IBM vendor attributes, tokenlib/ck).
const (
	typeOpaque      = 0x80000001 // CKA_IBM_OPAQUE
	typeOpaqueReenc = 0x80000003 // CKA_IBM_OPAQUE_REENC
	typeOpaqueOld   = 0x80000004 // CKA_IBM_OPAQUE_OLD
)

// BlobTypes are the attribute types kept in the blob table.
var BlobTypes = []uint32{typeOpaque, typeOpaqueReenc, typeOpaqueOld}

func isBlobType(t uint32) bool {
	return t == typeOpaque || t == typeOpaqueReenc || t == typeOpaqueOld
}

func notBlobType(t uint32) bool { return !isBlobType(t) }

// blobCols reads a row's version and blob list from the blob table (the
// object's own version column where a row has none, which the store never
// leaves behind).
const blobCols = "coalesce((SELECT b.version FROM blob b WHERE b.handle = object.handle), version), " +
	"(SELECT b.blobs FROM blob b WHERE b.handle = object.handle)"

// loadRaw decodes a stored row into r: its attribute list, and for a split
// row the blob list merged in (type order). For a private row with a data
// key each list's set tag is checked. legacy reports a row whose blob
// attributes are inside attrs; nbTypes the types of the attrs part.
func loadRaw(attrs, blobs []byte, private bool, dk *DataKey, uid string, class uint64, r *rawObject) (nbTypes []uint32, err error) {
	if err := decodeRaw(attrs, r); err != nil {
		return nil, err
	}
	if r.sealed != private {
		return nil, codecErr("object is private=%v but its attributes are sealed=%v", private, r.sealed)
	}
	if blobs == nil {
		if r.sealed && dk != nil {
			if err := dk.checkSet(setAADPrefix, uid, class, r); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	var rb rawObject
	if err := decodeRaw(blobs, &rb); err != nil {
		return nil, err
	}
	if rb.sealed != private {
		return nil, codecErr("object is private=%v but its blobs are sealed=%v", private, rb.sealed)
	}
	nbTypes = make([]uint32, len(r.attrs))
	for i, a := range r.attrs {
		if isBlobType(a.typ) {
			return nil, codecErr("blob attribute %#x in the attribute list of a split row", a.typ)
		}
		nbTypes[i] = a.typ
	}
	for _, a := range rb.attrs {
		if !isBlobType(a.typ) {
			return nil, codecErr("attribute %#x in the blob list", a.typ)
		}
	}
	if r.sealed && dk != nil {
		if err := dk.checkSet(splitSetPrefix, uid, class, r); err != nil {
			return nil, err
		}
		if err := dk.checkSet(blobSetPrefix, uid, class, &rb); err != nil {
			return nil, err
		}
	}
	if len(rb.attrs) > 0 {
		merged := make([]rawAttr, 0, len(r.attrs)+len(rb.attrs))
		merged = append(append(merged, r.attrs...), rb.attrs...)
		slices.SortFunc(merged, func(a, b rawAttr) int {
			switch {
			case a.typ < b.typ:
				return -1
			case a.typ > b.typ:
				return 1
			}
			return 0
		})
		r.attrs = merged
	}
	return nbTypes, nil
}

// encodePart encodes the attribute list (blobPart false) or the blob list
// (true) of o in the split layout, and returns the raw list as written.
func encodePart(o *Object, dk *DataKey, blobPart bool) ([]byte, *rawObject) {
	keep := o.keep
	if !o.partial {
		keep = nil
	}
	pick, prefix := notBlobType, splitSetPrefix
	if blobPart {
		pick, prefix = isBlobType, blobSetPrefix
	}
	if !o.Private {
		ts := mergedTypes(o.Attrs, keep, pick)
		r := rawObject{attrs: make([]rawAttr, 0, len(ts))}
		for _, t := range ts {
			v, ok := o.Attrs[t]
			if !ok {
				v, _ = findRaw(keep, t)
			}
			r.attrs = append(r.attrs, rawAttr{typ: t, val: v})
		}
		return encodeRaw(nil, &r), &r
	}
	r := dk.seal(prefix, o.UniqueID, uint64(o.Class), o.Attrs, o.sealed, keep, pick)
	return encodeRaw(nil, r), r
}

// attrsUnchanged reports whether an Update of o may leave its attribute
// list (the wide row) as stored and rewrite only its blob row: o was read
// from a split row and nothing but blob attributes changed since.
func (o *Object) attrsUnchanged() bool {
	if !o.fromStore || o.legacy || o.Class != o.readClass || o.Private != o.readPrivate {
		return false
	}
	if !o.Private {
		enc, _ := encodePart(o, nil, false)
		return bytes.Equal(enc, o.stored)
	}
	keep := o.keep
	if !o.partial {
		keep = nil
	}
	if !slices.Equal(mergedTypes(o.Attrs, keep, notBlobType), o.nbTypes) {
		return false
	}
	for t, v := range o.Attrs {
		if isBlobType(t) {
			continue
		}
		sv, ok := o.sealed[t]
		if !ok || string(sv.plain) != string(v) {
			return false
		}
	}
	return true
}

// remember records what a read or write stored for o, for attrsUnchanged.
func (o *Object) remember(legacy bool, attrsPart []byte, nbTypes []uint32) {
	o.fromStore, o.legacy = true, legacy
	o.readClass, o.readPrivate = o.Class, o.Private
	o.stored, o.nbTypes = nil, nil
	if legacy {
		return
	}
	if o.Private {
		o.nbTypes = nbTypes
	} else {
		o.stored = bytes.Clone(attrsPart)
	}
}

// ListBlobs is [Store.List] for a master key change pass: of each match it
// reads the narrow blob row alone (with the object's handle, unique id,
// class and private flag), never the wide attribute list. The returned
// objects hold just their blob attributes (CKA_IBM_OPAQUE, _REENC, _OLD);
// an [Tx.Update] of one writes the blob row alone and refuses any change
// to another attribute, the class or the private flag.
//
// Authentication stays whole for what the pass uses: the blob list of a
// private object is sealed value by value (each bound to the token, the
// object's unique id and the attribute type) and as a set (bound to the
// unique id, the class and the types), so a blob list moved to another
// object, a changed class or a dropped blob fails here exactly as in
// List. The attribute list, which the pass neither reads nor writes, is
// authenticated on its next read as before: an Update through ListBlobs
// never rewrites it, so it cannot launder a damaged one. The version is
// the blob row's, so the optimistic check is the same as for any Update.
//
// A legacy row (its blob attributes still inside the attribute list,
// blobs.go) is read in full instead, after the page: its Update moves the
// blobs out, once. f must not filter on attributes (f.Attrs) nor set
// f.Only.
func (s *Store) ListBlobs(ctx context.Context, dk *DataKey, f Filter) ([]*Object, error) {
	if len(f.Attrs) > 0 || len(f.Only) > 0 {
		return nil, errclass.New(errclass.InvalidArgument, "list blobs: the filter may not name attributes (Attrs, Only)")
	}
	if err := s.usable(dk); err != nil {
		return nil, err
	}
	qr, err := s.buildQuery(dk, f, "handle, unique_id, class, private, version")
	if err != nil || qr.none {
		return nil, err
	}
	// The object rows the filter selects, in handle order, each joined
	// with its blob row by handle (one lookup; the object's attribute
	// list is not read). A missing blob row, which the store never leaves
	// behind, reads as a legacy row.
	qr.text = `SELECT o.handle, o.unique_id, o.class, o.private, coalesce(b.version, o.version), b.blobs FROM (` +
		qr.text + `) o LEFT JOIN blob b ON b.handle = o.handle ORDER BY o.handle`
	if f.Limit > 0 {
		qr.text += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	q := s.reader()
	rows, err := q.QueryContext(ctx, qr.text, qr.args...)
	if err != nil {
		return nil, classifyDB(fmt.Errorf("list blobs: %w", err))
	}
	defer rows.Close()
	var (
		out    []*Object
		legacy []int // indexes into out of rows read in full below
		bad    []uint64
		opened bool // a sealed value did not open: stale key or tampering
		r      rawObject
		aad    []byte
		handle int64
		uid    string
		class  int64
		priv   int
		ver    int64
		blobs  sql.RawBytes
	)
	for rows.Next() {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if err := rows.Scan(&handle, &uid, &class, &priv, &ver, &blobs); err != nil {
			return nil, classifyDB(fmt.Errorf("list blobs: %w", err))
		}
		o := &Object{Handle: uint64(handle), UniqueID: uid, Class: uint(class), Private: priv != 0, Version: uint64(ver)}
		if blobs == nil {
			legacy = append(legacy, len(out))
			out = append(out, o)
			continue
		}
		var err error
		aad, err = o.loadBlobs(bytes.Clone(blobs), dk, &r, aad)
		if err != nil {
			opened = opened || errors.Is(err, errOpen)
			bad = append(bad, o.Handle)
			continue
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, classifyDB(fmt.Errorf("list blobs: %w", err))
	}
	rows.Close()
	// The rows are closed: another query may run now (see scan).
	if len(legacy) > 0 {
		kept := out[:0]
		at := 0
		for i, o := range out {
			if at < len(legacy) && legacy[at] == i {
				at++
				full, err := s.get(ctx, q, dk, o.Handle)
				switch {
				case errclass.Of(err) == errclass.NotFound:
					continue // deleted meanwhile
				case err != nil:
					return nil, fmt.Errorf("list blobs: %w", err)
				}
				o = full
			}
			kept = append(kept, o)
		}
		out = kept
	}
	if opened {
		if err := s.checkKey(ctx, q, dk); err != nil {
			return nil, fmt.Errorf("list blobs: %w", err)
		}
	}
	if len(bad) > 0 {
		return out, s.unreadable("list blobs", bad)
	}
	return out, nil
}

// loadBlobs decodes a split row's blob list b (a private copy: the sealed
// values alias it) into o, which becomes a blobs-only object (see
// ListBlobs). aad is a scratch buffer, returned for reuse.
func (o *Object) loadBlobs(b []byte, dk *DataKey, r *rawObject, aad []byte) ([]byte, error) {
	if err := decodeRaw(b, r); err != nil {
		return aad, err
	}
	if r.sealed != o.Private {
		return aad, codecErr("object is private=%v but its blobs are sealed=%v", o.Private, r.sealed)
	}
	o.Attrs = make(map[uint32][]byte, len(r.attrs))
	var plain []byte
	if r.sealed {
		if err := dk.checkSet(blobSetPrefix, o.UniqueID, uint64(o.Class), r); err != nil {
			return aad, err
		}
		o.sealed = make(map[uint32]sealedValue, len(r.attrs))
		// One buffer for every opened value and its private copy (which
		// Update compares against to reuse the sealed form).
		size := 0
		for _, a := range r.attrs {
			size += 2 * (len(a.val) - sealOverhead)
		}
		plain = make([]byte, 0, size)
	}
	for _, a := range r.attrs {
		if !isBlobType(a.typ) {
			return aad, codecErr("attribute %#x in the blob list", a.typ)
		}
		if !r.sealed {
			o.Attrs[a.typ] = a.val
			continue
		}
		aad = attrAAD(aad[:0], dk.tokenID[:], o.UniqueID, a.typ)
		start := len(plain)
		var err error
		plain, err = dk.aead.Open(plain, a.val[:gcmNonceLen], a.val[gcmNonceLen:], aad)
		if err != nil {
			return aad, fmt.Errorf("%w (attribute %#x)", errOpen, a.typ)
		}
		v := plain[start:len(plain):len(plain)]
		plain = append(plain, v...)
		o.Attrs[a.typ] = v
		o.sealed[a.typ] = sealedValue{plain: plain[start+len(v) : len(plain) : len(plain)], sealed: a.val}
	}
	o.blobsOnly, o.partial, o.only = true, true, BlobTypes
	o.fromStore, o.readClass, o.readPrivate = true, o.Class, o.Private
	return aad, nil
}

// checkBlobsOnly refuses an Update of a blobs-only object (ListBlobs)
// that changed more than its blob attributes: its attribute list was
// never read, so it cannot be written.
func (o *Object) checkBlobsOnly() error {
	if o.Class != o.readClass || o.Private != o.readPrivate {
		return errclass.Newh(errclass.InvalidArgument, "read the object with List or Get to change its class or private flag",
			"update object %d: it was read with ListBlobs (blob attributes only)", o.Handle)
	}
	for t := range o.Attrs {
		if !isBlobType(t) {
			return errclass.Newh(errclass.InvalidArgument, "read the object with List or Get to change other attributes",
				"update object %d: attribute %#x set on an object read with ListBlobs (blob attributes only)", o.Handle, t)
		}
	}
	return nil
}
