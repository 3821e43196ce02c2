package tokenlib

import (
	"context"
	"math/big"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// defaultAttr sets a to v when absent and reports a conflicting value.
func defaultUlong(t template, a ck.Attribute, v uint) error {
	if have, ok := t.ulong(a); ok {
		if have != v {
			return inconsistent("%s is %d, but the mechanism makes %d", attrName(a), have, v)
		}
		return nil
	}
	t[a] = ulongBytes(v)
	return nil
}

func noParam(m Mechanism) error {
	if m.Param == nil {
		return nil
	}
	if b, ok := m.Param.([]byte); ok && len(b) == 0 {
		return nil
	}
	return paramErr(m.Type, "%v takes no parameter", m.Type)
}

// genMech checks that the token implements m for key generation.
func (t *token) genMech(m Mechanism, flag ck.Flags) (mechSpec, error) {
	spec, ok := t.mechs[m.Type]
	if !ok || spec.info.Flags&flag == 0 {
		return mechSpec{}, errMechanism(m.Type, "generate keys")
	}
	return spec, noParam(m)
}

// GenerateKey makes a secret key in the HSM (C_GenerateKey):
// CKM_AES_KEY_GEN (CKA_VALUE_LEN 16, 24 or 32), CKM_DES3_KEY_GEN,
// CKM_GENERIC_SECRET_KEY_GEN (CKA_VALUE_LEN in bytes, for HMAC).
func (l *Library) GenerateKey(h SessionHandle, m Mechanism, attrs []Attribute) (ObjectHandle, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	t := s.tok
	spec, err := t.genMech(m, ck.CKF_GENERATE)
	if err != nil {
		return 0, err
	}
	tmpl, err := parseTemplate(attrs)
	if err != nil {
		return 0, err
	}
	if err := defaultUlong(tmpl, ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)); err != nil {
		return 0, err
	}
	if err := defaultUlong(tmpl, ck.CKA_KEY_TYPE, uint(spec.keyType)); err != nil {
		return 0, err
	}
	if tmpl.has(ck.CKA_VALUE) {
		return 0, inconsistent("CKA_VALUE cannot be given when the HSM generates the key")
	}
	if err := checkAttrs(ck.CKO_SECRET_KEY, tmpl, nil); err != nil {
		return 0, err
	}
	n, ok := tmpl.ulong(ck.CKA_VALUE_LEN)
	if spec.keyType == ck.CKK_DES3 && !ok {
		n, ok = 24, true
	}
	if !ok {
		return 0, incomplete(ck.CKA_VALUE_LEN, "say how many bytes the key has")
	}
	ks, err := t.secretSpec(spec.keyType, int(n))
	if err != nil {
		return 0, err
	}
	tmpl[ck.CKA_VALUE_LEN] = ulongBytes(n)
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := objectDefaults(tmpl, ck.CKO_SECRET_KEY); err != nil {
		return 0, err
	}
	if err := t.checkWrite(s, tmpl.boolOr(ck.CKA_TOKEN, false), tmpl.boolOr(ck.CKA_PRIVATE, true)); err != nil {
		return 0, err
	}
	ctx = t.ep11Bind(ctx, s, tmpl)
	blob, err := t.newBlob(ctx, func(q apqn.ID) ([]byte, error) { return l.backend.GenerateKey(ctx, q, ks) })
	if err != nil {
		return 0, err
	}
	setBlob(tmpl, blob)
	if err := t.setCheckValue(ctx, tmpl, spec.keyType, blob.opaque); err != nil {
		return 0, err
	}
	markGenerated(tmpl, m.Type)
	return t.insertLocked(ctx, s, tmpl)
}

// GenerateKeyPair makes an EC or RSA key pair in the HSM
// (C_GenerateKeyPair). EC: CKA_EC_PARAMS (P-256 or P-384 OID) in the
// public template. RSA: CKA_MODULUS_BITS (2048, 3072, 4096) in the public
// template, CKA_PUBLIC_EXPONENT absent or 65537.
func (l *Library) GenerateKeyPair(h SessionHandle, m Mechanism, pubAttrs, privAttrs []Attribute) (pub, priv ObjectHandle, err error) {
	s, err := l.session(h)
	if err != nil {
		return 0, 0, err
	}
	defer s.mu.Unlock()
	t := s.tok
	spec, err := t.genMech(m, ck.CKF_GENERATE_KEY_PAIR)
	if err != nil {
		return 0, 0, err
	}
	pt, err := parseTemplate(pubAttrs)
	if err != nil {
		return 0, 0, err
	}
	vt, err := parseTemplate(privAttrs)
	if err != nil {
		return 0, 0, err
	}
	for _, x := range []struct {
		t template
		c ck.ObjectClass
	}{{pt, ck.CKO_PUBLIC_KEY}, {vt, ck.CKO_PRIVATE_KEY}} {
		if err := defaultUlong(x.t, ck.CKA_CLASS, uint(x.c)); err != nil {
			return 0, 0, err
		}
		if err := defaultUlong(x.t, ck.CKA_KEY_TYPE, uint(spec.keyType)); err != nil {
			return 0, 0, err
		}
		if err := checkAttrs(x.c, x.t, nil); err != nil {
			return 0, 0, err
		}
		for a := range keyMaterial {
			if x.t.has(a) {
				return 0, 0, inconsistent("%s cannot be given when the HSM generates the key", attrName(a))
			}
		}
		for _, a := range []ck.Attribute{ck.CKA_MODULUS, ck.CKA_EC_POINT} {
			if x.t.has(a) {
				return 0, 0, inconsistent("%s cannot be given when the HSM generates the key", attrName(a))
			}
		}
	}
	var ks hsm.KeySpec
	switch spec.keyType {
	case ck.CKK_EC:
		params, ok := pt[ck.CKA_EC_PARAMS]
		if !ok {
			params, ok = vt[ck.CKA_EC_PARAMS]
		}
		if !ok {
			return 0, 0, incomplete(ck.CKA_EC_PARAMS, "name the curve in the public key template")
		}
		_, bits, err := curveOf(params)
		if err != nil {
			return 0, 0, err
		}
		if vp, ok := vt[ck.CKA_EC_PARAMS]; ok && string(vp) != string(params) {
			return 0, 0, inconsistent("the public and private templates name different curves")
		}
		ks = hsm.KeySpec{Type: hsm.KeyEC, Bits: bits}
	case ck.CKK_RSA:
		bits, ok := pt.ulong(ck.CKA_MODULUS_BITS)
		if !ok {
			return 0, 0, incomplete(ck.CKA_MODULUS_BITS, "say how large the modulus is")
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return 0, 0, &Error{rv: ck.CKR_KEY_SIZE_RANGE, err: errclass.Newh(errclass.InvalidArgument,
				"use 2048, 3072 or 4096", "RSA keys of %d bits are not supported", bits)}
		}
		if e, ok := pt[ck.CKA_PUBLIC_EXPONENT]; ok && new(big.Int).SetBytes(e).Cmp(big.NewInt(65537)) != 0 {
			return 0, 0, valueInvalid(ck.CKA_PUBLIC_EXPONENT, "the HSM makes keys with exponent 65537 only")
		}
		delete(vt, ck.CKA_PUBLIC_EXPONENT)
		ks = hsm.KeySpec{Type: hsm.KeyRSA, Bits: int(bits)}
	}
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := objectDefaults(pt, ck.CKO_PUBLIC_KEY); err != nil {
		return 0, 0, err
	}
	if err := objectDefaults(vt, ck.CKO_PRIVATE_KEY); err != nil {
		return 0, 0, err
	}
	if err := t.checkWrite(s, pt.boolOr(ck.CKA_TOKEN, false), pt.boolOr(ck.CKA_PRIVATE, false)); err != nil {
		return 0, 0, err
	}
	if err := t.checkWrite(s, vt.boolOr(ck.CKA_TOKEN, false), vt.boolOr(ck.CKA_PRIVATE, true)); err != nil {
		return 0, 0, err
	}
	ctx = t.ep11Bind(ctx, s, vt)
	var spki []byte
	blob, err := t.newBlob(ctx, func(q apqn.ID) ([]byte, error) {
		b, p, err := l.backend.GenerateKeyPair(ctx, q, ks)
		spki = p
		return b, err
	})
	if err != nil {
		return 0, 0, err
	}
	pa, _, err := publicAttrs(spki)
	if err != nil {
		return 0, 0, err
	}
	for a, v := range pa {
		pt[a] = v
		if a != ck.CKA_MODULUS_BITS && a != ck.CKA_EC_POINT {
			vt[a] = v
		}
	}
	setBlob(vt, blob)
	markGenerated(pt, m.Type)
	markGenerated(vt, m.Type)
	pub, err = t.insertLocked(ctx, s, pt)
	if err != nil {
		return 0, 0, err
	}
	priv, err = t.insertLocked(ctx, s, vt)
	if err != nil {
		if o, e := t.objectLocked(ctx, pub); e == nil {
			_ = t.removeLocked(ctx, o)
		}
		return 0, 0, err
	}
	return pub, priv, nil
}

// wrapLen is the AES key wrap output length for n bytes of key.
func wrapLen(m ck.Mechanism, n int) int {
	if m == ck.CKM_AES_KEY_WRAP_PAD {
		return (n+7)/8*8 + 8
	}
	return n + 8
}

// wrapMech checks that the token offers m for flag (CKF_WRAP or
// CKF_UNWRAP) and decodes its parameter.
func (t *token) wrapMech(m Mechanism, flag ck.Flags, what string) (mechSpec, hsm.Params, error) {
	spec, ok := t.mechs[m.Type]
	if !ok || spec.info.Flags&flag == 0 {
		return mechSpec{}, hsm.Params{}, errMechanism(m.Type, what)
	}
	p, err := hsmParams(m, spec)
	return spec, p, err
}

// WrapKey wraps a secret key under an AES key (C_WrapKey with
// CKM_AES_KEY_WRAP or CKM_AES_KEY_WRAP_PAD). The key must be extractable.
// out nil returns the length.
func (l *Library) WrapKey(h SessionHandle, m Mechanism, wrapping, key ObjectHandle, out []byte) (int, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	t := s.tok
	spec, p, err := t.wrapMech(m, ck.CKF_WRAP, "wrap keys")
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	t.mu.Lock()
	wk, err1 := t.objectLocked(ctx, wrapping)
	k, err2 := t.objectLocked(ctx, key)
	t.mu.Unlock()
	if err1 != nil {
		return 0, &Error{rv: ck.CKR_WRAPPING_KEY_HANDLE_INVALID, err: err1}
	}
	if err2 != nil {
		return 0, &Error{rv: ck.CKR_KEY_HANDLE_INVALID, err: err2}
	}
	for _, o := range []*object{wk, k} {
		if err := t.ep11CheckUse(ctx, s, o); err != nil {
			return 0, err
		}
	}
	if wk.class() != ck.CKO_SECRET_KEY || wk.keyType() != ck.CKK_AES {
		return 0, newErr(ck.CKR_WRAPPING_KEY_TYPE_INCONSISTENT, errclass.InvalidArgument, "the wrapping key must be an AES key")
	}
	if !wk.flag(ck.CKA_WRAP) {
		return 0, newErr(ck.CKR_KEY_FUNCTION_NOT_PERMITTED, errclass.PermissionDenied, "wrapping key %d has CKA_WRAP false", wrapping)
	}
	if k.class() != ck.CKO_SECRET_KEY {
		return 0, newErrh(ck.CKR_KEY_NOT_WRAPPABLE, errclass.InvalidArgument, "wrap secret keys only", "key %d is not a secret key", key)
	}
	if !k.attrs.boolOr(ck.CKA_EXTRACTABLE, true) {
		return 0, newErr(ck.CKR_KEY_UNEXTRACTABLE, errclass.PermissionDenied, "key %d has CKA_EXTRACTABLE false", key)
	}
	n, _ := k.attrs.ulong(ck.CKA_VALUE_LEN)
	if m.Type == ck.CKM_AES_KEY_WRAP && n%8 != 0 {
		return 0, newErrh(ck.CKR_KEY_SIZE_RANGE, errclass.InvalidArgument, "use CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP needs a key length that is a multiple of 8 bytes")
	}
	need := wrapLen(m.Type, int(n))
	if out == nil {
		return need, nil
	}
	if len(out) < need {
		return need, newErr(ck.CKR_BUFFER_TOO_SMALL, errclass.InvalidArgument, "output buffer has %d bytes, %d needed", len(out), need)
	}
	var res []byte
	err = t.useKeys(ctx, []*object{wk, k}, func(q apqn.ID, blobs [][]byte) error {
		var err error
		res, err = l.backend.WrapKey(ctx, q, blobs[0], spec.hsmMech, p, blobs[1])
		return err
	})
	if err != nil {
		return 0, hsmErr(err, "wrap key")
	}
	return copy(out, res), nil
}

// UnwrapKey unwraps a secret key into a new secure key object
// (C_UnwrapKey). The template needs CKA_CLASS CKO_SECRET_KEY and
// CKA_KEY_TYPE; CKA_VALUE_LEN is needed for CKM_AES_KEY_WRAP_PAD of keys
// whose length is not a multiple of 8.
func (l *Library) UnwrapKey(h SessionHandle, m Mechanism, unwrapping ObjectHandle, wrapped []byte, attrs []Attribute) (ObjectHandle, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	t := s.tok
	spec, p, err := t.wrapMech(m, ck.CKF_UNWRAP, "unwrap keys")
	if err != nil {
		return 0, err
	}
	tmpl, err := parseTemplate(attrs)
	if err != nil {
		return 0, err
	}
	c, err := checkClass(tmpl)
	if err != nil {
		return 0, err
	}
	if c != ck.CKO_SECRET_KEY {
		return 0, inconsistent("only secret keys can be unwrapped")
	}
	if err := checkAttrs(c, tmpl, nil); err != nil {
		return 0, err
	}
	if tmpl.has(ck.CKA_VALUE) {
		return 0, inconsistent("CKA_VALUE cannot be given to UnwrapKey")
	}
	kt, err := requireKeyType(tmpl)
	if err != nil {
		return 0, err
	}
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return 0, newErr(ck.CKR_WRAPPED_KEY_LEN_RANGE, errclass.InvalidArgument, "wrapped key of %d bytes is not a valid AES key wrap", len(wrapped))
	}
	n := len(wrapped) - 8
	if vl, ok := tmpl.ulong(ck.CKA_VALUE_LEN); ok {
		if int(vl) > n || (m.Type == ck.CKM_AES_KEY_WRAP && int(vl) != n) {
			return 0, inconsistent("CKA_VALUE_LEN %d does not fit a %d-byte wrapped key", vl, len(wrapped))
		}
		n = int(vl)
	}
	ks, err := t.secretSpec(kt, n)
	if err != nil {
		return 0, err
	}
	tmpl[ck.CKA_VALUE_LEN] = ulongBytes(uint(n))
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	uk, err := t.objectLocked(ctx, unwrapping)
	if err != nil {
		return 0, &Error{rv: ck.CKR_UNWRAPPING_KEY_HANDLE_INVALID, err: err}
	}
	if uk.class() != ck.CKO_SECRET_KEY || uk.keyType() != ck.CKK_AES {
		return 0, newErr(ck.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT, errclass.InvalidArgument, "the unwrapping key must be an AES key")
	}
	if !uk.flag(ck.CKA_UNWRAP) {
		return 0, newErr(ck.CKR_KEY_FUNCTION_NOT_PERMITTED, errclass.PermissionDenied, "unwrapping key %d has CKA_UNWRAP false", unwrapping)
	}
	if err := objectDefaults(tmpl, c); err != nil {
		return 0, err
	}
	if err := t.checkWrite(s, tmpl.boolOr(ck.CKA_TOKEN, false), tmpl.boolOr(ck.CKA_PRIVATE, true)); err != nil {
		return 0, err
	}
	if err := t.ep11CheckUse(ctx, s, uk); err != nil {
		return 0, err
	}
	ctx = t.ep11Bind(ctx, s, tmpl)
	var blob []byte
	var onQ apqn.ID
	err = t.useKey(ctx, uk, func(q apqn.ID, ub []byte) error {
		var err error
		blob, err = l.backend.UnwrapKey(ctx, q, ub, spec.hsmMech, p, wrapped, ks)
		onQ = q
		return err
	})
	if err != nil {
		if errclass.Of(err) == errclass.InvalidArgument {
			return 0, wrapRV(ck.CKR_WRAPPED_KEY_INVALID, err, "unwrap key")
		}
		return 0, hsmErr(err, "unwrap key")
	}
	if err := t.checkNewBlob(blob); err != nil {
		return 0, err
	}
	kb, err := t.withReenc(ctx, onQ, blob)
	if err != nil {
		return 0, hsmErr(err, "unwrap key")
	}
	setBlob(tmpl, kb)
	if err := t.setCheckValue(ctx, tmpl, kt, blob); err != nil {
		return 0, err
	}
	return t.insertLocked(ctx, s, tmpl)
}
