// Package pubkey verifies signatures with a public key given as a DER
// SubjectPublicKeyInfo. A public key holds no secret, so both host-library
// backends check signatures against a plain public key in software: the
// CCA verbs and EP11 functions take their own public key formats (an
// external PKA token, a MACed SPKI), which a token does not keep.
package pubkey

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Parse returns the public key of a DER SubjectPublicKeyInfo, or nil.
func Parse(der []byte) any {
	if len(der) == 0 || der[0] != 0x30 {
		return nil
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil
	}
	return k
}

// Verify checks sig over data (a digest, or a raw DigestInfo for RSA-PKCS
// without a hash) with pub for ECDSA (r‖s), RSA-PKCS and RSA-PSS.
func Verify(pub any, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	bad := errclass.New(errclass.InvalidArgument, "%s signature does not verify: %w", m, hsm.ErrSignature)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if m != hsm.MechECDSA {
			break
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n || !ecdsa.Verify(k, data, new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])) {
			return bad
		}
		return nil
	case *rsa.PublicKey:
		switch m {
		case hsm.MechRSAPKCS:
			if p.Hash != 0 && len(data) != p.Hash.Size() {
				return errclass.New(errclass.InvalidArgument, "RSA-PKCS %v digest of %d bytes: %w", p.Hash, len(data), hsm.ErrBadData)
			}
			if rsa.VerifyPKCS1v15(k, p.Hash, data, sig) != nil {
				return bad
			}
			return nil
		case hsm.MechRSAPSS:
			if !p.Hash.Available() || len(data) != p.Hash.Size() {
				return errclass.New(errclass.InvalidArgument, "RSA-PSS with hash %v and a %d-byte digest: %w", p.Hash, len(data), hsm.ErrMechanism)
			}
			if rsa.VerifyPSS(k, p.Hash, data, sig, &rsa.PSSOptions{SaltLength: p.SaltLen, Hash: p.Hash}) != nil {
				return bad
			}
			return nil
		}
	}
	return errclass.New(errclass.InvalidArgument, "%s cannot verify with this public key: %w", m, hsm.ErrMechanism)
}

// EncryptOAEP encrypts data for an RSA public key with OAEP (the hash of
// p, also for MGF1, and p's label).
func EncryptOAEP(pub any, p hsm.Params, data []byte) ([]byte, error) {
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errclass.New(errclass.InvalidArgument, "RSA-OAEP needs an RSA key: %w", hsm.ErrMechanism)
	}
	if !p.Hash.Available() {
		return nil, errclass.New(errclass.InvalidArgument, "RSA-OAEP with hash %v: %w", p.Hash, hsm.ErrMechanism)
	}
	out, err := rsa.EncryptOAEP(p.Hash.New(), rand.Reader, k, data, p.Label)
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "RSA-OAEP: %v: %w", err, hsm.ErrBadData)
	}
	return out, nil
}
