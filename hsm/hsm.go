// Package hsm is the seam between pkcshsm's tokens and the crypto adapters
// that hold the master keys.
//
// The interface is defined by what a PKCS#11 token needs, not by the CCA or
// EP11 host APIs: enumerate queues (APQNs) and read their master key
// registers; generate, import and use secure keys; re-encipher a secure key
// from the CURRENT to the NEW master key (CCA RTNMK, EP11 reencrypt) or from
// OLD to CURRENT (CCA RTCMK).
//
// # Secure keys
//
// A secure key ("blob") is opaque key material enciphered by a master key of
// an adapter domain. It never leaves this package's implementations in the
// clear. Blobs use the layouts of the real adapters, so the verification
// pattern of the master key that enciphers a blob sits where CCA key tokens
// and EP11 blobs carry it; [Inspect] reads it without a backend.
//
// Which master key type enciphers a key depends on the adapter mode and the
// key type, see [MKTypeFor]. A blob is usable on an APQN when its pattern
// matches the CURRENT register there, or — CCA only — the OLD register. EP11
// has no OLD register: after the officer activates a new wrapping key, blobs
// under the previous one fail with [ErrWrongMK] until re-enciphered.
//
// # Errors
//
// Every error returned by a Backend carries an [errclass] class; the
// sentinels below say which situation it was and are matched with errors.Is.
//
// # Concurrency
//
// Backends are safe for concurrent use by many goroutines and, for the
// simulator, by many processes sharing one state directory.
package hsm

import (
	"context"
	"crypto"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Sentinel errors, matched with errors.Is. Each has a class.
var (
	// ErrWrongMK is returned when a blob's master key is not usable on the
	// APQN: CCA, neither CURRENT nor OLD matches; EP11, CURRENT does not.
	ErrWrongMK = errclass.New(errclass.FailedPrecondition, "the key's master key is not active on this APQN")
	// ErrRegisterState is returned when a register is not in the state an
	// operation needs (e.g. re-encipher to NEW while NEW is not full).
	ErrRegisterState = errclass.New(errclass.FailedPrecondition, "master key register not in the required state")
	// ErrNoSuchAPQN is returned for an APQN the backend does not have.
	ErrNoSuchAPQN = errclass.New(errclass.NotFound, "no such APQN")
	// ErrOffline is returned when the APQN or its card is offline,
	// deconfigured or checkstopped, or an injected fault fired.
	ErrOffline = errclass.New(errclass.Unavailable, "APQN not available")
	// ErrWrongMode is returned when an operation does not fit the adapter
	// mode (a CCA blob on an EP11 APQN, a CCA-only register on EP11).
	ErrWrongMode = errclass.New(errclass.InvalidArgument, "operation does not fit the adapter mode")
	// ErrBadBlob is returned for malformed or tampered blobs.
	ErrBadBlob = errclass.New(errclass.InvalidArgument, "malformed or tampered secure key")
	// ErrMechanism is returned when a mechanism or its parameters do not fit
	// the key.
	ErrMechanism = errclass.New(errclass.InvalidArgument, "mechanism not valid for this key")
	// ErrBadData is returned when input data is invalid for the operation
	// (wrong length, bad padding, failed authentication tag).
	ErrBadData = errclass.New(errclass.InvalidArgument, "invalid input data")
	// ErrSignature is returned by Verify when the signature does not verify.
	ErrSignature = errclass.New(errclass.InvalidArgument, "signature does not verify")
)

// Mode is the adapter mode of an APQN.
type Mode = apqn.Mode

// RegState is the state of one master key register.
type RegState = apqn.RegState

// Register is one master key register: its state and, where a key is loaded,
// its verification pattern.
type Register struct {
	State   RegState
	Pattern mkvp.Pattern
}

// Registers is the NEW, CURRENT and OLD register set of one master key type.
// EP11 has no OLD register; its Old is the zero Register.
type Registers struct {
	New, Current, Old Register
}

// QueueInfo describes one APQN.
type QueueInfo struct {
	ID     apqn.ID
	Mode   Mode
	Online bool // online, configured and not checkstopped
	// MK holds the registers per master key type: CCA SYM, ASYM, AES, APKA;
	// EP11 WK.
	MK map[mkvp.Type]Registers
}

// KeyType is the kind of a secure key.
type KeyType uint8

// Key types.
const (
	KeyAES  KeyType = iota + 1 // 128, 192 or 256 bits
	KeyDES3                    // 192 bits (three-key)
	KeyHMAC                    // generic secret for HMAC, 80..2432 bits
	KeyEC                      // private key, Bits 256 (P-256) or 384 (P-384)
	KeyRSA                     // private key, Bits 2048, 3072 or 4096
)

func (k KeyType) String() string {
	switch k {
	case KeyAES:
		return "AES"
	case KeyDES3:
		return "DES3"
	case KeyHMAC:
		return "HMAC"
	case KeyEC:
		return "EC"
	case KeyRSA:
		return "RSA"
	}
	return "unknown"
}

// KeySpec says what key to make.
type KeySpec struct {
	Type KeyType
	// Bits is the key size: AES 128/192/256, DES3 192, HMAC 80..2432
	// (a multiple of 8), EC 256/384 (the curve), RSA 2048/3072/4096.
	Bits int
}

// MKTypeFor returns the master key type that enciphers keys of type k on an
// adapter in mode m: EP11, always the wrapping key; CCA, SYM for DES3, AES
// for AES and HMAC, APKA for EC and RSA.
func MKTypeFor(m Mode, k KeyType) (mkvp.Type, error) {
	switch m {
	case apqn.ModeEP11:
		return mkvp.EP11WK, nil
	case apqn.ModeCCA:
		switch k {
		case KeyDES3:
			return mkvp.CCASYM, nil
		case KeyAES, KeyHMAC:
			return mkvp.CCAAES, nil
		case KeyEC, KeyRSA:
			return mkvp.CCAAPKA, nil
		}
	}
	return 0, errclass.New(errclass.InvalidArgument, "no master key type for %s keys on %s adapters", k, m)
}

// Mechanism is a cryptographic operation a secure key can do.
type Mechanism uint8

// Mechanisms.
const (
	MechAESECB     Mechanism = iota + 1 // no padding, data a multiple of 16
	MechAESCBC                          // no padding, Params.IV 16 bytes
	MechAESCBCPad                       // PKCS#7 padding, Params.IV 16 bytes
	MechAESGCM                          // Params.IV (12 bytes typical), AAD, TagBits
	MechAESKW                           // RFC 3394 key wrap (WrapKey/UnwrapKey)
	MechAESKWP                          // RFC 5649 key wrap with padding
	MechDES3CBC                         // no padding, Params.IV 8 bytes
	MechHMACSHA256                      // Sign/Verify (MAC)
	MechECDSA                           // Sign/Verify a digest; signature r||s
	MechRSAPKCS                         // PKCS#1 v1.5 signature; Params.Hash 0 = raw DigestInfo input
	MechRSAPSS                          // Sign/Verify a digest of Params.Hash, Params.SaltLen
	MechRSAOAEP                         // Encrypt/Decrypt, Params.Hash, Params.Label
	MechDES3ECB                         // no padding, data a multiple of 8
)

func (m Mechanism) String() string {
	names := map[Mechanism]string{
		MechAESECB: "AES-ECB", MechAESCBC: "AES-CBC", MechAESCBCPad: "AES-CBC-PAD",
		MechAESGCM: "AES-GCM", MechAESKW: "AES-KW", MechAESKWP: "AES-KWP",
		MechDES3CBC: "DES3-CBC", MechHMACSHA256: "HMAC-SHA256", MechECDSA: "ECDSA",
		MechRSAPKCS: "RSA-PKCS", MechRSAPSS: "RSA-PSS", MechRSAOAEP: "RSA-OAEP", MechDES3ECB: "DES3-ECB",
	}
	if n, ok := names[m]; ok {
		return n
	}
	return "unknown"
}

// Params are the mechanism parameters; each mechanism uses only its own.
type Params struct {
	IV      []byte      // CBC, GCM
	AAD     []byte      // GCM
	TagBits int         // GCM; 0 means 128
	Hash    crypto.Hash // RSA-PKCS (digest algorithm of the input), PSS, OAEP
	SaltLen int         // PSS
	Label   []byte      // OAEP
}

// Direction says which way Reencipher moves a blob.
type Direction uint8

// Re-encipher directions.
const (
	// ToNew re-enciphers a blob from the CURRENT to the NEW master key (CCA
	// RTNMK, EP11 reencrypt). NEW must be full (CCA) or committed (EP11).
	ToNew Direction = iota + 1
	// FromOld re-enciphers a CCA blob from the OLD to the CURRENT master key
	// (CCA RTCMK). EP11 has no OLD register: ErrWrongMode.
	FromOld
)

// Backend is a set of crypto adapters. The APQN argument of each call picks
// the adapter domain that does the work; tokens choose and balance it.
type Backend interface {
	// Queues lists every APQN the backend has, in ascending order.
	Queues(ctx context.Context) ([]QueueInfo, error)
	// Queue describes one APQN.
	Queue(ctx context.Context, q apqn.ID) (QueueInfo, error)

	// GenerateKey makes a secret key (AES, DES3, HMAC) under the CURRENT
	// master key of q.
	GenerateKey(ctx context.Context, q apqn.ID, spec KeySpec) ([]byte, error)
	// GenerateKeyPair makes an EC or RSA key pair; priv is a secure key
	// under the CURRENT master key of q, pub the DER SubjectPublicKeyInfo.
	GenerateKeyPair(ctx context.Context, q apqn.ID, spec KeySpec) (priv, pub []byte, err error)
	// ImportKey enciphers clear key material under the CURRENT master key
	// of q: the raw key for secret keys, PKCS#8 DER for private keys.
	ImportKey(ctx context.Context, q apqn.ID, spec KeySpec, material []byte) ([]byte, error)
	// PublicKey returns the DER SubjectPublicKeyInfo of a private key blob.
	PublicKey(ctx context.Context, q apqn.ID, key []byte) ([]byte, error)

	Encrypt(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, data []byte) ([]byte, error)
	Decrypt(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, data []byte) ([]byte, error)
	// Sign computes a signature or MAC. For ECDSA, PSS and RSA-PKCS with a
	// hash, data is the digest.
	Sign(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, data []byte) ([]byte, error)
	// Verify checks a signature or MAC; ErrSignature when it does not match.
	Verify(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, data, sig []byte) error
	// WrapKey encrypts the secure key target under the secure key wrapping
	// (AES-KW, AES-KWP). The result is the standard wrapped form of the
	// clear key, usable by any party holding the wrapping key.
	WrapKey(ctx context.Context, q apqn.ID, wrapping []byte, m Mechanism, p Params, target []byte) ([]byte, error)
	// UnwrapKey reverses WrapKey, producing a secure key of spec under the
	// CURRENT master key of q.
	UnwrapKey(ctx context.Context, q apqn.ID, unwrapping []byte, m Mechanism, p Params, wrapped []byte, spec KeySpec) ([]byte, error)

	// Reencipher moves a blob to another master key register of q.
	Reencipher(ctx context.Context, q apqn.ID, blob []byte, d Direction) ([]byte, error)
}

// Appender is implemented by a Backend that can append the output of an
// encryption or decryption to a buffer the caller gives instead of
// allocating it, so that a large operation of the token library costs no
// allocation per call (the simulator does; the host libraries write into
// their own C buffers first). The output is that of Encrypt or Decrypt;
// dst's bytes are kept, and its spare capacity must not overlap data.
type Appender interface {
	EncryptAppend(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, dst, data []byte) ([]byte, error)
	DecryptAppend(ctx context.Context, q apqn.ID, key []byte, m Mechanism, p Params, dst, data []byte) ([]byte, error)
}

// MaxAppendGrowth is the most an encryption's output exceeds its input by
// (a GCM tag, a CBC padding block), for sizing an Appender's dst.
const MaxAppendGrowth = 16

// Part says which part of a multi-part master key load this is (1-based).
// The zero Part is a single complete load.
type Part struct {
	Index, Total int
}

// Officer drives master key registers, as the security officer's TKE does.
// The simulator implements it; real hardware is driven by a TKE and has no
// programmatic officer.
type Officer interface {
	// LoadNew loads key (nil: random) into the NEW register of type t. For
	// CCA, parts 1..Total-1 leave NEW partial and the last makes it full; a
	// key given with parts is the XOR of all parts, as on a TKE. For EP11 a
	// load makes NEW uncommitted. It returns the pattern of the NEW register
	// once complete (zero while partial).
	LoadNew(ctx context.Context, q apqn.ID, t mkvp.Type, key []byte, part Part) (mkvp.Pattern, error)
	// Commit commits an uncommitted EP11 NEW wrapping key.
	Commit(ctx context.Context, q apqn.ID) error
	// Set activates NEW: CCA, CURRENT→OLD and NEW→CURRENT, NEW emptied;
	// EP11, committed NEW→CURRENT, NEW emptied.
	Set(ctx context.Context, q apqn.ID, t mkvp.Type) error
	// ClearNew empties the NEW register.
	ClearNew(ctx context.Context, q apqn.ID, t mkvp.Type) error
}
