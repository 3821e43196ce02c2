package sim

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"

	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Verification patterns are derived from the register content:
//
//	AES, APKA  SHA-256(0x01 ‖ key)[:8]   (IBM's SHA-256 based MKVP method)
//	SYM        SHA-256(0x02 ‖ key)[:8]
//	ASYM       SHA-256(0x03 ‖ key)[:16]  sysfs prints 16 bytes; the pattern is the first 8
//	WK (EP11)  SHA-256(0x04 ‖ key)       sysfs prints 32 bytes; the WKVP is the first 16
//
// SYM, ASYM and WK use stand-ins for IBM's DES/MDC-4 and EP11 methods:
// stable, documented, and distinct per type, so a key loaded as two types
// never shows the same pattern.

// sysfsPattern returns the pattern bytes as sysfs prints them (8 bytes for
// AES and APKA, 16 for ASYM, 32 for WK; 8 for SYM, which sysfs does not
// show).
func sysfsPattern(t mkvp.Type, key []byte) []byte {
	prefix, n := byte(0x01), 8
	switch t {
	case mkvp.CCASYM:
		prefix = 0x02
	case mkvp.CCAASYM:
		prefix, n = 0x03, 16
	case mkvp.EP11WK:
		prefix, n = 0x04, 32
	}
	h := sha256.New()
	h.Write([]byte{prefix})
	h.Write(key)
	return h.Sum(nil)[:n]
}

// PatternOf returns the verification pattern of a master key of type t, as
// the simulator computes it for register content key.
func PatternOf(t mkvp.Type, key []byte) mkvp.Pattern {
	p, err := mkvp.ForType(t, sysfsPattern(t, key))
	if err != nil {
		panic("sim: PatternOf with invalid type")
	}
	return p
}

// sealer derives the AES-256-GCM key that seals blobs under the master key
// key of type t: HMAC-SHA-256 keyed with the register content.
func sealer(t mkvp.Type, key []byte) cipher.AEAD {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("pkcshsm-sim blob sealing v1 "))
	m.Write([]byte(t.Keyword()))
	c, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key always works
	}
	g, err := cipher.NewGCM(c)
	if err != nil {
		panic(err)
	}
	return g
}
