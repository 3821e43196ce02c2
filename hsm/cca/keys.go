package cca

import (
	"context"
	"encoding/binary"
	"strconv"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Buffer sizes as openCryptoki's CCA token uses them (cca_stdll.h):
// variable-length key tokens CCA_KEY_TOKEN_SIZE 8000, fixed DES and AES
// DATA tokens 64 bytes.
const (
	tokenBuf     = 8000
	fixedToken   = 64
	transportKey = 64
	// dataTokenMax is the longest DATA token of the simulator's layout
	// (hsm/blob.go): the 64-byte CCA header, then the sealed key (28
	// bytes of nonce and tag and up to 32 key bytes).
	dataTokenMax = fixedToken + 28 + 32
)

// dataTokenLen is the length of a DATA token in buf: 64 bytes, or with
// the simulator's layout 64 + 28 + the key byte count at offset 58.
func dataTokenLen(buf []byte) int {
	if len(buf) < fixedToken {
		return len(buf)
	}
	n := fixedToken + 28 + int(binary.BigEndian.Uint16(buf[58:]))
	if n > len(buf) {
		return fixedToken
	}
	return n
}

// run selects q and runs fn there.
func (b *Backend) run(ctx context.Context, q apqn.ID, fn func(where string) error) error {
	_, adapter, err := b.target(ctx, q)
	if err != nil {
		return err
	}
	return b.lib.onAPQN(adapter, q.Domain, func() error { return fn("APQN " + q.String()) })
}

// do calls one verb and turns a non-zero return code into an error.
// Return code 0 with reason 10001 (a key under the OLD master key) is
// success.
func (l *Library) do(where string, c *call) error {
	codes, err := l.verb(c)
	if err != nil {
		return err
	}
	if codes.Return != 0 {
		return codeError(c.verb, where, codes)
	}
	return nil
}

// outLen checks a returned length against its buffer.
func outLen(verb, where string, n *slot, buf *slot) ([]byte, error) {
	if n.long < 0 || n.long > int64(len(buf.data)) {
		return nil, errclass.New(errclass.Internal, "%s on %s returned length %d for a %d-byte buffer", verb, where, n.long, len(buf.data))
	}
	return append([]byte(nil), buf.data[:n.long]...), nil
}

// checkNew checks a token the library made, in the selection that made
// it: its layout and type, and that the CURRENT master key of the APQN
// enciphers it (openCryptoki checks every generated token with
// analyse_cca_key_token and check_expected_mkvp).
func (l *Library) checkNew(where, verb string, blob []byte, spec hsm.KeySpec) error {
	info, err := hsm.Inspect(blob)
	if err != nil {
		return errclass.New(errclass.Internal, "%s on %s returned a token pkcshsm cannot read: %v", verb, where, err)
	}
	if info.Mode != apqn.ModeCCA || info.KeyType != spec.Type || info.Bits != spec.Bits {
		return errclass.New(errclass.Internal, "%s on %s returned a %s %s-bit key, want %s %d-bit", verb, where, info.KeyType, strconv.Itoa(info.Bits), spec.Type, spec.Bits)
	}
	r, err := l.registersOf(where, info.MKType)
	if err != nil {
		return err
	}
	if r.Current.Pattern != info.Pattern {
		return errclass.New(errclass.Internal, "%s on %s returned a key under %s master key %s, not the CURRENT one %s", verb, where, info.MKType, info.Pattern, r.Current.Pattern)
	}
	return nil
}

// GenerateKey makes a secret key under the CURRENT master key of q.
func (b *Backend) GenerateKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	var blob []byte
	var verb string
	err := b.run(ctx, q, func(where string) error {
		var err error
		switch spec.Type {
		case hsm.KeyDES3:
			verb = "CSNBKGN"
			blob, err = b.lib.generateDES3(where)
		case hsm.KeyAES:
			verb = "CSNBKGN2"
			blob, err = b.lib.generateVariable(where, []string{"INTERNAL", "AES", "CIPHER", "NO-KEY", "ANY-MODE"}, []string{"AES", "OP"}, spec.Bits)
		case hsm.KeyHMAC:
			if spec.Bits > 2048 {
				return errclass.Newh(errclass.InvalidArgument, "use an HMAC key of 80 to 2048 bits",
					"CCA HMAC keys have at most 2048 bits, not %d: %w", spec.Bits, hsm.ErrMechanism)
			}
			verb = "CSNBKGN2"
			blob, err = b.lib.generateVariable(where, []string{"INTERNAL", "HMAC", "MAC", "GENERATE"}, []string{"HMAC", "OP"}, spec.Bits)
		default:
			return errclass.New(errclass.InvalidArgument, "GenerateKey makes secret keys, not %s: use GenerateKeyPair", spec.Type)
		}
		if err != nil {
			return err
		}
		return b.lib.checkNew(where, verb, blob, spec)
	})
	if err != nil {
		return nil, err
	}
	return blob, nil
}

// generateDES3 calls CSNBKGN (Key Generate) for a triple-length DATA key
// in a fixed 64-byte token: key_form OP, key_length TRIPLE-O, key_type_1
// DATA, key_type_2 eight zero bytes, both KEKs 64 zero bytes
// (host-libraries.md §1.6).
func (l *Library) generateDES3(where string) ([]byte, error) {
	c := newCall("CSNBKGN")
	c.buf(keyword("OP"), 8)
	c.buf(keyword("TRIPLE-O"), 8)
	c.buf(keyword("DATA"), 8)
	c.buf(nil, 8)
	c.buf(nil, transportKey)
	c.buf(nil, transportKey)
	out := c.buf(nil, dataTokenMax)
	c.buf(nil, dataTokenMax)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	return append([]byte(nil), out.data[:dataTokenLen(out.data)]...), nil
}

// generateVariable builds a skeleton with CSNBKTB2 (Key Token Build2) and
// fills it with CSNBKGN2 (Key Generate2): AES CIPHER and HMAC tokens
// (host-libraries.md §1.6, from cca_cipher_key_gen and
// token_specific_generic_secret_key_gen).
func (l *Library) generateVariable(where string, build, gen []string, bits int) ([]byte, error) {
	c := newCall("CSNBKTB2")
	c.rules(len(build), build...)
	c.long(0) // clear_key_bit_length
	c.null()  // clear_key_value
	c.long(0) // key_name_length
	c.null()
	c.long(0) // user_associated_data_length
	c.null()
	c.long(0) // token_data_length
	c.null()
	c.long(0) // reserved_length
	c.null()
	skLen := c.long(tokenBuf)
	sk := c.buf(nil, tokenBuf)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	skeleton, err := outLen("CSNBKTB2", where, skLen, sk)
	if err != nil {
		return nil, err
	}
	g := newCall("CSNBKGN2")
	g.rules(len(gen), gen...)
	g.long(int64(bits))
	g.buf(keyword("TOKEN"), 8)
	g.buf(keyword(""), 8)
	for range 6 { // key names, user data and KEKs 1 and 2: none
		g.long(0)
		g.null()
	}
	outN := g.long(tokenBuf)
	out := g.buf(skeleton, tokenBuf)
	g.long(0)
	g.null()
	if err := l.do(where, g); err != nil {
		return nil, err
	}
	return outLen("CSNBKGN2", where, outN, out)
}

// GenerateKeyPair makes an EC or RSA key pair: CSNDPKB (PKA Key Token
// Build) → CSNDPKG (PKA Key Generate, MASTER) → CSNDPKX (PKA Public Key
// Extract) (host-libraries.md §1.7).
func (b *Backend) GenerateKeyPair(ctx context.Context, q apqn.ID, spec hsm.KeySpec) (priv, pub []byte, err error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, nil, err
	}
	if spec.Type != hsm.KeyEC && spec.Type != hsm.KeyRSA {
		return nil, nil, errclass.New(errclass.InvalidArgument, "GenerateKeyPair makes EC and RSA keys, not %s", spec.Type)
	}
	var token, pubTok []byte
	err = b.run(ctx, q, func(where string) error {
		skeleton, err := b.lib.buildPKA(where, spec)
		if err != nil {
			return err
		}
		c := newCall("CSNDPKG")
		c.rules(1, "MASTER")
		c.long(0) // regeneration_data_length
		c.null()
		c.long(int64(len(skeleton)))
		c.buf(skeleton, len(skeleton))
		c.buf(nil, transportKey)
		n := c.long(tokenBuf)
		out := c.buf(nil, tokenBuf)
		if err := b.lib.do(where, c); err != nil {
			return err
		}
		if token, err = outLen("CSNDPKG", where, n, out); err != nil {
			return err
		}
		if err := b.lib.checkNew(where, "CSNDPKG", token, spec); err != nil {
			return err
		}
		pubTok, err = b.lib.publicToken(where, token)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	ecBits := 0
	if spec.Type == hsm.KeyEC {
		ecBits = spec.Bits
	}
	if pub, err = spkiOf(pubTok, ecBits); err != nil {
		return nil, nil, err
	}
	return token, pub, nil
}

// buildPKA calls CSNDPKB for a skeleton private key token.
func (l *Library) buildPKA(where string, spec hsm.KeySpec) ([]byte, error) {
	c := newCall("CSNDPKB")
	switch spec.Type {
	case hsm.KeyEC:
		// ECC-PAIR KEY-MGMT ECC-VER1; key values: curve type 0x00
		// (prime), curve bits big-endian at 2, no private or public key
		// (lengths 0); reserved_2 carries the key-derivation data:
		// algorithm 0x02 (AES), key type 0x04 (CIPHER), 256 bits.
		c.rules(3, "ECC-PAIR", "KEY-MGMT", "ECC-VER1")
		kv := make([]byte, 8)
		binary.BigEndian.PutUint16(kv[2:], uint16(spec.Bits))
		c.long(int64(len(kv)))
		c.buf(kv, len(kv))
		c.long(0) // key_name_ln
		c.null()
		c.long(0) // customer data
		c.null()
		derive := []byte{0x02, 0x04, 0x01, 0x00}
		c.long(int64(len(derive)))
		c.buf(derive, len(derive))
		for range 3 { // reserved 3..5
			c.long(0)
			c.null()
		}
	case hsm.KeyRSA:
		// RSA-AESC KEY-MGMT; key values: modulus bits at 0, public
		// exponent length at 4, the exponent at 18 (65537). The five
		// trailing pairs are NULL pointers, as openCryptoki passes them.
		c.rules(2, "RSA-AESC", "KEY-MGMT")
		kv := make([]byte, 21)
		binary.BigEndian.PutUint16(kv[0:], uint16(spec.Bits))
		binary.BigEndian.PutUint16(kv[4:], 3)
		copy(kv[18:], []byte{0x01, 0x00, 0x01})
		c.long(int64(len(kv)))
		c.buf(kv, len(kv))
		c.long(0)
		c.null()
		for range 5 {
			c.null()
			c.null()
		}
	}
	n := c.long(tokenBuf)
	out := c.buf(nil, tokenBuf)
	if err := l.do(where, c); err != nil {
		return nil, err
	}
	return outLen("CSNDPKB", where, n, out)
}

// ImportKey is not offered over the CCA host library: openCryptoki's CCA
// token imports clear keys with verbs (CSNBKPI2, CSNDPKI) whose
// parameter lists the project has not yet checked against IBM's
// reference, and a guessed call is worse than a clear refusal.
func (b *Backend) ImportKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec, material []byte) ([]byte, error) {
	if _, err := b.sysQueue(q); err != nil {
		return nil, err
	}
	return nil, errclass.Newh(errclass.InvalidArgument,
		"generate the key on the adapter instead (C_GenerateKey / C_GenerateKeyPair), or use the simulator",
		"importing clear %s keys is not available with hsm-backend = host on CCA adapters: %w", spec.Type, hsm.ErrMechanism)
}
