package cca

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/internal/backend"
	"github.com/pkcshsm/pkcshsm/hsm/internal/pkcs1"
	"github.com/pkcshsm/pkcshsm/hsm/internal/pubkey"
)

// keyFor checks the blob a call is given (hsm/internal/backend).
func keyFor(q apqn.ID, key []byte, m hsm.Mechanism, types ...hsm.KeyType) (hsm.BlobInfo, error) {
	return backend.Key(q, apqn.ModeCCA, key, m, types...)
}

var (
	mechErr = backend.MechErr
	dataErr = backend.DataErr
)

// PublicKey calls CSNDPKX (PKA Public Key Extract, no rule keywords) and
// converts the external public token to a SubjectPublicKeyInfo.
func (b *Backend) PublicKey(ctx context.Context, q apqn.ID, key []byte) ([]byte, error) {
	info, err := keyFor(q, key, 0, hsm.KeyEC, hsm.KeyRSA)
	if err != nil {
		return nil, err
	}
	var tok []byte
	if err := b.run(ctx, q, func(where string) error {
		tok, err = b.lib.publicToken(where, key)
		return err
	}); err != nil {
		return nil, err
	}
	ecBits := 0
	if info.KeyType == hsm.KeyEC {
		ecBits = info.Bits
	}
	return spkiOf(tok, ecBits)
}

func (l *Library) publicToken(where string, key []byte) ([]byte, error) {
	c := newCall("CSNDPKX")
	c.rules(1) // rule_array_count 0
	c.long(int64(len(key)))
	c.buf(key, len(key))
	n := c.long(tokenBuf)
	out := c.buf(nil, tokenBuf)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	return outLen("CSNDPKX", where, n, out)
}

// Encrypt enciphers data with a secure key.
func (b *Backend) Encrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	return b.cipher(ctx, q, key, m, p, data, true)
}

// Decrypt deciphers data with a secure key.
func (b *Backend) Decrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	return b.cipher(ctx, q, key, m, p, data, false)
}

func (b *Backend) cipher(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte, enc bool) ([]byte, error) {
	switch m {
	case hsm.MechAESECB, hsm.MechAESCBC, hsm.MechAESCBCPad, hsm.MechAESGCM:
		if _, err := keyFor(q, key, m, hsm.KeyAES); err != nil {
			return nil, err
		}
		return b.aes(ctx, q, key, m, p, data, enc)
	case hsm.MechDES3CBC:
		if _, err := keyFor(q, key, m, hsm.KeyDES3); err != nil {
			return nil, err
		}
		if len(p.IV) != 8 {
			return nil, mechErr("DES3-CBC needs an 8-byte IV, not %d bytes", len(p.IV))
		}
		if len(data)%8 != 0 {
			return nil, dataErr("DES3-CBC data of %d bytes is not a multiple of 8", len(data))
		}
		var out []byte
		err := b.run(ctx, q, func(where string) error {
			var err error
			out, err = b.lib.des3CBC(where, key, p.IV, data, enc)
			return err
		})
		return out, err
	case hsm.MechRSAOAEP:
		if pub := pubkey.Parse(key); pub != nil && enc {
			if _, err := b.sysQueue(q); err != nil {
				return nil, err
			}
			return pubkey.EncryptOAEP(pub, p, data)
		}
		if _, err := keyFor(q, key, m, hsm.KeyRSA); err != nil {
			return nil, err
		}
		return b.oaep(ctx, q, key, p, data, enc)
	}
	return nil, mechErr("%s is not an encryption mechanism", m)
}

// aes calls CSNBSAE / CSNBSAD (Symmetric Algorithm Encipher/Decipher)
// with the rules openCryptoki uses (host-libraries.md §1.9): ECB "AES ECB
// KEYIDENT INITIAL"; CBC "AES KEYIDENT INITIAL" with a 16-byte IV and a
// 32-byte chain buffer; GCM "AES GCM KEYIDENT ONLY" with the tag in
// key_parms, the AAD in optional_data and a 104-byte chain buffer.
// CBC-PAD pads and unpads in software around CBC, as openCryptoki's
// common code does (mech_aes.c).
func (b *Backend) aes(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte, enc bool) ([]byte, error) {
	var rules []string
	var iv []byte
	chain := 0
	tagLen := 0
	switch m {
	case hsm.MechAESECB:
		if len(data)%16 != 0 {
			return nil, dataErr("AES-ECB data of %d bytes is not a multiple of 16", len(data))
		}
		rules = []string{"AES", "ECB", "KEYIDENT", "INITIAL"}
	case hsm.MechAESCBC, hsm.MechAESCBCPad:
		if len(p.IV) != 16 {
			return nil, mechErr("%s needs a 16-byte IV, not %d bytes", m, len(p.IV))
		}
		if m == hsm.MechAESCBCPad && enc {
			n := 16 - len(data)%16
			data = append(append([]byte(nil), data...), bytes.Repeat([]byte{byte(n)}, n)...)
		}
		if len(data)%16 != 0 || m == hsm.MechAESCBCPad && !enc && len(data) == 0 {
			return nil, dataErr("%s data of %d bytes is not a multiple of 16", m, len(data))
		}
		rules, iv, chain = []string{"AES", "KEYIDENT", "INITIAL"}, p.IV, 32
	case hsm.MechAESGCM:
		tagLen = 16
		if p.TagBits != 0 {
			if p.TagBits%8 != 0 || p.TagBits < 96 || p.TagBits > 128 {
				return nil, mechErr("AES-GCM tag of %d bits: use 96 to 128 bits in steps of 8", p.TagBits)
			}
			tagLen = p.TagBits / 8
		}
		if len(p.IV) == 0 {
			return nil, mechErr("AES-GCM needs an IV")
		}
		if !enc && len(data) < tagLen {
			return nil, dataErr("AES-GCM ciphertext of %d bytes is shorter than its %d-byte tag", len(data), tagLen)
		}
		rules, iv, chain = []string{"AES", "GCM", "KEYIDENT", "ONLY"}, p.IV, 104
	}
	var out []byte
	err := b.run(ctx, q, func(where string) error {
		verb := "CSNBSAE"
		if !enc {
			verb = "CSNBSAD"
		}
		c := newCall(verb)
		c.rules(len(rules), rules...)
		c.long(int64(len(key)))
		c.buf(key, len(key))
		in := data
		var tag *slot
		switch {
		case tagLen > 0 && enc:
			c.long(int64(tagLen))
			tag = c.buf(nil, tagLen)
		case tagLen > 0:
			in = data[:len(data)-tagLen]
			c.long(int64(tagLen))
			c.buf(data[len(data)-tagLen:], tagLen)
		default:
			c.long(0)
			c.null()
		}
		c.long(16) // block_size
		c.long(int64(len(iv)))
		if len(iv) > 0 {
			c.buf(iv, len(iv))
		} else {
			c.null()
		}
		c.long(int64(chain))
		if chain > 0 {
			c.buf(nil, chain)
		} else {
			c.null()
		}
		// CSNBSAE: clear text in, cipher text out; CSNBSAD the reverse.
		c.long(int64(len(in)))
		c.buf(in, len(in))
		n := c.long(int64(len(in)))
		res := c.buf(nil, len(in))
		if len(p.AAD) > 0 && m == hsm.MechAESGCM {
			c.long(int64(len(p.AAD)))
			c.buf(p.AAD, len(p.AAD))
		} else {
			c.long(0)
			c.null()
		}
		if err := b.lib.do(where, c); err != nil {
			return err
		}
		var err error
		if out, err = outLen(verb, where, n, res); err != nil {
			return err
		}
		if tag != nil {
			out = append(out, tag.data...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if m == hsm.MechAESCBCPad && !enc {
		return unpad(out)
	}
	return out, nil
}

func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%16 != 0 {
		return nil, dataErr("AES-CBC-PAD plaintext of %d bytes", len(b))
	}
	n := int(b[len(b)-1])
	if n == 0 || n > 16 {
		return nil, dataErr("AES-CBC-PAD padding is not valid")
	}
	for _, x := range b[len(b)-n:] {
		if int(x) != n {
			return nil, dataErr("AES-CBC-PAD padding is not valid")
		}
	}
	return b[:len(b)-n], nil
}

// des3CBC calls CSNBENC / CSNBDEC (Encipher/Decipher) with rule CBC, an
// 8-byte IV, an 18-byte chaining vector and, for CSNBENC, pad character
// 0; the output buffer has 8 bytes to spare, as openCryptoki allows
// (host-libraries.md §1.10).
func (l *Library) des3CBC(where string, key, iv, data []byte, enc bool) ([]byte, error) {
	verb := "CSNBENC"
	if !enc {
		verb = "CSNBDEC"
	}
	c := newCall(verb)
	c.buf(key, max(len(key), fixedToken))
	n := c.long(int64(len(data)))
	c.buf(data, len(data))
	c.buf(iv, 8)
	c.rules(1, "CBC")
	if enc {
		c.long(0) // pad_character
	}
	c.buf(nil, 18)
	out := c.buf(nil, len(data)+8)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	if n.long != int64(len(data)) {
		return nil, errclass.New(errclass.Internal, "%s on %s returned %d bytes for %d bytes of CBC data without padding", verb, where, n.long, len(data))
	}
	return append([]byte(nil), out.data[:len(data)]...), nil
}

// oaepHash is the CCA keyword of an OAEP hash.
func oaepHash(h crypto.Hash) (string, bool) {
	switch h {
	case crypto.SHA1:
		return "SHA-1", true
	case crypto.SHA256:
		return "SHA-256", true
	}
	return "", false
}

// oaep calls CSNDPKE / CSNDPKD with PKCSOAEP and SHA-1 or SHA-256, an
// empty label (the only one CCA takes) and the public key token from
// CSNDPKX for encryption (host-libraries.md §1.11).
func (b *Backend) oaep(ctx context.Context, q apqn.ID, key []byte, p hsm.Params, data []byte, enc bool) ([]byte, error) {
	h, ok := oaepHash(p.Hash)
	if !ok {
		return nil, mechErr("CCA RSA-OAEP supports SHA-1 and SHA-256, not %v", p.Hash)
	}
	if len(p.Label) > 0 {
		return nil, mechErr("CCA RSA-OAEP takes no label")
	}
	var out []byte
	err := b.run(ctx, q, func(where string) error {
		k := key
		verb := "CSNDPKD"
		if enc {
			verb = "CSNDPKE"
			var err error
			if k, err = b.lib.publicToken(where, key); err != nil {
				return err
			}
		}
		c := newCall(verb)
		c.rules(2, "PKCSOAEP", h)
		c.long(int64(len(data)))
		c.buf(data, len(data))
		c.long(0) // data_structure_length
		c.null()
		c.long(int64(len(k)))
		c.buf(k, len(k))
		n := c.long(512)
		res := c.buf(nil, 512)
		if err := b.lib.do(where, c); err != nil {
			return err
		}
		var err error
		out, err = outLen(verb, where, n, res)
		return err
	})
	return out, err
}

var shaKeyword = map[crypto.Hash]string{
	crypto.SHA1: "SHA-1", crypto.SHA224: "SHA-224", crypto.SHA256: "SHA-256", crypto.SHA384: "SHA-384", crypto.SHA512: "SHA-512",
}

// sigInput returns the rules and the hash argument of CSNDDSG/CSNDDSV
// (host-libraries.md §1.12): ECDSA the digest; PKCS-1.1 the DigestInfo;
// PKCS-PSS plus the hash keyword, the salt length as 4 big-endian bytes
// then the digest.
func sigInput(m hsm.Mechanism, p hsm.Params, data []byte) ([]string, []byte, error) {
	switch m {
	case hsm.MechECDSA:
		return []string{"ECDSA"}, data, nil
	case hsm.MechRSAPKCS:
		if p.Hash == 0 {
			return []string{"PKCS-1.1"}, data, nil
		}
		di, ok := pkcs1.DigestInfo(p.Hash, data)
		if !ok {
			return nil, nil, mechErr("RSA-PKCS with hash %v and a %d-byte digest is not supported", p.Hash, len(data))
		}
		return []string{"PKCS-1.1"}, di, nil
	case hsm.MechRSAPSS:
		kw, ok := shaKeyword[p.Hash]
		if !ok {
			return nil, nil, mechErr("RSA-PSS with hash %v is not supported", p.Hash)
		}
		if len(data) != p.Hash.Size() {
			return nil, nil, dataErr("RSA-PSS %v digest of %d bytes", p.Hash, len(data))
		}
		if p.SaltLen < 0 {
			return nil, nil, mechErr("RSA-PSS salt length %d", p.SaltLen)
		}
		in := make([]byte, 4, 4+len(data))
		binary.BigEndian.PutUint32(in, uint32(p.SaltLen))
		return []string{"PKCS-PSS", kw}, append(in, data...), nil
	}
	return nil, nil, mechErr("%s is not a signature mechanism", m)
}

// Sign signs a digest (ECDSA, RSA) with CSNDDSG or computes an HMAC with
// CSNBHMG ("HMAC SHA-256 ONLY", 128-byte chaining vector).
func (b *Backend) Sign(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	if m == hsm.MechHMACSHA256 {
		if _, err := keyFor(q, key, m, hsm.KeyHMAC); err != nil {
			return nil, err
		}
		var out []byte
		err := b.run(ctx, q, func(where string) error {
			var err error
			out, err = b.lib.hmac(where, "CSNBHMG", key, data, nil)
			return err
		})
		return out, err
	}
	want := hsm.KeyRSA
	if m == hsm.MechECDSA {
		want = hsm.KeyEC
	}
	if _, err := keyFor(q, key, m, want); err != nil {
		return nil, err
	}
	rules, in, err := sigInput(m, p, data)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = b.run(ctx, q, func(where string) error {
		c := newCall("CSNDDSG")
		c.rules(len(rules), rules...)
		c.long(int64(len(key)))
		c.buf(key, len(key))
		c.long(int64(len(in)))
		c.buf(in, len(in))
		n := c.long(512)
		c.long(0) // signature_bit_length, output
		sig := c.buf(nil, 512)
		if err := b.lib.do(where, c); err != nil {
			return err
		}
		var err error
		out, err = outLen("CSNDDSG", where, n, sig)
		return err
	})
	return out, err
}

// Verify checks a signature with CSNDDSV against the public key token
// CSNDPKX extracts, or an HMAC with CSNBHMV.
func (b *Backend) Verify(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	if m == hsm.MechHMACSHA256 {
		if _, err := keyFor(q, key, m, hsm.KeyHMAC); err != nil {
			return err
		}
		if len(sig) != 32 {
			return errclass.New(errclass.InvalidArgument, "HMAC-SHA256 MAC of %d bytes: %w", len(sig), hsm.ErrSignature)
		}
		return b.run(ctx, q, func(where string) error {
			_, err := b.lib.hmac(where, "CSNBHMV", key, data, sig)
			return err
		})
	}
	if pub := pubkey.Parse(key); pub != nil {
		// A plain public key: no secret involved (hsm/internal/pubkey).
		if _, err := b.sysQueue(q); err != nil {
			return err
		}
		return pubkey.Verify(pub, m, p, data, sig)
	}
	want := hsm.KeyRSA
	if m == hsm.MechECDSA {
		want = hsm.KeyEC
	}
	if _, err := keyFor(q, key, m, want); err != nil {
		return err
	}
	rules, in, err := sigInput(m, p, data)
	if err != nil {
		return err
	}
	return b.run(ctx, q, func(where string) error {
		pub, err := b.lib.publicToken(where, key)
		if err != nil {
			return err
		}
		c := newCall("CSNDDSV")
		c.rules(len(rules), rules...)
		c.long(int64(len(pub)))
		c.buf(pub, len(pub))
		c.long(int64(len(in)))
		c.buf(in, len(in))
		c.long(int64(len(sig)))
		c.buf(sig, len(sig))
		return b.lib.do(where, c)
	})
}

// hmac calls CSNBHMG (mac nil) or CSNBHMV.
func (l *Library) hmac(where, verb string, key, data, mac []byte) ([]byte, error) {
	c := newCall(verb)
	c.rules(3, "HMAC", "SHA-256", "ONLY")
	c.long(int64(len(key)))
	c.buf(key, len(key))
	c.long(int64(len(data)))
	if len(data) > 0 {
		c.buf(data, len(data))
	} else {
		c.buf(nil, 1)
	}
	c.long(128)
	c.buf(nil, 128)
	n := c.long(32)
	out := c.buf(mac, 32)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	if mac != nil {
		return nil, nil
	}
	return outLen(verb, where, n, out)
}

// WrapKey: CCA secure keys have no RFC 3394/5649 wrap verb in the
// documentation the project follows (openCryptoki's CCA token offers only
// RSA-based wrapping, host-libraries.md §1.13).
func (b *Backend) WrapKey(ctx context.Context, q apqn.ID, wrapping []byte, m hsm.Mechanism, p hsm.Params, target []byte) ([]byte, error) {
	if _, err := b.sysQueue(q); err != nil {
		return nil, err
	}
	return nil, errclass.Newh(errclass.InvalidArgument, "use an EP11 token for AES key wrapping, or the simulator",
		"%s key wrapping is not offered by the CCA host library: %w", m, hsm.ErrMechanism)
}

// UnwrapKey: see WrapKey.
func (b *Backend) UnwrapKey(ctx context.Context, q apqn.ID, unwrapping []byte, m hsm.Mechanism, p hsm.Params, wrapped []byte, spec hsm.KeySpec) ([]byte, error) {
	if _, err := b.sysQueue(q); err != nil {
		return nil, err
	}
	return nil, errclass.Newh(errclass.InvalidArgument, "use an EP11 token for AES key unwrapping, or the simulator",
		"%s key unwrapping is not offered by the CCA host library: %w", m, hsm.ErrMechanism)
}
