package sim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"math/big"
	"slices"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// usable is a key ready for a mechanism: a secure key opened on an APQN,
// or a public key given as DER SubjectPublicKeyInfo.
type usable struct {
	blob   hsm.Blob
	secret []byte
	priv   any // *ecdsa.PrivateKey, *rsa.PrivateKey
	pub    any // *ecdsa.PublicKey, *rsa.PublicKey
}

func (h *HSM) useKey(ctx context.Context, q apqn.ID, key []byte) (*usable, error) {
	rt, err := h.begin(ctx, q)
	if err != nil {
		return nil, err
	}
	return rt.useKey(key)
}

func (rt *queueRT) useKey(key []byte) (*usable, error) {
	if u := rt.opened.get(key); u != nil {
		return u, nil
	}
	u, err := rt.openKey(key)
	if err == nil && u.priv != nil {
		rt.opened.put(key, u)
	}
	return u, err
}

// openKey parses and unseals a key for useKey.
func (rt *queueRT) openKey(key []byte) (*usable, error) {
	if len(key) > 0 && key[0] == 0x30 {
		pub, err := x509.ParsePKIXPublicKey(key)
		if err != nil {
			return nil, errclass.New(errclass.InvalidArgument, "public key is not DER SubjectPublicKeyInfo: %w", hsm.ErrBadBlob)
		}
		u := &usable{pub: pub}
		switch pub.(type) {
		case *ecdsa.PublicKey:
			u.blob.KeyType = hsm.KeyEC
		case *rsa.PublicKey:
			u.blob.KeyType = hsm.KeyRSA
		default:
			return nil, errclass.New(errclass.InvalidArgument, "public key of type %T: %w", pub, hsm.ErrMechanism)
		}
		return u, nil
	}
	b, material, err := rt.open(key)
	if err != nil {
		return nil, err
	}
	u := &usable{blob: b}
	switch b.KeyType {
	case hsm.KeyEC, hsm.KeyRSA:
		k, err := x509.ParsePKCS8PrivateKey(material)
		if err != nil || keySpecOf(k) != (hsm.KeySpec{Type: b.KeyType, Bits: b.Bits}) {
			return nil, errclass.New(errclass.InvalidArgument, "sealed private key does not match its header: %w", hsm.ErrBadBlob)
		}
		u.priv, u.pub = k, publicOf(k)
	default:
		u.secret = material
	}
	return u, nil
}

func mechErr(m hsm.Mechanism, u *usable, what string) error {
	return errclass.New(errclass.InvalidArgument, "%s cannot %s with a %s key: %w", m, what, u.blob.KeyType, hsm.ErrMechanism)
}

func badData(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, "%w: "+format, append([]any{hsm.ErrBadData}, args...)...)
}

func paramErr(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, "%w: "+format, append([]any{hsm.ErrMechanism}, args...)...)
}

var _ hsm.Appender = (*HSM)(nil)

// Encrypt implements [hsm.Backend].
func (h *HSM) Encrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	return h.EncryptAppend(ctx, q, key, m, p, nil, data)
}

// Decrypt implements [hsm.Backend].
func (h *HSM) Decrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	return h.DecryptAppend(ctx, q, key, m, p, nil, data)
}

// EncryptAppend implements [hsm.Appender]: Encrypt, with the output
// appended to dst.
func (h *HSM) EncryptAppend(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, dst, data []byte) ([]byte, error) {
	u, err := h.useKey(ctx, q, key)
	if err != nil {
		return nil, err
	}
	return u.crypt(m, p, dst, data, true)
}

// DecryptAppend implements [hsm.Appender]: Decrypt, with the output
// appended to dst.
func (h *HSM) DecryptAppend(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, dst, data []byte) ([]byte, error) {
	u, err := h.useKey(ctx, q, key)
	if err != nil {
		return nil, err
	}
	return u.crypt(m, p, dst, data, false)
}

// grow returns dst extended by n bytes (reallocated only when it lacks the
// room) and the n new bytes.
func grow(dst []byte, n int) (all, tail []byte) {
	all = slices.Grow(dst, n)[:len(dst)+n]
	return all, all[len(dst):]
}

func (u *usable) crypt(m hsm.Mechanism, p hsm.Params, dst, data []byte, enc bool) ([]byte, error) {
	what := "decrypt"
	if enc {
		what = "encrypt"
	}
	switch m {
	case hsm.MechAESECB, hsm.MechAESCBC, hsm.MechAESCBCPad, hsm.MechAESGCM:
		if u.blob.KeyType != hsm.KeyAES || u.secret == nil {
			return nil, mechErr(m, u, what)
		}
		blk, err := aes.NewCipher(u.secret)
		if err != nil {
			return nil, errclass.New(errclass.Internal, "AES key: %w", err)
		}
		switch m {
		case hsm.MechAESECB:
			return ecb(blk, dst, data, enc)
		case hsm.MechAESGCM:
			return gcm(blk, p, dst, data, enc)
		default:
			return cbc(blk, p.IV, dst, data, enc, m == hsm.MechAESCBCPad)
		}
	case hsm.MechDES3CBC, hsm.MechDES3ECB:
		if u.blob.KeyType != hsm.KeyDES3 || u.secret == nil {
			return nil, mechErr(m, u, what)
		}
		blk, err := des.NewTripleDESCipher(u.secret)
		if err != nil {
			return nil, errclass.New(errclass.Internal, "DES3 key: %w", err)
		}
		if m == hsm.MechDES3ECB {
			return ecb(blk, dst, data, enc)
		}
		return cbc(blk, p.IV, dst, data, enc, false)
	case hsm.MechRSAOAEP:
		pub, ok := u.pub.(*rsa.PublicKey)
		if !ok {
			return nil, mechErr(m, u, what)
		}
		hf, err := hashOf(p.Hash, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		if enc {
			out, err := rsa.EncryptOAEP(hf.New(), rand.Reader, pub, data, p.Label)
			if err != nil {
				return nil, badData("RSA-OAEP: %v", err)
			}
			return append(dst, out...), nil
		}
		priv, ok := u.priv.(*rsa.PrivateKey)
		if !ok {
			return nil, mechErr(m, u, "decrypt with a public key")
		}
		out, err := rsa.DecryptOAEP(hf.New(), rand.Reader, priv, data, p.Label)
		if err != nil {
			return nil, badData("RSA-OAEP decryption failed")
		}
		return append(dst, out...), nil
	}
	return nil, mechErr(m, u, what)
}

func hashOf(h, def crypto.Hash) (crypto.Hash, error) {
	if h == 0 {
		h = def
	}
	if !h.Available() {
		return 0, paramErr("hash %v is not available", h)
	}
	return h, nil
}

func ecb(blk cipher.Block, dst, data []byte, enc bool) ([]byte, error) {
	bs := blk.BlockSize()
	if len(data)%bs != 0 {
		return nil, badData("ECB data of %d bytes is not a multiple of %d", len(data), bs)
	}
	all, out := grow(dst, len(data))
	for i := 0; i < len(data); i += bs {
		if enc {
			blk.Encrypt(out[i:], data[i:i+bs])
		} else {
			blk.Decrypt(out[i:], data[i:i+bs])
		}
	}
	return all, nil
}

func cbc(blk cipher.Block, iv, dst, data []byte, enc, pad bool) ([]byte, error) {
	bs := blk.BlockSize()
	if len(iv) != bs {
		return nil, paramErr("CBC IV has %d bytes, want %d", len(iv), bs)
	}
	if enc {
		if !pad && len(data)%bs != 0 {
			return nil, badData("CBC data of %d bytes is not a multiple of %d", len(data), bs)
		}
		// The whole blocks straight from data, then the padded last
		// block: data is not copied first.
		whole := len(data) - len(data)%bs
		n := whole
		if pad {
			n += bs
		}
		all, out := grow(dst, n)
		c := cipher.NewCBCEncrypter(blk, iv)
		c.CryptBlocks(out[:whole], data[:whole])
		if pad {
			last := out[whole:]
			k := copy(last, data[whole:])
			for i := k; i < bs; i++ {
				last[i] = byte(bs - k)
			}
			c.CryptBlocks(last, last)
		}
		return all, nil
	}
	if len(data)%bs != 0 || (pad && len(data) == 0) {
		return nil, badData("CBC ciphertext of %d bytes is not a (non-empty) multiple of %d", len(data), bs)
	}
	all, out := grow(dst, len(data))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(out, data)
	if !pad {
		return all, nil
	}
	n := int(out[len(out)-1])
	if n == 0 || n > bs || n > len(out) {
		return nil, badData("bad CBC padding")
	}
	for _, c := range out[len(out)-n:] {
		if int(c) != n {
			return nil, badData("bad CBC padding")
		}
	}
	return all[:len(all)-n], nil
}

func gcm(blk cipher.Block, p hsm.Params, dst, data []byte, enc bool) ([]byte, error) {
	tag := p.TagBits
	if tag == 0 {
		tag = 128
	}
	if tag%8 != 0 || tag < 96 || tag > 128 {
		return nil, paramErr("GCM tag of %d bits; want 96, 104, 112, 120 or 128", tag)
	}
	var g cipher.AEAD
	var err error
	switch {
	case len(p.IV) == 12:
		g, err = cipher.NewGCMWithTagSize(blk, tag/8)
	case len(p.IV) > 0 && tag == 128:
		g, err = cipher.NewGCMWithNonceSize(blk, len(p.IV))
	default:
		return nil, paramErr("GCM IV of %d bytes with a %d-bit tag; use a 12-byte IV (or any non-empty IV with a 128-bit tag)", len(p.IV), tag)
	}
	if err != nil {
		return nil, paramErr("GCM: %v", err)
	}
	if enc {
		return g.Seal(dst, p.IV, data, p.AAD), nil
	}
	out, err := g.Open(dst, p.IV, data, p.AAD)
	if err != nil {
		return nil, badData("GCM authentication failed")
	}
	return out, nil
}

// Sign implements [hsm.Backend].
func (h *HSM) Sign(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	u, err := h.useKey(ctx, q, key)
	if err != nil {
		return nil, err
	}
	switch m {
	case hsm.MechHMACSHA256:
		if u.blob.KeyType != hsm.KeyHMAC || u.secret == nil {
			return nil, mechErr(m, u, "sign")
		}
		mac := hmac.New(sha256.New, u.secret)
		mac.Write(data)
		return mac.Sum(nil), nil
	case hsm.MechECDSA:
		priv, ok := u.priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, mechErr(m, u, "sign")
		}
		r, s, err := ecdsa.Sign(rand.Reader, priv, data)
		if err != nil {
			return nil, badData("ECDSA: %v", err)
		}
		n := (priv.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
		return sig, nil
	case hsm.MechRSAPKCS, hsm.MechRSAPSS:
		priv, ok := u.priv.(*rsa.PrivateKey)
		if !ok {
			return nil, mechErr(m, u, "sign")
		}
		if m == hsm.MechRSAPKCS {
			if p.Hash != 0 && !p.Hash.Available() {
				return nil, paramErr("hash %v is not available", p.Hash)
			}
			sig, err := rsa.SignPKCS1v15(nil, priv, p.Hash, data)
			if err != nil {
				return nil, badData("RSA-PKCS: %v", err)
			}
			return sig, nil
		}
		if p.Hash == 0 || !p.Hash.Available() {
			return nil, paramErr("RSA-PSS needs an available hash, got %v", p.Hash)
		}
		sig, err := rsa.SignPSS(rand.Reader, priv, p.Hash, data, pssOpts(p))
		if err != nil {
			return nil, badData("RSA-PSS: %v", err)
		}
		return sig, nil
	}
	return nil, mechErr(m, u, "sign")
}

func pssOpts(p hsm.Params) *rsa.PSSOptions {
	salt := p.SaltLen
	if salt == 0 {
		salt = rsa.PSSSaltLengthEqualsHash
	}
	return &rsa.PSSOptions{SaltLength: salt, Hash: p.Hash}
}

// Verify implements [hsm.Backend]. key is a secure key or, for EC and RSA,
// a DER SubjectPublicKeyInfo.
func (h *HSM) Verify(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	u, err := h.useKey(ctx, q, key)
	if err != nil {
		return err
	}
	bad := errclass.New(errclass.InvalidArgument, "%s: %w", m, hsm.ErrSignature)
	switch m {
	case hsm.MechHMACSHA256:
		if u.blob.KeyType != hsm.KeyHMAC || u.secret == nil {
			return mechErr(m, u, "verify")
		}
		mac := hmac.New(sha256.New, u.secret)
		mac.Write(data)
		if subtle.ConstantTimeCompare(mac.Sum(nil), sig) != 1 {
			return bad
		}
		return nil
	case hsm.MechECDSA:
		pub, ok := u.pub.(*ecdsa.PublicKey)
		if !ok {
			return mechErr(m, u, "verify")
		}
		n := (pub.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return bad
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		if !ecdsa.Verify(pub, data, r, s) {
			return bad
		}
		return nil
	case hsm.MechRSAPKCS, hsm.MechRSAPSS:
		pub, ok := u.pub.(*rsa.PublicKey)
		if !ok {
			return mechErr(m, u, "verify")
		}
		if m == hsm.MechRSAPKCS {
			if p.Hash != 0 && !p.Hash.Available() {
				return paramErr("hash %v is not available", p.Hash)
			}
			if rsa.VerifyPKCS1v15(pub, p.Hash, data, sig) != nil {
				return bad
			}
			return nil
		}
		if p.Hash == 0 || !p.Hash.Available() {
			return paramErr("RSA-PSS needs an available hash, got %v", p.Hash)
		}
		if rsa.VerifyPSS(pub, p.Hash, data, sig, pssOpts(p)) != nil {
			return bad
		}
		return nil
	}
	return mechErr(m, u, "verify")
}

// WrapKey implements [hsm.Backend]: AES-KW (RFC 3394) or AES-KWP (RFC 5649)
// of the target's clear material (raw secret, PKCS#8 DER for private keys).
func (h *HSM) WrapKey(ctx context.Context, q apqn.ID, wrapping []byte, m hsm.Mechanism, p hsm.Params, target []byte) ([]byte, error) {
	rt, err := h.begin(ctx, q)
	if err != nil {
		return nil, err
	}
	w, err := rt.useKey(wrapping)
	if err != nil {
		return nil, err
	}
	if w.blob.KeyType != hsm.KeyAES || w.secret == nil || (m != hsm.MechAESKW && m != hsm.MechAESKWP) {
		return nil, mechErr(m, w, "wrap")
	}
	_, material, err := rt.open(target)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(w.secret)
	if err != nil {
		return nil, errclass.New(errclass.Internal, "AES key: %w", err)
	}
	if m == hsm.MechAESKW {
		if len(material)%8 != 0 || len(material) < 16 {
			return nil, paramErr("AES-KW needs a key of a multiple of 8 bytes (at least 16), this one has %d; use AES-KWP", len(material))
		}
		return kwWrap(blk, kwIV[:], material), nil
	}
	return kwpWrap(blk, material), nil
}

// UnwrapKey implements [hsm.Backend].
func (h *HSM) UnwrapKey(ctx context.Context, q apqn.ID, unwrapping []byte, m hsm.Mechanism, p hsm.Params, wrapped []byte, spec hsm.KeySpec) ([]byte, error) {
	rt, field, err := h.bindFor(ctx, q)
	if err != nil {
		return nil, err
	}
	w, err := rt.useKey(unwrapping)
	if err != nil {
		return nil, err
	}
	if w.blob.KeyType != hsm.KeyAES || w.secret == nil || (m != hsm.MechAESKW && m != hsm.MechAESKWP) {
		return nil, mechErr(m, w, "unwrap")
	}
	blk, err := aes.NewCipher(w.secret)
	if err != nil {
		return nil, errclass.New(errclass.Internal, "AES key: %w", err)
	}
	var material []byte
	if m == hsm.MechAESKW {
		material, err = kwUnwrap(blk, wrapped)
		if err == nil && !bytes.Equal(material[:8], kwIV[:]) {
			err = errKWIntegrity
		}
		if err == nil {
			material = material[8:]
		}
	} else {
		material, err = kwpUnwrap(blk, wrapped)
	}
	if err != nil {
		return nil, err
	}
	canon, err := checkMaterial(spec, material)
	if err != nil {
		return nil, err
	}
	return rt.seal(spec, canon, field)
}

var (
	kwIV           = [8]byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}
	kwpPrefix      = [4]byte{0xa6, 0x59, 0x59, 0xa6}
	errKWIntegrity = errclass.New(errclass.InvalidArgument, "%w: key wrap integrity check failed", hsm.ErrBadData)
)

// kwWrap is the RFC 3394 wrapping function W with initial value iv over
// plaintext p (a multiple of 8 bytes, at least 16).
func kwWrap(blk cipher.Block, iv, p []byte) []byte {
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	copy(out, iv)
	copy(out[8:], p)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(b[:8], out[:8])
			copy(b[8:], out[8*i:8*i+8])
			blk.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(b[:8])^t)
			copy(out[8*i:], b[8:])
		}
	}
	return out
}

// kwUnwrap is W⁻¹: it returns A ‖ P; the caller checks A.
func kwUnwrap(blk cipher.Block, c []byte) ([]byte, error) {
	if len(c)%8 != 0 || len(c) < 24 {
		return nil, badData("wrapped key of %d bytes is not a multiple of 8 of at least 24", len(c))
	}
	n := len(c)/8 - 1
	out := bytes.Clone(c)
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(out[:8])^t)
			copy(b[8:], out[8*i:8*i+8])
			blk.Decrypt(b[:], b[:])
			copy(out[:8], b[:8])
			copy(out[8*i:], b[8:])
		}
	}
	return out, nil
}

func kwpWrap(blk cipher.Block, p []byte) []byte {
	var aiv [8]byte
	copy(aiv[:], kwpPrefix[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(p)))
	padded := make([]byte, (len(p)+7)/8*8)
	copy(padded, p)
	if len(padded) <= 8 {
		out := make([]byte, 16)
		copy(out, aiv[:])
		copy(out[8:], padded)
		blk.Encrypt(out, out)
		return out
	}
	return kwWrap(blk, aiv[:], padded)
}

func kwpUnwrap(blk cipher.Block, c []byte) ([]byte, error) {
	var ap []byte
	switch {
	case len(c) == 16:
		ap = make([]byte, 16)
		blk.Decrypt(ap, c)
	case len(c)%8 == 0 && len(c) >= 24:
		var err error
		if ap, err = kwUnwrap(blk, c); err != nil {
			return nil, err
		}
	default:
		return nil, badData("wrapped key of %d bytes is not a multiple of 8 of at least 16", len(c))
	}
	if !bytes.Equal(ap[:4], kwpPrefix[:]) {
		return nil, errKWIntegrity
	}
	mli := int(binary.BigEndian.Uint32(ap[4:8]))
	p := ap[8:]
	if mli <= len(p)-8 || mli > len(p) {
		return nil, errKWIntegrity
	}
	for _, z := range p[mli:] {
		if z != 0 {
			return nil, errKWIntegrity
		}
	}
	return p[:mli], nil
}
