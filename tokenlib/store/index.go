package store

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// Search index.
//
// A token may hold a million objects; an application that looks one up
// by label must not decode (and, for private objects, unseal) all of them.
// The attributes that searches name most often besides the class — the
// label and the id — have an indexed column each. The column holds a
// digest, not the value: private objects' attributes are sealed, and an
// index of clear labels would undo that. The digest is HMAC-SHA256 over
// the attribute type and value, truncated to 16 bytes, keyed
//
//   - for public objects with a key derived from the token id (public
//     data, like the attributes it indexes), so a search without a login
//     can use it;
//   - for private objects with a key derived from the token data key, so
//     that without a login the column says nothing about a private label
//     beyond which objects share one.
//
// A digest only selects candidates: every candidate's attributes are
// still compared with the filter after decoding, so a collision can only
// cost time. An object without the attribute gets an empty blob (no
// digest is empty), so it never matches a search for any value. NULL
// means "not indexed yet" (objects written before schema 2): those rows
// are always candidates, so a search is complete before [Store.Reindex]
// has run, only slower.

const (
	attrLabel = 0x003 // CKA_LABEL
	attrID    = 0x102 // CKA_ID

	ixLen = 16

	ixPublicPrefix  = "pkcshsm/store/index/public/v1\x00"
	ixPrivatePrefix = "pkcshsm/store/index/private/v1\x00"
)

// indexedAttrs are the attribute types with an index column, in the order
// a search prefers them, with their column names.
var indexedAttrs = []struct {
	typ uint32
	col string
}{
	{attrLabel, "label_ix"},
	{attrID, "id_ix"},
}

// ixKey keys the digests of one kind of object.
type ixKey []byte

// publicIxKey derives the digest key of public objects from the token id.
func publicIxKey(tokenID []byte) ixKey {
	m := hmac.New(sha256.New, []byte(ixPublicPrefix))
	m.Write(tokenID)
	return m.Sum(nil)
}

// privateIxKey derives the digest key of private objects from the data key.
func privateIxKey(dataKey []byte) ixKey {
	m := hmac.New(sha256.New, dataKey)
	m.Write([]byte(ixPrivatePrefix))
	return m.Sum(nil)
}

// digest returns the index value of attribute t with value v.
func (k ixKey) digest(t uint32, v []byte) []byte {
	m := hmac.New(sha256.New, k)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], t)
	m.Write(b[:])
	m.Write(v)
	return m.Sum(nil)[:ixLen]
}

// column returns the index value of attribute t of an object with attrs:
// its digest, or an empty blob when the object has no such attribute.
func (k ixKey) column(t uint32, attrs map[uint32][]byte) []byte {
	v, ok := attrs[t]
	if !ok {
		return []byte{}
	}
	return k.digest(t, v)
}

// ixKeyFor returns the digest key for an object (private needs dk).
func (s *Store) ixKeyFor(private bool, dk *DataKey) ixKey {
	if private {
		return dk.ix
	}
	return s.pubIx
}
