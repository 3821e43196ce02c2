package store

import (
	"bytes"
	"slices"
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
