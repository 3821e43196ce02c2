package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Stored attribute list ("attrs" column), encoding version 1:
//
//	byte    version (1)
//	byte    kind: 0 clear (public object), 1 sealed (private object)
//	uvarint n, the number of attributes
//	n times, in strictly increasing type order:
//	    uvarint type (fits uint32)
//	    uvarint length
//	    length bytes: the value (clear), or nonce(12) || ciphertext || tag(16)
//	sealed only: set tag, nonce(12) || tag(16)
//
// A sealed value is AES-256-GCM under the token data key with associated
// data attrAAD(token id, object unique id, attribute type): a value moved to
// another object, another attribute or another token fails to open. The set
// tag is a GCM seal of nothing with associated data setAAD(token id, unique
// id, class, list of types): it fails if an attribute is removed, added or
// the class is changed. Rolling a whole object back to an older sealed
// version of itself is not detectable (there is no trusted counter).
const (
	encVersion1 = 1
	kindClear   = 0
	kindSealed  = 1

	// MaxAttrs bounds the attributes per object; MaxValueLen one value;
	// maxBlob the encoded list. Decoding refuses anything larger, so a
	// corrupt length cannot make us allocate without bound.
	MaxAttrs    = 1024
	MaxValueLen = 1 << 20
	maxBlob     = 32 << 20

	sealOverhead = gcmNonceLen + gcmTagLen
)

type rawAttr struct {
	typ uint32
	val []byte
}

// rawObject is a decoded, still sealed attribute list; values alias the
// input of decodeRaw.
type rawObject struct {
	sealed bool
	attrs  []rawAttr
	setTag []byte
}

var errCodec = errors.New("malformed attribute encoding")

func codecErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCodec}, args...)...)
}

// encodeRaw appends the encoding of r to dst.
func encodeRaw(dst []byte, r *rawObject) []byte {
	size := 2 + binary.MaxVarintLen64 + len(r.setTag)
	for _, a := range r.attrs {
		size += 2*binary.MaxVarintLen32 + len(a.val)
	}
	dst = slices.Grow(dst, size)
	kind := byte(kindClear)
	if r.sealed {
		kind = kindSealed
	}
	dst = append(dst, encVersion1, kind)
	dst = binary.AppendUvarint(dst, uint64(len(r.attrs)))
	for _, a := range r.attrs {
		dst = binary.AppendUvarint(dst, uint64(a.typ))
		dst = binary.AppendUvarint(dst, uint64(len(a.val)))
		dst = append(dst, a.val...)
	}
	if r.sealed {
		dst = append(dst, r.setTag...)
	}
	return dst
}

// decodeRaw parses b into r (r.attrs is reused). It is the parser of
// untrusted stored bytes: it checks every length against what is left,
// requires strictly increasing types, and refuses trailing bytes.
func decodeRaw(b []byte, r *rawObject) error {
	if len(b) > maxBlob {
		return codecErr("%d bytes, more than %d", len(b), maxBlob)
	}
	if len(b) < 3 {
		return codecErr("%d bytes is too short", len(b))
	}
	if b[0] != encVersion1 {
		return codecErr("unknown encoding version %d", b[0])
	}
	switch b[1] {
	case kindClear:
		r.sealed = false
	case kindSealed:
		r.sealed = true
	default:
		return codecErr("unknown kind %d", b[1])
	}
	b = b[2:]
	n, k := uvarint(b)
	if k <= 0 {
		return codecErr("bad attribute count")
	}
	b = b[k:]
	// Each attribute needs at least two bytes, which bounds n by the input.
	if n > MaxAttrs || n > uint64(len(b))/2 {
		return codecErr("attribute count %d does not fit", n)
	}
	r.attrs = slices.Grow(r.attrs[:0], int(n))
	for i := uint64(0); i < n; i++ {
		t, k := uvarint(b)
		if k <= 0 || t > 0xffffffff {
			return codecErr("bad type of attribute %d", i)
		}
		b = b[k:]
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return codecErr("bad length of attribute %d (type %#x)", i, t)
		}
		b = b[k:]
		if i > 0 && uint32(t) <= r.attrs[i-1].typ {
			return codecErr("attribute types not strictly increasing at %d (type %#x)", i, t)
		}
		if r.sealed && l < sealOverhead {
			return codecErr("sealed attribute %#x has %d bytes, less than %d", t, l, sealOverhead)
		}
		r.attrs = append(r.attrs, rawAttr{typ: uint32(t), val: b[:l:l]})
		b = b[l:]
	}
	if r.sealed {
		if len(b) < sealOverhead {
			return codecErr("missing set tag")
		}
		r.setTag, b = b[:sealOverhead:sealOverhead], b[sealOverhead:]
	} else {
		r.setTag = nil
	}
	if len(b) != 0 {
		return codecErr("%d trailing bytes", len(b))
	}
	return nil
}

// uvarint is binary.Uvarint restricted to the shortest encoding, so that
// every accepted input has exactly one encoding (decode then encode gives
// the same bytes back).
func uvarint(b []byte) (uint64, int) {
	v, k := binary.Uvarint(b)
	if k > 1 && b[k-1] == 0 {
		return 0, -1 // a trailing zero group is an overlong encoding
	}
	return v, k
}

// find returns the raw value of type t, using the sort order.
func (r *rawObject) find(t uint32) ([]byte, bool) {
	i, ok := slices.BinarySearchFunc(r.attrs, t, func(a rawAttr, t uint32) int {
		switch {
		case a.typ < t:
			return -1
		case a.typ > t:
			return 1
		}
		return 0
	})
	if !ok {
		return nil, false
	}
	return r.attrs[i].val, true
}

func sortedTypes(attrs map[uint32][]byte) []uint32 {
	ts := make([]uint32, 0, len(attrs))
	for t := range attrs {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// mergedTypes returns the types of attrs and of keep, sorted, each once;
// with pick, only the types pick accepts.
func mergedTypes(attrs map[uint32][]byte, keep []rawAttr, pick func(uint32) bool) []uint32 {
	ts := make([]uint32, 0, len(attrs)+len(keep))
	for t := range attrs {
		if pick == nil || pick(t) {
			ts = append(ts, t)
		}
	}
	for _, a := range keep {
		if pick == nil || pick(a.typ) {
			ts = append(ts, a.typ)
		}
	}
	slices.Sort(ts)
	return slices.Compact(ts)
}

// findRaw returns the value of type t in attrs, sorted by type.
func findRaw(attrs []rawAttr, t uint32) ([]byte, bool) {
	r := rawObject{attrs: attrs}
	return r.find(t)
}

const (
	attrAADPrefix = "pkcshsm/store/attr/v1\x00"
	// setAADPrefix binds the attribute list of a row whose blob
	// attributes are inside it (the layout before schema 3, and rows not
	// rewritten since); splitSetPrefix the list of a row whose blob
	// attributes live in the blob table, and blobSetPrefix that blob
	// list. A row cannot be made to look like the other layout (by
	// nulling its blob column, say) without its set tag failing.
	setAADPrefix   = "pkcshsm/store/set/v1\x00"
	splitSetPrefix = "pkcshsm/store/set/v2-split\x00"
	blobSetPrefix  = "pkcshsm/store/blobset/v1\x00"
)

// attrAAD appends the associated data of one sealed value to dst.
func attrAAD(dst []byte, tokenID []byte, uid string, t uint32) []byte {
	dst = append(dst, attrAADPrefix...)
	dst = append(dst, tokenID...)
	dst = binary.AppendUvarint(dst, uint64(len(uid)))
	dst = append(dst, uid...)
	return binary.BigEndian.AppendUint32(dst, t)
}

// setAAD appends the associated data of the set tag to dst.
func setAAD(dst []byte, prefix string, tokenID []byte, uid string, class uint64, attrs []rawAttr) []byte {
	dst = slices.Grow(dst, len(prefix)+len(tokenID)+binary.MaxVarintLen64+len(uid)+12+4*len(attrs))
	dst = append(dst, prefix...)
	dst = append(dst, tokenID...)
	dst = binary.AppendUvarint(dst, uint64(len(uid)))
	dst = append(dst, uid...)
	dst = binary.BigEndian.AppendUint64(dst, class)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(attrs)))
	for _, a := range attrs {
		dst = binary.BigEndian.AppendUint32(dst, a.typ)
	}
	return dst
}

// seal turns clear attributes into a sealed rawObject. reuse, if not nil,
// maps types to already sealed values that may be kept (see Object.sealed);
// keep holds sealed values of types not in attrs that are written as they
// are (a partially read object). pick, if not nil, selects the types of
// attrs and keep that go into this list, and prefix names the list's kind
// in the set tag (setAADPrefix, splitSetPrefix, blobSetPrefix).
func (k *DataKey) seal(prefix, uid string, class uint64, attrs map[uint32][]byte, reuse map[uint32]sealedValue, keep []rawAttr, pick func(uint32) bool) *rawObject {
	ts := mergedTypes(attrs, keep, pick)
	r := &rawObject{sealed: true, attrs: make([]rawAttr, 0, len(ts))}
	size := 0
	for _, t := range ts {
		size += len(attrs[t]) + sealOverhead
	}
	buf := make([]byte, 0, size) // one allocation for all sealed values
	aad := make([]byte, 0, 64+len(uid))
	for _, t := range ts {
		v, ok := attrs[t]
		if !ok {
			kv, _ := findRaw(keep, t)
			r.attrs = append(r.attrs, rawAttr{typ: t, val: kv})
			continue
		}
		if sv, ok := reuse[t]; ok && string(sv.plain) == string(v) {
			r.attrs = append(r.attrs, rawAttr{typ: t, val: sv.sealed})
			continue
		}
		aad = attrAAD(aad[:0], k.tokenID[:], uid, t)
		start := len(buf)
		buf = buf[:start+gcmNonceLen]
		rand.Read(buf[start:])
		buf = k.aead.Seal(buf, buf[start:], v, aad)
		r.attrs = append(r.attrs, rawAttr{typ: t, val: buf[start:len(buf):len(buf)]})
	}
	aad = setAAD(aad[:0], prefix, k.tokenID[:], uid, class, r.attrs)
	tag := randomBytes(gcmNonceLen)
	r.setTag = k.aead.Seal(tag, tag, nil, aad)
	return r
}

// errOpen means a sealed value or the set tag did not authenticate.
var errOpen = errors.New("sealed attribute does not authenticate")

// openAttr opens one sealed value of object uid.
func (k *DataKey) openAttr(aad []byte, uid string, t uint32, sealed []byte) ([]byte, []byte, error) {
	aad = attrAAD(aad[:0], k.tokenID[:], uid, t)
	v, err := k.aead.Open(nil, sealed[:gcmNonceLen], sealed[gcmNonceLen:], aad)
	if err != nil {
		return nil, aad, fmt.Errorf("%w (attribute %#x)", errOpen, t)
	}
	if v == nil {
		v = []byte{}
	}
	return v, aad, nil
}

// checkSet verifies the set tag of a sealed object.
func (k *DataKey) checkSet(prefix, uid string, class uint64, r *rawObject) error {
	aad := setAAD(nil, prefix, k.tokenID[:], uid, class, r.attrs)
	if _, err := k.aead.Open(nil, r.setTag[:gcmNonceLen], r.setTag[gcmNonceLen:], aad); err != nil {
		return fmt.Errorf("%w (attribute set)", errOpen)
	}
	return nil
}
