package store

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"

	"golang.org/x/crypto/argon2"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// KDF names the PIN key derivation and its cost. The parameters are stored
// with every PIN wrap, so raising the defaults later only needs the PIN to
// be set again; older wraps keep working.
//
// Argon2id (RFC 9106) is used rather than PBKDF2 because token PINs are short
// (EP11 allows 4..8 characters): against an attacker holding a copy of the
// database the retry counter is no protection, only the derivation cost is,
// and a memory-hard function makes GPU/ASIC guessing far more expensive than
// an iterated hash of the same wall-clock cost. It also takes the PIN as a
// byte slice the caller can zero (crypto/pbkdf2 takes a string).
type KDF struct {
	// Algorithm is "argon2id", the only one supported.
	Algorithm string
	// Time is the number of passes over the memory (>= 1).
	Time uint32
	// MemoryKiB is the memory cost in KiB (>= 8*Threads, <= 1 GiB).
	MemoryKiB uint32
	// Threads is the parallelism (1..16). The derived key depends on it.
	Threads uint8
}

// DefaultKDF is the OWASP-recommended Argon2id setting (19 MiB, 2 passes,
// 1 lane): about 20-40 ms per derivation on a current x86 core. A login
// costs one derivation; SoftHSMv2's iterated hash costs well under 1 ms, so
// logins are slower than SoftHSMv2's by that amount, in exchange for an
// offline PIN search that costs the attacker 19 MiB and tens of
// milliseconds per guess. Object operations do not use the KDF at all.
var DefaultKDF = KDF{Algorithm: KDFArgon2id, Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

// KDFArgon2id is the Argon2id algorithm name.
const KDFArgon2id = "argon2id"

const (
	maxKDFMemoryKiB = 1 << 20
	maxKDFTime      = 64
	maxKDFThreads   = 16
	saltLen         = 32
	keyLen          = 32
	gcmNonceLen     = 12
	gcmTagLen       = 16
)

func (k KDF) validate() error {
	if k.Algorithm != KDFArgon2id {
		return errclass.Newh(errclass.InvalidArgument, `use store.DefaultKDF or Algorithm "argon2id"`, "PIN KDF algorithm %q is not supported", k.Algorithm)
	}
	if k.Time < 1 || k.Time > maxKDFTime || k.Threads < 1 || k.Threads > maxKDFThreads ||
		k.MemoryKiB < 8*uint32(k.Threads) || k.MemoryKiB > maxKDFMemoryKiB {
		return errclass.Newh(errclass.InvalidArgument, "time 1..64, threads 1..16, memory 8*threads KiB..1 GiB",
			"PIN KDF parameters time=%d memory=%dKiB threads=%d are out of range", k.Time, k.MemoryKiB, k.Threads)
	}
	return nil
}

// derive returns the key-encryption key for pin. The caller zeroes it.
func (k KDF) derive(pin, salt []byte) []byte {
	return argon2.IDKey(pin, salt, k.Time, k.MemoryKiB, k.Threads, keyLen)
}

// wrapAAD binds a PIN wrap to the token, the user, the data key's id and
// the KDF parameters, so no field of a pin row can be swapped or lowered
// without the unwrap failing.
func wrapAAD(tokenID []byte, user UserType, dkID []byte, k KDF, salt []byte) []byte {
	b := make([]byte, 0, 96+len(salt))
	b = append(b, "pkcshsm/store/dk-wrap/v1\x00"...)
	b = append(b, tokenID...)
	b = append(b, byte(user))
	b = append(b, dkID...)
	b = append(b, k.Algorithm...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, k.Time)
	b = binary.BigEndian.AppendUint32(b, k.MemoryKiB)
	b = append(b, k.Threads)
	b = append(b, salt...)
	return b
}

// wrapKey seals the data key under kek; the result is nonce||ciphertext||tag.
func wrapKey(kek, dk, aad []byte) []byte {
	a := newGCM(kek)
	nonce := randomBytes(gcmNonceLen)
	return a.Seal(nonce, nonce, dk, aad)
}

// unwrapKey opens a wrap; ok is false for a wrong PIN (or a tampered row,
// which is indistinguishable by design).
func unwrapKey(kek, wrapped, aad []byte) (dk []byte, ok bool) {
	if len(wrapped) != gcmNonceLen+keyLen+gcmTagLen {
		return nil, false
	}
	a := newGCM(kek)
	dk, err := a.Open(nil, wrapped[:gcmNonceLen], wrapped[gcmNonceLen:], aad)
	return dk, err == nil
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("store: AES key of wrong size") // all keys here are 32 bytes by construction
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic("store: GCM unavailable")
	}
	return a
}

func zero(b []byte) { clear(b) }
