package store

import (
	"bytes"
	"errors"
	"testing"
)

func TestDecodeRawRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short", []byte{1, 0}},
		{"unknown version", []byte{2, 0, 0}},
		{"unknown kind", []byte{1, 2, 0}},
		{"count larger than input", []byte{1, 0, 5, 1, 0}},
		{"overlong count", []byte{1, 0, 0x80, 0x00}},
		{"length past end", []byte{1, 0, 1, 3, 9, 'a'}},
		{"type above 32 bits", []byte{1, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0}},
		{"duplicate type", []byte{1, 0, 2, 3, 0, 3, 0}},
		{"decreasing types", []byte{1, 0, 2, 4, 0, 3, 0}},
		{"trailing bytes", []byte{1, 0, 1, 3, 0, 7}},
		{"sealed value too short", append([]byte{1, 1, 1, 3, 5}, make([]byte, 5+28)...)},
		{"sealed without set tag", append([]byte{1, 1, 1, 3, 28}, make([]byte, 28)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r rawObject
			if err := decodeRaw(tt.in, &r); !errors.Is(err, errCodec) {
				t.Fatalf("decodeRaw(%x) = %v, want a codec error", tt.in, err)
			}
		})
	}
}

// FuzzDecodeRaw: the parser of stored bytes never panics, and whatever it
// accepts encodes back to exactly the same bytes (one encoding per value).
func FuzzDecodeRaw(f *testing.F) {
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 0, 2, 3, 1, 'x', 0x80, 0x01, 0})
	f.Add(encodeRaw(nil, &rawObject{sealed: true, attrs: []rawAttr{{3, make([]byte, 30)}}, setTag: make([]byte, 28)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r rawObject
		if err := decodeRaw(b, &r); err != nil {
			return
		}
		if got := encodeRaw(nil, &r); !bytes.Equal(got, b) {
			t.Fatalf("decode->encode changed the bytes:\n in  %x\n out %x", b, got)
		}
	})
}

// FuzzSealRoundTrip: any attribute list survives seal -> encode -> decode ->
// open unchanged, and so does the clear encoding of public objects.
func FuzzSealRoundTrip(f *testing.F) {
	f.Add("uid", uint64(4), []byte("label"), []byte{}, []byte("blob"))
	f.Fuzz(func(t *testing.T, uid string, class uint64, a, b, c []byte) {
		class &= 1<<63 - 1
		attrs := map[uint32][]byte{3: a, 0x102: b, 0x80000001: c}
		dk := newDataKey(User, make([]byte, 16), bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{9}, 32))
		for _, private := range []bool{false, true} {
			o := &Object{UniqueID: uid, Class: uint(class), Private: private, Attrs: attrs}
			blob, _ := encodePart(o, dk, false)
			blobs, _ := encodePart(o, dk, true)
			got := &Object{UniqueID: uid, Class: uint(class), Private: private}
			var r rawObject
			if err := loadObject(got, blob, blobs, dk, &r, nil); err != nil {
				t.Fatalf("private=%v: decode: %v", private, err)
			}
			// The legacy layout (blob attributes inside the list) too.
			legacy := &Object{UniqueID: uid, Class: uint(class), Private: private}
			if err := loadObject(legacy, encodeLegacy(o, dk), nil, dk, &r, nil); err != nil || len(legacy.Attrs) != len(attrs) {
				t.Fatalf("private=%v: decode legacy: %v", private, err)
			}
			if len(got.Attrs) != len(attrs) {
				t.Fatalf("private=%v: %d attributes back, want %d", private, len(got.Attrs), len(attrs))
			}
			for k, v := range attrs {
				if !bytes.Equal(got.Attrs[k], v) {
					t.Fatalf("private=%v: attribute %#x = %x, want %x", private, k, got.Attrs[k], v)
				}
			}
		}
	})
}

// FuzzDecodeObject feeds arbitrary bytes to the full decoder with a key:
// it must fail cleanly, never panic.
func FuzzDecodeObject(f *testing.F) {
	dk := newDataKey(User, make([]byte, 16), bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{9}, 32))
	obj := &Object{UniqueID: "u", Private: true, Attrs: map[uint32][]byte{3: []byte("x"), typeOpaque: []byte("blob")}}
	good, _ := encodePart(obj, dk, false)
	goodBlobs, _ := encodePart(obj, dk, true)
	f.Add(good, goodBlobs, true, true)
	f.Add(encodeLegacy(obj, dk), []byte(nil), true, false)
	f.Add([]byte{1, 0, 1, 3, 1, 'x'}, []byte{1, 0, 0}, false, true)
	f.Fuzz(func(t *testing.T, b, blobs []byte, private, split bool) {
		if !split {
			blobs = nil
		}
		for _, only := range [][]uint32{nil, {typeOpaque}} {
			o := &Object{UniqueID: "u", Private: private}
			var r rawObject
			_ = loadObject(o, b, blobs, dk, &r, only)
		}
	})
}
