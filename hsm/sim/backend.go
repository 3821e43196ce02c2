package sim

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// seal enciphers material as a secure key of spec under the CURRENT master
// key of the right type on q.
func (rt *queueRT) seal(spec hsm.KeySpec, material []byte, field [hsm.SessionIDSize]byte) ([]byte, error) {
	mode := apqn.Mode(rt.q.Mode)
	t, err := hsm.MKTypeFor(mode, spec.Type)
	if err != nil {
		return nil, err
	}
	layout, err := hsm.DefaultLayout(mode, spec.Type)
	if err != nil {
		return nil, err
	}
	return sealUnder(rt, t, rt.mk[t].cur, layout, spec, material, "CURRENT", field)
}

func sealUnder(rt *queueRT, t mkvp.Type, k *mkKey, layout hsm.Layout, spec hsm.KeySpec, material []byte, reg string, field [hsm.SessionIDSize]byte) ([]byte, error) {
	if k == nil {
		return nil, errclass.Newh(errclass.FailedPrecondition, "load and activate a master key with hsmsim",
			"APQN %s has no valid %s %s master key: %w", rt.q.ID, reg, t, hsm.ErrRegisterState)
	}
	info := hsm.BlobInfo{Mode: apqn.Mode(rt.q.Mode), MKType: t, Pattern: k.pattern, KeyType: spec.Type, Bits: spec.Bits, Session: field}
	return hsm.SealBlob(info, layout, k.aead, rand.Reader, material)
}

// open finds the register that enciphers blob on q and returns the clear
// material: CCA CURRENT or OLD, EP11 CURRENT only.
func (rt *queueRT) open(blob []byte) (hsm.Blob, []byte, error) {
	b, err := hsm.DecodeBlob(blob)
	if err != nil {
		return hsm.Blob{}, nil, err
	}
	if b.Mode != apqn.Mode(rt.q.Mode) {
		return hsm.Blob{}, nil, errclass.New(errclass.InvalidArgument, "APQN %s is %s, the key is a %s key: %w",
			rt.q.ID, apqn.Mode(rt.q.Mode), b.Mode, hsm.ErrWrongMode)
	}
	regs := rt.mk[b.MKType]
	var k *mkKey
	switch {
	case regs.cur != nil && regs.cur.pattern == b.Pattern:
		k = regs.cur
	case regs.old != nil && regs.old.pattern == b.Pattern:
		k = regs.old
	default:
		return hsm.Blob{}, nil, wrongMK(rt, b)
	}
	b, material, err := hsm.OpenBlob(blob, k.aead)
	if err != nil {
		return hsm.Blob{}, nil, err
	}
	if err := rt.checkBound(b); err != nil {
		return hsm.Blob{}, nil, err
	}
	return b, material, nil
}

func wrongMK(rt *queueRT, b hsm.Blob) error {
	where := "CURRENT or OLD"
	if b.MKType == mkvp.EP11WK {
		where = "CURRENT"
	}
	return errclass.New(errclass.FailedPrecondition, "APQN %s: the key's %s master key %s is not the %s one: %w",
		rt.q.ID, b.MKType, b.Pattern, where, hsm.ErrWrongMK)
}

// GenerateKey makes a secret key under the CURRENT master key of q.
func (h *HSM) GenerateKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	if spec.Type != hsm.KeyAES && spec.Type != hsm.KeyDES3 && spec.Type != hsm.KeyHMAC {
		return nil, errclass.Newh(errclass.InvalidArgument, "use GenerateKeyPair for EC and RSA keys",
			"%s is not a secret key type", spec.Type)
	}
	rt, field, err := h.bindFor(ctx, q)
	if err != nil {
		return nil, err
	}
	k := make([]byte, spec.Bits/8)
	if _, err := rand.Read(k); err != nil {
		return nil, errclass.New(errclass.Internal, "random key: %w", err)
	}
	return rt.seal(spec, k, field)
}

// GenerateKeyPair makes an EC or RSA key pair under the CURRENT master key.
func (h *HSM) GenerateKeyPair(ctx context.Context, q apqn.ID, spec hsm.KeySpec) (priv, pub []byte, err error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, nil, err
	}
	var key any
	switch spec.Type {
	case hsm.KeyEC:
		rt, field, err := h.bindFor(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		k, err := ecdsa.GenerateKey(curveFor(spec.Bits), rand.Reader)
		if err != nil {
			return nil, nil, errclass.New(errclass.Internal, "generate EC key: %w", err)
		}
		key = k
		return sealPair(rt, spec, key, field)
	case hsm.KeyRSA:
		rt, field, err := h.bindFor(ctx, q)
		if err != nil {
			return nil, nil, err
		}
		k, err := rsa.GenerateKey(rand.Reader, spec.Bits)
		if err != nil {
			return nil, nil, errclass.New(errclass.Internal, "generate RSA key: %w", err)
		}
		key = k
		return sealPair(rt, spec, key, field)
	}
	return nil, nil, errclass.Newh(errclass.InvalidArgument, "use GenerateKey for secret keys",
		"%s is not a key pair type", spec.Type)
}

func sealPair(rt *queueRT, spec hsm.KeySpec, key any, field [hsm.SessionIDSize]byte) ([]byte, []byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, errclass.New(errclass.Internal, "encode private key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(publicOf(key))
	if err != nil {
		return nil, nil, errclass.New(errclass.Internal, "encode public key: %w", err)
	}
	blob, err := rt.seal(spec, der, field)
	if err != nil {
		return nil, nil, err
	}
	return blob, pub, nil
}

func curveFor(bits int) elliptic.Curve {
	if bits == 384 {
		return elliptic.P384()
	}
	return elliptic.P256()
}

func publicOf(key any) any {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	case *rsa.PrivateKey:
		return &k.PublicKey
	}
	return nil
}

// ImportKey enciphers clear key material under the CURRENT master key.
func (h *HSM) ImportKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec, material []byte) ([]byte, error) {
	canon, err := checkMaterial(spec, material)
	if err != nil {
		return nil, err
	}
	rt, field, err := h.bindFor(ctx, q)
	if err != nil {
		return nil, err
	}
	return rt.seal(spec, canon, field)
}

// checkMaterial validates clear key material for spec and returns the form
// sealed in blobs (raw secret, PKCS#8 DER).
func checkMaterial(spec hsm.KeySpec, material []byte) ([]byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	switch spec.Type {
	case hsm.KeyAES, hsm.KeyDES3, hsm.KeyHMAC:
		if len(material)*8 != spec.Bits {
			return nil, errclass.New(errclass.InvalidArgument, "%s key material has %d bits, the spec says %d: %w",
				spec.Type, len(material)*8, spec.Bits, hsm.ErrBadData)
		}
		return append([]byte(nil), material...), nil
	}
	key, err := x509.ParsePKCS8PrivateKey(material)
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "private key is not PKCS#8 DER: %w", hsm.ErrBadData)
	}
	if keySpecOf(key) != spec {
		return nil, errclass.New(errclass.InvalidArgument, "private key is %s %d, the spec says %s %d: %w",
			keySpecOf(key).Type, keySpecOf(key).Bits, spec.Type, spec.Bits, hsm.ErrBadData)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, errclass.New(errclass.Internal, "encode private key: %w", err)
	}
	return der, nil
}

func keySpecOf(key any) hsm.KeySpec {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return hsm.KeySpec{Type: hsm.KeyEC, Bits: k.Curve.Params().BitSize}
	case *rsa.PrivateKey:
		return hsm.KeySpec{Type: hsm.KeyRSA, Bits: k.N.BitLen()}
	}
	return hsm.KeySpec{}
}

// PublicKey returns the SubjectPublicKeyInfo of a private key blob.
func (h *HSM) PublicKey(ctx context.Context, q apqn.ID, key []byte) ([]byte, error) {
	k, err := h.useKey(ctx, q, key)
	if err != nil {
		return nil, err
	}
	if k.priv == nil {
		return nil, errclass.New(errclass.InvalidArgument, "%s keys have no public key: %w", k.blob.KeyType, hsm.ErrMechanism)
	}
	pub, err := x509.MarshalPKIXPublicKey(publicOf(k.priv))
	if err != nil {
		return nil, errclass.New(errclass.Internal, "encode public key: %w", err)
	}
	return pub, nil
}

// Reencipher moves a blob to another master key register of q.
func (h *HSM) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	rt, err := h.begin(ctx, q)
	if err != nil {
		return nil, err
	}
	b, err := hsm.DecodeBlob(blob)
	if err != nil {
		return nil, err
	}
	mode := apqn.Mode(rt.q.Mode)
	if b.Mode != mode {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s is %s, the key is a %s key: %w",
			q, mode, b.Mode, hsm.ErrWrongMode)
	}
	regs := rt.mk[b.MKType]
	var from, to *mkKey
	var toName string
	switch d {
	case hsm.ToNew:
		if regs.new == nil || (mode == apqn.ModeEP11 && rt.info.MK[b.MKType].New.State != apqn.StateCommitted) {
			want := "full"
			if mode == apqn.ModeEP11 {
				want = "committed"
			}
			return nil, regStateErr(q, b.MKType, "load the new master key completely (EP11: and commit it) first",
				"re-encipher to NEW needs NEW %s, it is %s", want, rt.info.MK[b.MKType].New.State)
		}
		if regs.cur == nil || regs.cur.pattern != b.Pattern {
			return nil, wrongMKFor(q, b, "CURRENT")
		}
		from, to, toName = regs.cur, regs.new, "NEW"
	case hsm.FromOld:
		if mode == apqn.ModeEP11 {
			return nil, errclass.New(errclass.InvalidArgument, "EP11 has no OLD register to re-encipher from: %w", hsm.ErrWrongMode)
		}
		if regs.old == nil || regs.old.pattern != b.Pattern {
			return nil, wrongMKFor(q, b, "OLD")
		}
		from, to, toName = regs.old, regs.cur, "CURRENT"
	default:
		return nil, errclass.New(errclass.InvalidArgument, "unknown re-encipher direction %d", d)
	}
	_, material, err := hsm.OpenBlob(blob, from.aead)
	if err != nil {
		return nil, err
	}
	// A bound key stays bound to its session: the session must be logged
	// in here, and the new blob carries the session's field under the new
	// wrapping key.
	var field [hsm.SessionIDSize]byte
	if b.Bound() {
		if err := rt.checkBound(b); err != nil {
			return nil, err
		}
		field = fieldOf(pinBlob(to.key, rt.sessions[b.Session]))
	}
	return sealUnder(rt, b.MKType, to, b.Layout, hsm.KeySpec{Type: b.KeyType, Bits: b.Bits}, material, toName, field)
}

func wrongMKFor(q apqn.ID, b hsm.Blob, reg string) error {
	return errclass.New(errclass.FailedPrecondition, "APQN %s: the key's %s master key %s is not the %s one: %w",
		q, b.MKType, b.Pattern, reg, hsm.ErrWrongMK)
}
