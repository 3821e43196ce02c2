package hsm

import (
	"bytes"
	"crypto/cipher"
	"encoding/binary"
	"io"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// This file knows the secure key layouts. A blob is a header in the layout
// of the real adapter — so the master key verification pattern sits where
// CCA key tokens and EP11 blobs carry it — and a sealed payload: the clear
// key material encrypted by the backend (the simulator uses AES-256-GCM
// under a key derived from the master key register, with the rest of the
// blob as associated data, so changing any header byte, the pattern
// included, makes the payload fail to open).
//
// All multi-byte fields are big-endian, as on s390x.
//
// CCA layouts (offsets in bytes):
//
//	DES DATA     0:0x01 4:0x00(version) 8:MKVP[8] 56:bits 58:key bytes 60:TVV | sealed
//	AES DATA     0:0x01 4:0x04(version) 8:MKVP[8] 56:bits 58:key bytes 60:TVV | sealed
//	AES CIPHER   0:0x01 2:total length 4:0x05 8:KMS 0x03 10:MKVP[8]
//	HMAC           26:0x02 27:0x02 28:0x00 38:payload bits 41:algorithm
//	               (0x02 AES, 0x03 HMAC) 42:key type (0x0001 CIPHER,
//	               0x0002 MAC) 44:sealed length | sealed
//	ECC private  0:0x1f 2:total length 8:0x20(section) 10:section length
//	               12:0x01(wrapping) 18:0x08(key format) 20:curve bits
//	               24:MKVP[8] 32:sealed length | sealed
//	RSA private  0:0x1f 2:total length 8:0x30 or 0x31(section)
//	               10:section length 20:modulus bits 112 (0x30) or 124
//	               (0x31):MKVP[8], sealed inside the section after the
//	               fixed part, then the public section 0x04 (8 bytes,
//	               modulus bits at +6)
//
// The TVV of DATA tokens is the 32-bit sum of the first 60 bytes taken as
// big-endian words, as CCA computes it.
//
// EP11 layout:
//
//	0:session field[32] (zero: not session-bound) 32:WKVP[16] 48:attribute bits[8] 56:mode[8]
//	64:0x1234 66:key type 67:0 68:bits 70:sealed length | sealed

// Layout is the secure key token format of a blob.
type Layout uint8

// Layouts.
const (
	LayoutCCADESData   Layout = iota + 1 // CCA internal DES DATA token (SYM)
	LayoutCCAAESData                     // CCA internal AES DATA token (AES)
	LayoutCCAAESCipher                   // CCA variable-length AES CIPHER token (AES)
	LayoutCCAHMAC                        // CCA variable-length HMAC token (AES)
	LayoutCCAECC                         // CCA internal ECC private key token (APKA)
	LayoutCCARSAME                       // CCA RSA private key, section 0x30 (APKA)
	LayoutCCARSACRT                      // CCA RSA private key, section 0x31 (APKA)
	LayoutEP11                           // EP11 key blob (WK)
)

func (l Layout) String() string {
	names := map[Layout]string{
		LayoutCCADESData: "CCA DES DATA", LayoutCCAAESData: "CCA AES DATA",
		LayoutCCAAESCipher: "CCA AES CIPHER", LayoutCCAHMAC: "CCA HMAC",
		LayoutCCAECC: "CCA ECC private", LayoutCCARSAME: "CCA RSA-AESM private",
		LayoutCCARSACRT: "CCA RSA-AESC private", LayoutEP11: "EP11 key blob",
	}
	if n, ok := names[l]; ok {
		return n
	}
	return "unknown layout"
}

// BlobInfo is what a blob's header says about it, readable without a
// backend.
type BlobInfo struct {
	Mode    apqn.Mode
	MKType  mkvp.Type
	Pattern mkvp.Pattern
	KeyType KeyType
	Bits    int
	// Session is the EP11 session field: zero for keys not bound to an
	// EP11 session, else the first 32 bytes of the pin blob of the
	// session the key is bound to (see Sessions). Always zero for CCA.
	Session [SessionIDSize]byte
}

// Bound says whether the key is bound to an EP11 session.
func (i BlobInfo) Bound() bool { return i.Session != [SessionIDSize]byte{} }

// Blob is a decoded secure key: its header fields and the sealed payload,
// which only the backend holding the master key can open.
type Blob struct {
	BlobInfo
	Layout Layout
	Sealed []byte
}

// Fixed offsets and sizes of the layouts above.
const (
	ccaDataHeader   = 64
	ccaVLSCHeader   = 46
	ccaECCHeader    = 34
	ccaRSAMEFixed   = 120 // section+112 is the MKVP; fixed part ends after it
	ccaRSACRTFixed  = 132
	ccaRSAPubLen    = 8
	ep11Header      = 72
	ep11Magic       = 0x1234
	maxBlobLen      = 0xffff
	maxSealedLength = maxBlobLen - ccaRSACRTFixed - ccaRSAPubLen - 2
)

// DefaultLayout returns the layout a backend uses for keys of type k in mode
// m: AES CIPHER tokens for AES keys (as current openCryptoki CCA tokens make
// them), RSA-AESC (CRT) for RSA keys.
func DefaultLayout(m apqn.Mode, k KeyType) (Layout, error) {
	if m == apqn.ModeEP11 {
		switch k {
		case KeyAES, KeyDES3, KeyHMAC, KeyEC, KeyRSA:
			return LayoutEP11, nil
		}
	}
	if m == apqn.ModeCCA {
		switch k {
		case KeyAES:
			return LayoutCCAAESCipher, nil
		case KeyDES3:
			return LayoutCCADESData, nil
		case KeyHMAC:
			return LayoutCCAHMAC, nil
		case KeyEC:
			return LayoutCCAECC, nil
		case KeyRSA:
			return LayoutCCARSACRT, nil
		}
	}
	return 0, errclass.New(errclass.InvalidArgument, "no secure key layout for %s keys on %s adapters", k, m)
}

// check validates the combination of layout, mode, MK type and key type,
// and the key size.
func (b Blob) check() error {
	bad := func(format string, args ...any) error {
		return errclass.New(errclass.InvalidArgument, "cannot encode secure key: "+format, args...)
	}
	want := map[Layout]struct {
		mode apqn.Mode
		mk   mkvp.Type
		kt   []KeyType
	}{
		LayoutCCADESData:   {apqn.ModeCCA, mkvp.CCASYM, []KeyType{KeyDES3}},
		LayoutCCAAESData:   {apqn.ModeCCA, mkvp.CCAAES, []KeyType{KeyAES}},
		LayoutCCAAESCipher: {apqn.ModeCCA, mkvp.CCAAES, []KeyType{KeyAES}},
		LayoutCCAHMAC:      {apqn.ModeCCA, mkvp.CCAAES, []KeyType{KeyHMAC}},
		LayoutCCAECC:       {apqn.ModeCCA, mkvp.CCAAPKA, []KeyType{KeyEC}},
		LayoutCCARSAME:     {apqn.ModeCCA, mkvp.CCAAPKA, []KeyType{KeyRSA}},
		LayoutCCARSACRT:    {apqn.ModeCCA, mkvp.CCAAPKA, []KeyType{KeyRSA}},
		LayoutEP11:         {apqn.ModeEP11, mkvp.EP11WK, []KeyType{KeyAES, KeyDES3, KeyHMAC, KeyEC, KeyRSA}},
	}
	w, ok := want[b.Layout]
	if !ok {
		return bad("unknown layout %d", b.Layout)
	}
	if b.Mode != w.mode || b.MKType != w.mk {
		return bad("%s needs a %s key under %s, not %s under %s", b.Layout, w.mode, w.mk, b.Mode, b.MKType)
	}
	okType := false
	for _, k := range w.kt {
		okType = okType || k == b.KeyType
	}
	if !okType {
		return bad("%s cannot hold %s keys", b.Layout, b.KeyType)
	}
	if b.Bound() && b.Layout != LayoutEP11 {
		return bad("only EP11 keys can be bound to an EP11 session")
	}
	if b.Session[0] == 0x30 {
		return bad("an EP11 session field cannot start with 0x30")
	}
	if b.Pattern.Len() != b.MKType.Size() {
		return bad("%s pattern has %d bytes, want %d", b.MKType, b.Pattern.Len(), b.MKType.Size())
	}
	if err := CheckSpec(KeySpec{Type: b.KeyType, Bits: b.Bits}); err != nil {
		return err
	}
	if len(b.Sealed) > maxSealedLength {
		return bad("sealed payload of %d bytes is too long", len(b.Sealed))
	}
	return nil
}

// CheckSpec validates a key spec: the key type and a size it supports.
func CheckSpec(s KeySpec) error {
	ok := false
	switch s.Type {
	case KeyAES:
		ok = s.Bits == 128 || s.Bits == 192 || s.Bits == 256
	case KeyDES3:
		ok = s.Bits == 192
	case KeyHMAC:
		ok = s.Bits >= 80 && s.Bits <= 2432 && s.Bits%8 == 0
	case KeyEC:
		ok = s.Bits == 256 || s.Bits == 384
	case KeyRSA:
		ok = s.Bits == 2048 || s.Bits == 3072 || s.Bits == 4096
	default:
		return errclass.Newh(errclass.InvalidArgument, "use AES, DES3, HMAC, EC or RSA",
			"unknown key type %d", uint8(s.Type))
	}
	if !ok {
		return errclass.Newh(errclass.InvalidArgument,
			"AES 128/192/256, DES3 192, HMAC 80..2432 (multiple of 8), EC 256/384, RSA 2048/3072/4096",
			"%s key size %d bits is not supported", s.Type, s.Bits)
	}
	return nil
}

// EncodeBlob lays out a blob. The Sealed payload is copied as is.
func EncodeBlob(b Blob) ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	raw, off := encodeFrame(b)
	copy(raw[off:], b.Sealed)
	return raw, nil
}

// encodeFrame builds the blob with a zero sealed region and returns the
// region's offset.
func encodeFrame(b Blob) (raw []byte, sealedAt int) {
	pat := b.Pattern.Bytes()
	n := len(b.Sealed)
	be := binary.BigEndian
	switch b.Layout {
	case LayoutCCADESData, LayoutCCAAESData:
		raw = make([]byte, ccaDataHeader+n)
		raw[0] = 0x01
		if b.Layout == LayoutCCAAESData {
			raw[4] = 0x04
		}
		copy(raw[8:16], pat)
		be.PutUint16(raw[56:], uint16(b.Bits))
		be.PutUint16(raw[58:], uint16(b.Bits/8))
		be.PutUint32(raw[60:], tvv(raw))
		return raw, ccaDataHeader
	case LayoutCCAAESCipher, LayoutCCAHMAC:
		raw = make([]byte, ccaVLSCHeader+n)
		raw[0] = 0x01
		be.PutUint16(raw[2:], uint16(len(raw)))
		raw[4] = 0x05
		raw[8] = 0x03 // key material state: enciphered under the MK
		raw[9] = 0x01 // pattern type: AES MK verification pattern
		copy(raw[10:18], pat)
		raw[26], raw[27], raw[28] = 0x02, 0x02, 0x00
		be.PutUint16(raw[38:], uint16(b.Bits))
		if b.Layout == LayoutCCAAESCipher {
			raw[41] = 0x02
			be.PutUint16(raw[42:], 0x0001)
		} else {
			raw[41] = 0x03
			be.PutUint16(raw[42:], 0x0002)
		}
		be.PutUint16(raw[44:], uint16(n))
		return raw, ccaVLSCHeader
	case LayoutCCAECC:
		raw = make([]byte, ccaECCHeader+n)
		raw[0] = 0x1f
		be.PutUint16(raw[2:], uint16(len(raw)))
		raw[8] = 0x20
		be.PutUint16(raw[10:], uint16(len(raw)-8))
		raw[12] = 0x01
		raw[18] = 0x08
		be.PutUint16(raw[20:], uint16(b.Bits))
		copy(raw[24:32], pat)
		be.PutUint16(raw[32:], uint16(n))
		return raw, ccaECCHeader
	case LayoutCCARSAME, LayoutCCARSACRT:
		fixed, id, mk := ccaRSAMEFixed, byte(0x30), 112
		if b.Layout == LayoutCCARSACRT {
			fixed, id, mk = ccaRSACRTFixed, 0x31, 124
		}
		sec := fixed - 8 + 2 + n // fixed part, sealed length, sealed
		raw = make([]byte, 8+sec+ccaRSAPubLen)
		raw[0] = 0x1f
		be.PutUint16(raw[2:], uint16(len(raw)))
		raw[8] = id
		be.PutUint16(raw[10:], uint16(sec))
		be.PutUint16(raw[20:], uint16(b.Bits))
		copy(raw[mk:mk+8], pat)
		be.PutUint16(raw[fixed:], uint16(n))
		pub := raw[8+sec:]
		pub[0] = 0x04
		be.PutUint16(pub[2:], ccaRSAPubLen)
		be.PutUint16(pub[6:], uint16(b.Bits))
		return raw, fixed + 2
	case LayoutEP11:
		raw = make([]byte, ep11Header+n)
		copy(raw[:32], b.Session[:])
		copy(raw[32:48], pat)
		be.PutUint64(raw[48:], ep11Attrs(b.KeyType))
		be.PutUint16(raw[64:], ep11Magic)
		raw[66] = byte(b.KeyType)
		be.PutUint16(raw[68:], uint16(b.Bits))
		be.PutUint16(raw[70:], uint16(n))
		return raw, ep11Header
	}
	panic("hsm: encodeFrame on unchecked layout")
}

// ep11Attrs are the XCP_BLOB_* boolean attributes a key of type k carries.
func ep11Attrs(k KeyType) uint64 {
	const (
		modifiable = 0x4
		sign       = 0x100
		decrypt    = 0x400
		encrypt    = 0x800
		unwrap     = 0x2000
		wrap       = 0x4000
		verify     = 0x8000
	)
	switch k {
	case KeyAES:
		return modifiable | encrypt | decrypt | wrap | unwrap
	case KeyDES3:
		return modifiable | encrypt | decrypt
	case KeyHMAC:
		return modifiable | sign | verify
	case KeyEC:
		return modifiable | sign
	case KeyRSA:
		return modifiable | sign | decrypt | unwrap
	}
	return 0
}

// tvv is the CCA token validation value of a DATA token: the sum of the
// first 60 bytes as big-endian 32-bit words.
func tvv(raw []byte) uint32 {
	var s uint32
	for i := 0; i < 60; i += 4 {
		s += binary.BigEndian.Uint32(raw[i:])
	}
	return s
}

// DecodeBlob parses a blob. Everything the header says is checked; a blob
// that does not parse exactly as one of the layouts is ErrBadBlob.
func DecodeBlob(raw []byte) (Blob, error) {
	b, _, err := decodeFrame(raw)
	return b, err
}

func badBlob(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, "%w: "+format, append([]any{ErrBadBlob}, args...)...)
}

// decodeFrame parses raw and returns the blob and the sealed region's
// offset. The returned Sealed aliases raw.
func decodeFrame(raw []byte) (Blob, int, error) {
	be := binary.BigEndian
	var b Blob
	var at int
	switch {
	case len(raw) >= ep11Header && be.Uint16(raw[64:]) == ep11Magic && raw[0] != 0x30 && (allZero(raw[:32]) || ep11HeaderOK(raw)):
		// A bound blob's session field can look like the start of a CCA
		// token, so a non-zero one counts only with a consistent header.
		b.Layout, b.Mode, b.MKType = LayoutEP11, apqn.ModeEP11, mkvp.EP11WK
		copy(b.Session[:], raw[:32])
		b.KeyType = KeyType(raw[66])
		b.Bits = int(be.Uint16(raw[68:]))
		if int(be.Uint16(raw[70:])) != len(raw)-ep11Header {
			return Blob{}, 0, badBlob("EP11 blob length %d does not match its header", len(raw))
		}
		if raw[67] != 0 || !allZero(raw[56:64]) || be.Uint64(raw[48:]) != ep11Attrs(b.KeyType) {
			return Blob{}, 0, badBlob("EP11 blob has unknown attribute or mode bits")
		}
		b.Pattern, _ = mkvp.New(raw[32:48])
		at = ep11Header
	case len(raw) >= 16 && raw[0] == 0x01 && (raw[4] == 0x00 || raw[4] == 0x04):
		if len(raw) < ccaDataHeader {
			return Blob{}, 0, badBlob("CCA DATA token of %d bytes is too short", len(raw))
		}
		b.Layout, b.Mode, b.MKType, b.KeyType = LayoutCCADESData, apqn.ModeCCA, mkvp.CCASYM, KeyDES3
		if raw[4] == 0x04 {
			b.Layout, b.MKType, b.KeyType = LayoutCCAAESData, mkvp.CCAAES, KeyAES
		}
		b.Bits = int(be.Uint16(raw[56:]))
		if int(be.Uint16(raw[58:]))*8 != b.Bits || be.Uint32(raw[60:]) != tvv(raw) {
			return Blob{}, 0, badBlob("CCA DATA token has a bad size field or token validation value")
		}
		if raw[1] != 0 || raw[2] != 0 || raw[3] != 0 || !allZero(raw[5:8]) || !allZero(raw[16:56]) {
			return Blob{}, 0, badBlob("CCA DATA token has unknown fields set")
		}
		b.Pattern, _ = mkvp.New(raw[8:16])
		at = ccaDataHeader
	case len(raw) >= 5 && raw[0] == 0x01 && raw[4] == 0x05:
		if len(raw) < ccaVLSCHeader || int(be.Uint16(raw[2:])) != len(raw) ||
			int(be.Uint16(raw[44:])) != len(raw)-ccaVLSCHeader {
			return Blob{}, 0, badBlob("CCA variable-length token length does not match its header")
		}
		switch {
		case raw[41] == 0x02 && be.Uint16(raw[42:]) == 0x0001:
			b.Layout, b.KeyType = LayoutCCAAESCipher, KeyAES
		case raw[41] == 0x03 && be.Uint16(raw[42:]) == 0x0002:
			b.Layout, b.KeyType = LayoutCCAHMAC, KeyHMAC
		default:
			return Blob{}, 0, badBlob("CCA variable-length token of unknown algorithm 0x%02x / key type 0x%04x",
				raw[41], be.Uint16(raw[42:]))
		}
		if raw[8] != 0x03 || raw[9] != 0x01 || raw[26] != 0x02 || raw[27] != 0x02 || raw[28] != 0 ||
			raw[1] != 0 || !allZero(raw[5:8]) || !allZero(raw[18:26]) || !allZero(raw[29:38]) || raw[40] != 0 {
			return Blob{}, 0, badBlob("CCA variable-length token has unknown fields set")
		}
		b.Mode, b.MKType = apqn.ModeCCA, mkvp.CCAAES
		b.Bits = int(be.Uint16(raw[38:]))
		b.Pattern, _ = mkvp.New(raw[10:18])
		at = ccaVLSCHeader
	case len(raw) >= 9 && raw[0] == 0x1f && raw[8] == 0x20:
		if len(raw) < ccaECCHeader || int(be.Uint16(raw[2:])) != len(raw) ||
			int(be.Uint16(raw[10:])) != len(raw)-8 || int(be.Uint16(raw[32:])) != len(raw)-ccaECCHeader {
			return Blob{}, 0, badBlob("CCA ECC token length does not match its header")
		}
		if raw[12] != 0x01 || raw[18] != 0x08 || raw[1] != 0 || !allZero(raw[4:8]) || raw[9] != 0 ||
			!allZero(raw[13:18]) || raw[19] != 0 || !allZero(raw[22:24]) {
			return Blob{}, 0, badBlob("CCA ECC token has an unknown wrapping method, key format or field")
		}
		b.Layout, b.Mode, b.MKType, b.KeyType = LayoutCCAECC, apqn.ModeCCA, mkvp.CCAAPKA, KeyEC
		b.Bits = int(be.Uint16(raw[20:]))
		b.Pattern, _ = mkvp.New(raw[24:32])
		at = ccaECCHeader
	case len(raw) >= 9 && raw[0] == 0x1f && (raw[8] == 0x30 || raw[8] == 0x31):
		fixed, mk := ccaRSAMEFixed, 112
		b.Layout = LayoutCCARSAME
		if raw[8] == 0x31 {
			fixed, mk, b.Layout = ccaRSACRTFixed, 124, LayoutCCARSACRT
		}
		if len(raw) < fixed+2+ccaRSAPubLen || int(be.Uint16(raw[2:])) != len(raw) {
			return Blob{}, 0, badBlob("CCA RSA token length does not match its header")
		}
		sec := int(be.Uint16(raw[10:]))
		n := int(be.Uint16(raw[fixed:]))
		if sec != fixed-8+2+n || 8+sec+ccaRSAPubLen != len(raw) {
			return Blob{}, 0, badBlob("CCA RSA private section length does not match the token")
		}
		pub := raw[8+sec:]
		bits := be.Uint16(raw[20:])
		if pub[0] != 0x04 || pub[1] != 0 || be.Uint16(pub[2:]) != ccaRSAPubLen || !allZero(pub[4:6]) ||
			be.Uint16(pub[6:]) != bits {
			return Blob{}, 0, badBlob("CCA RSA token lacks its public key section")
		}
		if raw[1] != 0 || !allZero(raw[4:8]) || raw[9] != 0 || !allZero(raw[12:20]) ||
			!allZero(raw[22:mk]) || !allZero(raw[mk+8:fixed]) {
			return Blob{}, 0, badBlob("CCA RSA token has unknown fields set")
		}
		b.Mode, b.MKType, b.KeyType, b.Bits = apqn.ModeCCA, mkvp.CCAAPKA, KeyRSA, int(bits)
		b.Pattern, _ = mkvp.New(raw[mk : mk+8])
		b.Sealed = raw[fixed+2 : fixed+2+n]
		if err := b.check(); err != nil {
			return Blob{}, 0, badBlob("%v", err)
		}
		return b, fixed + 2, nil
	case len(raw) > 0 && raw[0] == 0x30:
		return Blob{}, 0, badBlob("this is a public key (DER), not a secure key")
	default:
		return Blob{}, 0, badBlob("not a CCA key token or EP11 key blob (%d bytes)", len(raw))
	}
	b.Sealed = raw[at:]
	if err := b.check(); err != nil {
		return Blob{}, 0, badBlob("%v", err)
	}
	return b, at, nil
}

// ep11HeaderOK says whether the EP11 header fields after the session
// field are consistent (length, attribute and mode bits).
func ep11HeaderOK(raw []byte) bool {
	be := binary.BigEndian
	return int(be.Uint16(raw[70:])) == len(raw)-ep11Header && raw[67] == 0 && allZero(raw[56:64]) &&
		be.Uint64(raw[48:]) == ep11Attrs(KeyType(raw[66])) && ep11Attrs(KeyType(raw[66])) != 0
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Inspect reads what a blob's header says: adapter mode, master key type
// and pattern, key type and size. It does not check the sealed payload.
func Inspect(blob []byte) (BlobInfo, error) {
	b, err := DecodeBlob(blob)
	if err != nil {
		return BlobInfo{}, err
	}
	return b.BlobInfo, nil
}

// SealBlob makes a blob of the given layout whose payload is material
// sealed with aead (a backend's key derived from the master key register
// the pattern identifies). The nonce is read from rand; everything in the
// blob except the sealed region is associated data.
func SealBlob(info BlobInfo, layout Layout, aead cipher.AEAD, rand io.Reader, material []byte) ([]byte, error) {
	ns := aead.NonceSize()
	b := Blob{BlobInfo: info, Layout: layout, Sealed: make([]byte, ns+len(material)+aead.Overhead())}
	if err := b.check(); err != nil {
		return nil, err
	}
	raw, at := encodeFrame(b)
	region := raw[at : at+len(b.Sealed)]
	if _, err := io.ReadFull(rand, region[:ns]); err != nil {
		return nil, errclass.New(errclass.Internal, "read nonce: %w", err)
	}
	aad := blobAAD(raw, at, len(region))
	aead.Seal(region[ns:ns], region[:ns], material, aad)
	return raw, nil
}

// OpenBlob decodes raw and opens its payload with aead. A payload that does
// not authenticate — tampered, or sealed under another master key with the
// same pattern — is ErrBadBlob.
func OpenBlob(raw []byte, aead cipher.AEAD) (Blob, []byte, error) {
	b, at, err := decodeFrame(raw)
	if err != nil {
		return Blob{}, nil, err
	}
	ns := aead.NonceSize()
	if len(b.Sealed) < ns+aead.Overhead() {
		return Blob{}, nil, badBlob("sealed payload of %d bytes is too short", len(b.Sealed))
	}
	aad := blobAAD(raw, at, len(b.Sealed))
	material, err := aead.Open(nil, b.Sealed[:ns], b.Sealed[ns:], aad)
	if err != nil {
		return Blob{}, nil, badBlob("payload does not authenticate under the master key (tampered blob?)")
	}
	return b, material, nil
}

// blobAAD is raw without its sealed region.
func blobAAD(raw []byte, at, n int) []byte {
	if at+n == len(raw) {
		return raw[:at]
	}
	return bytes.Join([][]byte{raw[:at], raw[at+n:]}, nil)
}
