package tokenlib

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// This file is the one place that reads and writes secure key blobs
// (CKA_IBM_OPAQUE). A master key change adds CKA_IBM_OPAQUE_REENC and
// CKA_IBM_OPAQUE_OLD handling here: which blob to use on which APQN, and
// how blobs move between the three attributes.

// blobOf returns the secure key of a secret or private key object.
func blobOf(o *object) ([]byte, error) {
	b := o.attrs[ck.CKA_IBM_OPAQUE]
	if len(b) == 0 {
		return nil, newErr(ck.CKR_KEY_HANDLE_INVALID, errclass.DataLoss, "key object %d has no secure key", o.handle)
	}
	return b, nil
}

// useKey runs fn with the key's blob on one of the token's APQNs, moving on
// to the next APQN when one is unavailable.
func (t *token) useKey(ctx context.Context, o *object, fn func(q apqn.ID, blob []byte) error) error {
	return t.useKeys(ctx, []*object{o}, func(q apqn.ID, blobs [][]byte) error { return fn(q, blobs[0]) })
}

// useKeys is useKey for operations on several keys at once (key wrap): the
// blobs all go to the same APQN.
//
// During a master key change an APQN may refuse a blob because its master
// key is not active there: an EP11 blob under the old wrapping key after the
// APQN activated the new one, or a blob under the new key on an APQN that
// has not activated it yet. Then the keys' REENC blobs are tried on the same
// APQN, and failing that the next APQN, so applications keep working while
// the officer activates the APQNs one by one. Nothing waits.
func (t *token) useKeys(ctx context.Context, os []*object, fn func(q apqn.ID, blobs [][]byte) error) error {
	blobs := make([][]byte, len(os))
	var reenc [][]byte
	for i, o := range os {
		b, err := blobOf(o)
		if err != nil {
			return err
		}
		blobs[i] = b
		if r := o.attrs[ck.CKA_IBM_OPAQUE_REENC]; len(r) > 0 {
			if reenc == nil {
				reenc = slices.Clone(blobs[:i])
			}
			reenc = append(reenc, r)
		} else if reenc != nil {
			reenc = append(reenc, b)
		}
	}
	return t.onAPQN(ctx, func(q apqn.ID) error {
		err := fn(q, blobs)
		err = t.ep11Retry(ctx, q, err, func() error { return fn(q, blobs) })
		if err == nil || !errors.Is(err, hsm.ErrWrongMK) {
			return err
		}
		if reenc != nil {
			err = fn(q, reenc)
			if err == nil || !errors.Is(err, hsm.ErrWrongMK) {
				return err
			}
		}
		// Not usable here: let onAPQN try the next APQN.
		return errclass.As(errclass.Unavailable, err)
	})
}

// newBlob runs a backend call that makes a secure key, and checks that the
// result is enciphered under the token's expected master key (or the new
// one of an active master key change). While a change is active the key
// also gets its blob under the new master key at once.
func (t *token) newBlob(ctx context.Context, fn func(q apqn.ID) ([]byte, error)) (keyBlobs, error) {
	var kb keyBlobs
	err := t.onAPQN(ctx, func(q apqn.ID) error {
		for range 3 {
			b, err := fn(q)
			// An EP11 session q lost, or a pin blob of the wrapping key q
			// had until the officer's set a moment ago: log in again and
			// make the key once more.
			err = t.ep11Retry(ctx, q, err, func() error {
				var e error
				b, e = fn(q)
				return e
			})
			if err != nil {
				return err
			}
			if err := t.checkNewBlob(b); err != nil {
				return err
			}
			kb, err = t.withReenc(ctx, q, b)
			if !errors.Is(err, errRetryCreate) {
				return err
			}
		}
		return errRetryCreate
	})
	if err != nil {
		return keyBlobs{}, hsmErr(err, "make secure key")
	}
	return kb, nil
}

// setBlob stores a new key's secure keys in its template.
func setBlob(t template, kb keyBlobs) {
	t[ck.CKA_IBM_OPAQUE] = kb.opaque
	if kb.reenc != nil {
		t[ck.CKA_IBM_OPAQUE_REENC] = kb.reenc
	}
}

// setCheckValue computes CKA_CHECK_VALUE of a new AES or DES3 key: the
// first three bytes of the encryption of a zero block (PKCS#11 v2.40). It
// identifies the key without revealing it and stays the same when the
// blob is re-enciphered under a new master key. Generic secrets get an
// empty value (their check value would need the clear key).
func (t *token) setCheckValue(ctx context.Context, tmpl template, kt ck.KeyType, blob []byte) error {
	var m hsm.Mechanism
	var p hsm.Params
	var block []byte
	switch kt {
	case ck.CKK_AES:
		m, block = hsm.MechAESECB, make([]byte, 16)
	case ck.CKK_DES3:
		m, block, p.IV = hsm.MechDES3CBC, make([]byte, 8), make([]byte, 8)
	default:
		tmpl[ck.CKA_CHECK_VALUE] = []byte{}
		return nil
	}
	// The new key may be under a master key that only some APQNs have
	// active (a master key change in progress): use it as any key is used.
	k := &object{attrs: template{ck.CKA_IBM_OPAQUE: blob}}
	if r := tmpl[ck.CKA_IBM_OPAQUE_REENC]; len(r) > 0 {
		k.attrs[ck.CKA_IBM_OPAQUE_REENC] = r
	}
	var out []byte
	err := t.useKey(ctx, k, func(q apqn.ID, b []byte) error {
		var err error
		out, err = t.lib.backend.Encrypt(ctx, q, b, m, p, block)
		return err
	})
	if err != nil {
		return hsmErr(err, "compute the key check value")
	}
	if len(out) < 3 {
		return newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "the HSM returned %d bytes for the key check value", len(out))
	}
	tmpl[ck.CKA_CHECK_VALUE] = bytes.Clone(out[:3])
	return nil
}

// hsmErr gives backend errors their CK_RV, keeping class and message.
func hsmErr(err error, what string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return wrapRV(ck.RVFromError(err), err, "%s", what)
}

// RestoreOldBlob moves CKA_IBM_OPAQUE_OLD back into CKA_IBM_OPAQUE (the
// blob under the previous master key, kept by a finalized master key
// change) and removes _OLD. Keys without CKA_IBM_OPAQUE_OLD are refused
// with CKR_KEY_HANDLE_INVALID and a FailedPrecondition class.
func (l *Library) RestoreOldBlob(h SessionHandle, oh ObjectHandle) error {
	return l.writeObject(h, oh, func(ctx context.Context, s *session, t *token, o *object) error {
		old := o.attrs[ck.CKA_IBM_OPAQUE_OLD]
		if len(old) == 0 {
			return newErrh(ck.CKR_KEY_HANDLE_INVALID, errclass.FailedPrecondition,
				"only keys of a finalized master key change keep an old secure key",
				"key %d (%q) has no CKA_IBM_OPAQUE_OLD", oh, o.label())
		}
		if err := t.checkWrite(s, o.isToken(), o.isPrivate()); err != nil {
			return err
		}
		na := o.attrs.clone()
		na[ck.CKA_IBM_OPAQUE] = old
		delete(na, ck.CKA_IBM_OPAQUE_OLD)
		if err := t.replaceLocked(ctx, o, na); err != nil {
			return err
		}
		t.log.Info().Uint("object", uint(oh)).Msg("old secure key restored")
		return nil
	})
}

// KeyBlobInfo returns what the header of a key's CKA_IBM_OPAQUE says: the
// master key type and pattern that encipher it, the key type and size.
func (l *Library) KeyBlobInfo(h SessionHandle, oh ObjectHandle) (hsm.BlobInfo, error) {
	o, err := l.readObject(h, oh)
	if err != nil {
		return hsm.BlobInfo{}, err
	}
	b, err := blobOf(o)
	if err != nil {
		return hsm.BlobInfo{}, err
	}
	info, err := hsm.Inspect(b)
	if err != nil {
		return hsm.BlobInfo{}, wrapRV(ck.CKR_DEVICE_ERROR, err, "key %d", oh)
	}
	return info, nil
}

// TokenAPQNs returns the current state of the APQNs the slot's token uses.
func (l *Library) TokenAPQNs(id SlotID) ([]hsm.QueueInfo, error) {
	t, err := l.token(id)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	p, err := t.hsmPool(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]hsm.QueueInfo, 0, len(p.ids))
	for _, q := range p.ids {
		qi, err := l.backend.Queue(ctx, q)
		if err != nil {
			return nil, hsmErr(err, "query APQN "+q.String())
		}
		out = append(out, qi)
	}
	return out, nil
}

// Curves by their DER OBJECT IDENTIFIER (CKA_EC_PARAMS namedCurve).
var (
	oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidP384 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
)

// curveOf reads CKA_EC_PARAMS.
func curveOf(params []byte) (elliptic.Curve, int, error) {
	switch {
	case bytes.Equal(params, oidP256):
		return elliptic.P256(), 256, nil
	case bytes.Equal(params, oidP384):
		return elliptic.P384(), 384, nil
	}
	return nil, 0, newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
		"use the DER OID of P-256 (06082a8648ce3d030107) or P-384 (06052b81040022)",
		"CKA_EC_PARAMS names an unsupported curve")
}

// ECParams returns the CKA_EC_PARAMS value of a named curve ("P-256",
// "P-384").
func ECParams(curve string) ([]byte, bool) {
	switch curve {
	case "P-256", "p256", "prime256v1", "secp256r1":
		return bytes.Clone(oidP256), true
	case "P-384", "p384", "secp384r1":
		return bytes.Clone(oidP384), true
	}
	return nil, false
}

// ECCurveBits returns the size of the named curve in CKA_EC_PARAMS.
func ECCurveBits(params []byte) (int, bool) {
	_, bits, err := curveOf(params)
	return bits, err == nil
}

// publicAttrs derives the public key attributes from a DER
// SubjectPublicKeyInfo.
func publicAttrs(spki []byte) (template, int, error) {
	pk, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, 0, newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "parse public key from the HSM: %v", err)
	}
	t := template{ck.CKA_PUBLIC_KEY_INFO: bytes.Clone(spki)}
	switch k := pk.(type) {
	case *rsa.PublicKey:
		t[ck.CKA_MODULUS] = k.N.Bytes()
		t[ck.CKA_PUBLIC_EXPONENT] = big.NewInt(int64(k.E)).Bytes()
		t[ck.CKA_MODULUS_BITS] = ulongBytes(uint(k.N.BitLen()))
		return t, k.N.BitLen(), nil
	case *ecdsa.PublicKey:
		bits := k.Curve.Params().BitSize
		if bits == 256 {
			t[ck.CKA_EC_PARAMS] = bytes.Clone(oidP256)
		} else if bits == 384 {
			t[ck.CKA_EC_PARAMS] = bytes.Clone(oidP384)
		} else {
			return nil, 0, newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "unsupported curve from the HSM")
		}
		pt, err := k.Bytes()
		if err != nil {
			return nil, 0, newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "encode EC point: %v", err)
		}
		der, _ := asn1.Marshal(pt)
		t[ck.CKA_EC_POINT] = der
		return t, bits, nil
	}
	return nil, 0, newErr(ck.CKR_DEVICE_ERROR, errclass.Internal, "unsupported public key type from the HSM")
}

// publicKeyOf returns the Go public key of a public (or private) key object.
func publicKeyOf(o *object) (any, error) {
	spki := o.attrs[ck.CKA_PUBLIC_KEY_INFO]
	if len(spki) == 0 {
		return nil, newErr(ck.CKR_KEY_HANDLE_INVALID, errclass.DataLoss, "key %d has no public key info", o.handle)
	}
	pk, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, newErr(ck.CKR_KEY_HANDLE_INVALID, errclass.DataLoss, "key %d: stored public key is unreadable", o.handle)
	}
	return pk, nil
}

func requireKeyType(t template) (ck.KeyType, error) {
	v, ok := t.ulong(ck.CKA_KEY_TYPE)
	if !ok {
		return 0, newErrh(ck.CKR_TEMPLATE_INCOMPLETE, errclass.InvalidArgument,
			"add CKA_KEY_TYPE to the template", "a key template needs CKA_KEY_TYPE")
	}
	return ck.KeyType(v), nil
}

func incomplete(a ck.Attribute, why string) error {
	return newErrh(ck.CKR_TEMPLATE_INCOMPLETE, errclass.InvalidArgument,
		"add "+attrName(a)+" to the template", "%s is missing: %s", attrName(a), why)
}

func valueInvalid(a ck.Attribute, format string, args ...any) error {
	return newErr(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument, "%s: %s", attrName(a), fmt.Sprintf(format, args...))
}

func inconsistent(format string, args ...any) error {
	return newErr(ck.CKR_TEMPLATE_INCONSISTENT, errclass.InvalidArgument, format, args...)
}

// secretSpec checks a secret key type and length (bytes) and returns the
// backend key spec.
func (t *token) secretSpec(kt ck.KeyType, n int) (hsm.KeySpec, error) {
	switch kt {
	case ck.CKK_AES:
		if n != 16 && n != 24 && n != 32 {
			return hsm.KeySpec{}, valueInvalid(ck.CKA_VALUE_LEN, "AES keys are 16, 24 or 32 bytes, not %d", n)
		}
		return hsm.KeySpec{Type: hsm.KeyAES, Bits: 8 * n}, nil
	case ck.CKK_DES3:
		if n != 24 {
			return hsm.KeySpec{}, valueInvalid(ck.CKA_VALUE_LEN, "DES3 keys are 24 bytes, not %d", n)
		}
		return hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, nil
	case ck.CKK_GENERIC_SECRET:
		maxLen := int(t.mechs[ck.CKM_GENERIC_SECRET_KEY_GEN].info.MaxKeySize)
		if n < 10 || n > maxLen {
			// Outside the mechanism's key size range (its MechanismInfo).
			return hsm.KeySpec{}, newErrh(ck.CKR_KEY_SIZE_RANGE, errclass.InvalidArgument,
				fmt.Sprintf("use 10 to %d bytes", maxLen), "generic secret (HMAC) keys of %d bytes are not supported", n)
		}
		return hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 8 * n}, nil
	}
	return hsm.KeySpec{}, newErrh(ck.CKR_TEMPLATE_INCONSISTENT, errclass.InvalidArgument,
		"use CKK_AES, CKK_DES3 or CKK_GENERIC_SECRET", "secret keys of type %v are not supported", kt)
}

// importSecret turns CKA_VALUE of a secret key template into a secure key.
func (t *token) importSecret(ctx context.Context, tmpl template) error {
	kt, err := requireKeyType(tmpl)
	if err != nil {
		return err
	}
	val, ok := tmpl[ck.CKA_VALUE]
	if !ok {
		return incomplete(ck.CKA_VALUE, "a secret key object is created from its value; use GenerateKey to make a new key")
	}
	if vl, ok := tmpl.ulong(ck.CKA_VALUE_LEN); ok && int(vl) != len(val) {
		return inconsistent("CKA_VALUE_LEN %d does not match the %d-byte CKA_VALUE", vl, len(val))
	}
	spec, err := t.secretSpec(kt, len(val))
	if err != nil {
		return err
	}
	blob, err := t.newBlob(ctx, func(q apqn.ID) ([]byte, error) {
		return t.lib.backend.ImportKey(ctx, q, spec, val)
	})
	if err != nil {
		return err
	}
	delete(tmpl, ck.CKA_VALUE)
	tmpl[ck.CKA_VALUE_LEN] = ulongBytes(uint(len(val)))
	setBlob(tmpl, blob)
	return t.setCheckValue(ctx, tmpl, kt, blob.opaque)
}

// importPrivate turns the clear components of a private key template into
// a secure key (EC: CKA_EC_PARAMS and CKA_VALUE; RSA: modulus, exponents
// and primes).
func (t *token) importPrivate(ctx context.Context, tmpl template) error {
	kt, err := requireKeyType(tmpl)
	if err != nil {
		return err
	}
	var priv any
	var spec hsm.KeySpec
	switch kt {
	case ck.CKK_EC:
		params, ok := tmpl[ck.CKA_EC_PARAMS]
		if !ok {
			return incomplete(ck.CKA_EC_PARAMS, "an EC private key needs its curve")
		}
		curve, bits, err := curveOf(params)
		if err != nil {
			return err
		}
		d, ok := tmpl[ck.CKA_VALUE]
		if !ok {
			return incomplete(ck.CKA_VALUE, "an EC private key needs its private value")
		}
		size := (bits + 7) / 8
		if len(d) == 0 || len(d) > size {
			return valueInvalid(ck.CKA_VALUE, "EC private value has %d bytes, want at most %d", len(d), size)
		}
		k, err := ecdsa.ParseRawPrivateKey(curve, append(make([]byte, size-len(d)), d...))
		if err != nil {
			return valueInvalid(ck.CKA_VALUE, "not a valid private key for the curve")
		}
		priv, spec = k, hsm.KeySpec{Type: hsm.KeyEC, Bits: bits}
	case ck.CKK_RSA:
		need := []ck.Attribute{ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT, ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2}
		for _, a := range need {
			if len(tmpl[a]) == 0 {
				return incomplete(a, "an RSA private key is imported from modulus, exponents and primes")
			}
		}
		e := new(big.Int).SetBytes(tmpl[ck.CKA_PUBLIC_EXPONENT])
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
			return valueInvalid(ck.CKA_PUBLIC_EXPONENT, "exponent out of range")
		}
		k := &rsa.PrivateKey{
			PublicKey: rsa.PublicKey{N: new(big.Int).SetBytes(tmpl[ck.CKA_MODULUS]), E: int(e.Int64())},
			D:         new(big.Int).SetBytes(tmpl[ck.CKA_PRIVATE_EXPONENT]),
			Primes:    []*big.Int{new(big.Int).SetBytes(tmpl[ck.CKA_PRIME_1]), new(big.Int).SetBytes(tmpl[ck.CKA_PRIME_2])},
		}
		if err := k.Validate(); err != nil {
			return valueInvalid(ck.CKA_MODULUS, "the RSA components do not form a valid key")
		}
		bits := k.N.BitLen()
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return valueInvalid(ck.CKA_MODULUS, "RSA keys are 2048, 3072 or 4096 bits, not %d", bits)
		}
		k.Precompute()
		priv, spec = k, hsm.KeySpec{Type: hsm.KeyRSA, Bits: bits}
	default:
		return inconsistent("private keys of type %v are not supported (CKK_EC, CKK_RSA)", kt)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return newErr(ck.CKR_GENERAL_ERROR, errclass.Internal, "encode private key: %v", err)
	}
	defer clear(der)
	blob, err := t.newBlob(ctx, func(q apqn.ID) ([]byte, error) {
		return t.lib.backend.ImportKey(ctx, q, spec, der)
	})
	if err != nil {
		return err
	}
	spki, _ := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	pub, _, err := publicAttrs(spki)
	if err != nil {
		return err
	}
	for a := range keyMaterial {
		delete(tmpl, a)
	}
	delete(pub, ck.CKA_MODULUS_BITS)
	delete(pub, ck.CKA_EC_POINT)
	for a, v := range pub {
		tmpl[a] = v
	}
	setBlob(tmpl, blob)
	return nil
}

// completePublic checks a public key template and adds the derived
// attributes (CKA_PUBLIC_KEY_INFO, CKA_MODULUS_BITS).
func completePublic(tmpl template) error {
	kt, err := requireKeyType(tmpl)
	if err != nil {
		return err
	}
	var pk any
	switch kt {
	case ck.CKK_RSA:
		for _, a := range []ck.Attribute{ck.CKA_MODULUS, ck.CKA_PUBLIC_EXPONENT} {
			if len(tmpl[a]) == 0 {
				return incomplete(a, "an RSA public key needs modulus and public exponent")
			}
		}
		e := new(big.Int).SetBytes(tmpl[ck.CKA_PUBLIC_EXPONENT])
		n := new(big.Int).SetBytes(tmpl[ck.CKA_MODULUS])
		if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return valueInvalid(ck.CKA_PUBLIC_EXPONENT, "exponent out of range")
		}
		if n.BitLen() < 1024 || n.BitLen() > 4096 || n.Bit(0) == 0 {
			return valueInvalid(ck.CKA_MODULUS, "modulus of %d bits is not supported (1024..4096)", n.BitLen())
		}
		pk = &rsa.PublicKey{N: n, E: int(e.Int64())}
	case ck.CKK_EC:
		params, ok := tmpl[ck.CKA_EC_PARAMS]
		if !ok {
			return incomplete(ck.CKA_EC_PARAMS, "an EC public key needs its curve")
		}
		curve, _, err := curveOf(params)
		if err != nil {
			return err
		}
		pt, ok := tmpl[ck.CKA_EC_POINT]
		if !ok {
			return incomplete(ck.CKA_EC_POINT, "an EC public key needs its point")
		}
		var raw []byte
		if rest, err := asn1.Unmarshal(pt, &raw); err != nil || len(rest) != 0 {
			raw = pt // accept the raw uncompressed point as well
		}
		k, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
		if err != nil {
			return valueInvalid(ck.CKA_EC_POINT, "not an uncompressed point on the curve")
		}
		pk = k
	default:
		return inconsistent("public keys of type %v are not supported (CKK_EC, CKK_RSA)", kt)
	}
	spki, err := x509.MarshalPKIXPublicKey(pk)
	if err != nil {
		return newErr(ck.CKR_GENERAL_ERROR, errclass.Internal, "encode public key: %v", err)
	}
	pub, _, err := publicAttrs(spki)
	if err != nil {
		return err
	}
	for a, v := range pub {
		tmpl[a] = v
	}
	return nil
}
