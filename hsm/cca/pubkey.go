package cca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"math/big"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// External PKA public key tokens, as CSNDPKX returns them (IBM CCA Basic
// Services Reference, "PKA key token formats"; host-libraries.md §1.7):
// an 8-byte header (0x1E, version, big-endian total length at 2), then
// sections, each with an ID byte, a version byte and a big-endian length
// at 2. The RSA public key section (0x04) has the exponent length at +6,
// the modulus bit count at +8, the modulus length at +10, the exponent at
// +12 and the modulus after it. The ECC public key section (0x21) has the
// length of the point Q at +12 and Q (0x04 ‖ X ‖ Y) at +14.
const (
	tokenExternal = 0x1E
	sectionRSAPub = 0x04
	sectionECCPub = 0x21
)

func badPub(format string, args ...any) error {
	return errclass.New(errclass.Internal, "CSNDPKX returned a public key token pkcshsm cannot read: "+format, args...)
}

// section finds a section of an external public token.
func section(tok []byte, id byte) ([]byte, error) {
	if len(tok) < 8 || tok[0] != tokenExternal {
		return nil, badPub("not an external token (%d bytes)", len(tok))
	}
	total := int(binary.BigEndian.Uint16(tok[2:]))
	if total < 8 || total > len(tok) {
		return nil, badPub("total length %d, token %d bytes", total, len(tok))
	}
	for off := 8; off+4 <= total; {
		n := int(binary.BigEndian.Uint16(tok[off+2:]))
		if n < 4 || off+n > total {
			return nil, badPub("section 0x%02X at %d has length %d", tok[off], off, n)
		}
		if tok[off] == id {
			return tok[off : off+n], nil
		}
		off += n
	}
	return nil, badPub("no section 0x%02X", id)
}

// spkiOf converts an external public token to a DER SubjectPublicKeyInfo.
// ecBits is the curve size of an EC key (from the private token).
func spkiOf(tok []byte, ecBits int) ([]byte, error) {
	if ecBits != 0 {
		s, err := section(tok, sectionECCPub)
		if err != nil {
			return nil, err
		}
		if len(s) < 14 {
			return nil, badPub("ECC public section of %d bytes", len(s))
		}
		n := int(binary.BigEndian.Uint16(s[12:]))
		if 14+n > len(s) {
			return nil, badPub("ECC point of %d bytes in a %d-byte section", n, len(s))
		}
		curve := elliptic.P256()
		if ecBits == 384 {
			curve = elliptic.P384()
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, s[14:14+n])
		if err != nil {
			return nil, badPub("ECC point: %v", err)
		}
		return x509.MarshalPKIXPublicKey(pub)
	}
	s, err := section(tok, sectionRSAPub)
	if err != nil {
		return nil, err
	}
	if len(s) < 12 {
		return nil, badPub("RSA public section of %d bytes", len(s))
	}
	el := int(binary.BigEndian.Uint16(s[6:]))
	ml := int(binary.BigEndian.Uint16(s[10:]))
	if 12+el+ml > len(s) || el == 0 || el > 8 || ml == 0 {
		return nil, badPub("RSA exponent of %d and modulus of %d bytes in a %d-byte section", el, ml, len(s))
	}
	e := new(big.Int).SetBytes(s[12 : 12+el])
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, badPub("RSA exponent %s", e)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(s[12+el : 12+el+ml]), E: int(e.Int64())}
	return x509.MarshalPKIXPublicKey(pub)
}
