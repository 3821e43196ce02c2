package hostdouble

import (
	"crypto"
	"encoding/binary"
	"errors"

	"github.com/pkcshsm/pkcshsm/hsm"
)

// The CCA verbs that use keys: AES (CSNBSAE/CSNBSAD, §1.9), DES3
// (CSNBENC/CSNBDEC, §1.10), RSA-OAEP (CSNDPKE/CSNDPKD, §1.11), signatures
// (CSNDDSG/CSNDDSV) and HMAC (CSNBHMG/CSNBHMV, §1.12). Section numbers are
// those of the reference note host-libraries.md, which cites openCryptoki's
// cca_specific.c and IBM's verb pages.

func init() {
	for name, v := range map[string]ccaVerb{
		"CSNBSAE": {21, (*Server).csnbsae},
		"CSNBSAD": {21, (*Server).csnbsad},
		"CSNBENC": {13, (*Server).csnbenc},
		"CSNBDEC": {12, (*Server).csnbdec},
		"CSNDPKE": {14, (*Server).csndpke},
		"CSNDPKD": {14, (*Server).csndpkd},
		"CSNDDSG": {13, (*Server).csnddsg},
		"CSNDDSV": {12, (*Server).csnddsv},
		"CSNBHMG": {14, (*Server).csnbhmg},
		"CSNBHMV": {14, (*Server).csnbhmv},
	} {
		ccaVerbs[name] = v
	}
}

func (s *Server) csnbsae(c *call) error { return s.symAES(c, true) }
func (s *Server) csnbsad(c *call) error { return s.symAES(c, false) }

// symAES: rules AES, a mode (ECB, CBC — the default, OCK passes none —
// PKCS-PAD, GCM), KEYIDENT, and INITIAL or ONLY (single-part calls; the
// multi-part CONTINUE and FINAL are not implemented and refused with
// 8/33). block_size 16; CBC: IV 16 bytes, chain data at least 32 bytes;
// GCM: key_parms is the tag (4, 8, 12..16 bytes; the simulator does
// 12..16), chain data 104 bytes, optional_data the AAD, data of any length;
// ECB/CBC without padding: data a multiple of 16 (8/25).
func (s *Server) symAES(c *call, enc bool) error {
	ch, err := c.rules(4, 1, 4,
		ruleGroup{words: []string{"AES"}, required: true},
		ruleGroup{words: []string{"ECB", "CBC", "PKCS-PAD", "GCM"}, def: "CBC"},
		ruleGroup{words: []string{"KEYIDENT"}, def: "KEYIDENT"},
		ruleGroup{words: []string{"INITIAL", "ONLY"}, def: "ONLY"})
	if err != nil {
		return err
	}
	mode := ch[1]
	if mode == "GCM" && ch[3] != "ONLY" {
		return refuse(8, rsCombination, "single-part GCM takes ONLY, not %s", ch[3])
	}
	tok, err := c.inBuf(6, 1, 8000, "key")
	if err != nil {
		return err
	}
	if bs, ok := c.intArg(10); !ok || bs != 16 {
		return refuse(8, rsLength, "block_size %d, AES needs 16", bs)
	}
	iv, err := c.inBuf(11, 0, 128, "initialization_vector")
	if err != nil {
		return err
	}
	chain, _ := c.intArg(13)
	in, err := c.inBuf(15, 0, MaxBuffer, "text")
	if err != nil {
		return err
	}
	aad, err := c.inBuf(19, 0, MaxBuffer, "optional_data")
	if err != nil {
		return err
	}
	kp, _ := c.intArg(8)
	p := hsm.Params{IV: iv}
	var m hsm.Mechanism
	switch mode {
	case "ECB":
		m = hsm.MechAESECB
		if len(iv) != 0 {
			return refuse(8, rsLength, "ECB takes no initialization vector (length %d)", len(iv))
		}
	case "CBC", "PKCS-PAD":
		m = hsm.MechAESCBC
		if mode == "PKCS-PAD" {
			m = hsm.MechAESCBCPad
		}
		if len(iv) != 16 {
			return refuse(8, rsLength, "CBC needs a 16-byte initialization vector, got %d", len(iv))
		}
		if chain < 32 {
			return refuse(8, rsLength, "chain_data_length %d, CBC needs 32", chain)
		}
	case "GCM":
		m = hsm.MechAESGCM
		if len(iv) == 0 {
			return refuse(8, rsLength, "GCM needs an initialization vector")
		}
		if chain != 104 {
			return refuse(8, rsLength, "chain_data_length %d, GCM needs 104", chain)
		}
		if kp != 4 && kp != 8 && (kp < 12 || kp > 16) {
			return refuse(8, rsLength, "GCM tag (key_parms) of %d bytes; 4, 8 or 12..16", kp)
		}
		if kp < 12 {
			return refuse(8, rsLength, "GCM tag of %d bytes: the simulator makes 12..16-byte tags", kp)
		}
		p.TagBits, p.AAD = int(kp)*8, aad
	}
	if mode != "GCM" && (kp != 0 || len(aad) != 0) {
		return refuse(8, rsLength, "key_parms and optional_data are GCM parameters (lengths %d, %d)", kp, len(aad))
	}
	if (mode == "ECB" || mode == "CBC" || mode == "PKCS-PAD" && !enc) && len(in)%16 != 0 {
		return refuse(8, rsTextLength, "%s text of %d bytes is not a multiple of 16", mode, len(in))
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	if _, err := c.keyToken(q, tok, hsm.LayoutCCAAESCipher, hsm.LayoutCCAAESData); err != nil {
		return err
	}
	var out []byte
	if mode == "GCM" && !enc {
		tag, _ := c.buf(9)
		out, err = s.h.Decrypt(c.ctx, q.ID, tok, m, p, append(append([]byte(nil), in...), tag...))
		if errors.Is(err, hsm.ErrBadData) {
			return refuse(8, rsGCMTag, "GCM tag does not verify")
		}
	} else if enc {
		out, err = s.h.Encrypt(c.ctx, q.ID, tok, m, p, in)
	} else {
		out, err = s.h.Decrypt(c.ctx, q.ID, tok, m, p, in)
	}
	if err != nil {
		return simErr(err)
	}
	if mode == "GCM" && enc {
		tag := out[len(out)-int(kp):]
		out = out[:len(out)-int(kp)]
		if err := c.setBytes(9, tag); err != nil {
			return err
		}
	}
	return c.output(17, out, "text")
}

// des3 runs CSNBENC/CSNBDEC: rule CBC (count 1), an 8-byte IV, an 18-byte
// chaining vector, text a multiple of 8 bytes (8/25), a DES DATA token.
func (s *Server) des3(c *call, enc bool, key, textLen, ruleCount, out int) error {
	if _, err := c.rules(ruleCount, 1, 1, ruleGroup{words: []string{"CBC"}, required: true}); err != nil {
		return err
	}
	tok, ok := c.buf(key)
	if !ok {
		return refuse(8, rsTVVInternal, "key_identifier is NULL")
	}
	in, err := c.inBuf(textLen, 0, MaxBuffer, "text")
	if err != nil {
		return err
	}
	if len(in)%8 != 0 {
		return refuse(8, rsTextLength, "CBC text of %d bytes is not a multiple of 8", len(in))
	}
	iv, ok := c.buf(textLen + 2)
	if !ok || len(iv) != 8 {
		return refuse(8, rsLength, "initialization_vector must be 8 bytes")
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	if _, err := c.keyToken(q, tok, hsm.LayoutCCADESData); err != nil {
		return err
	}
	var res []byte
	if enc {
		res, err = s.h.Encrypt(c.ctx, q.ID, tok, hsm.MechDES3CBC, hsm.Params{IV: iv}, in)
	} else {
		res, err = s.h.Decrypt(c.ctx, q.ID, tok, hsm.MechDES3CBC, hsm.Params{IV: iv}, in)
	}
	if err != nil {
		return simErr(err)
	}
	return c.setBytes(out, res)
}

func (s *Server) csnbenc(c *call) error { return s.des3(c, true, 4, 5, 8, 12) }
func (s *Server) csnbdec(c *call) error { return s.des3(c, false, 4, 5, 8, 11) }

var hashWords = map[string]crypto.Hash{"SHA-1": crypto.SHA1, "SHA-224": crypto.SHA224, "SHA-256": crypto.SHA256, "SHA-384": crypto.SHA384, "SHA-512": crypto.SHA512}

// pkaKey turns the key argument of an RSA/ECC verb into what the
// simulator takes: an external public token becomes its DER
// SubjectPublicKeyInfo (only where a public key is allowed); a private
// token is checked against the APQN's APKA registers.
func (c *call) pkaKey(q hsm.QueueInfo, tok []byte, publicOK bool, layouts ...hsm.Layout) ([]byte, hsm.KeyType, error) {
	if len(tok) > 0 && tok[0] == 0x1e {
		if !publicOK {
			return nil, 0, refuse(8, rsCVViolation, "%s needs a private key token, not a public one", c.req.Func)
		}
		spki, ok := ParsePublicToken(tok)
		if !ok {
			return nil, 0, refuse(8, rsTVVInternal, "malformed external public key token")
		}
		kt := hsm.KeyRSA
		if tok[8] == 0x21 {
			kt = hsm.KeyEC
		}
		return spki, kt, nil
	}
	b, err := c.keyToken(q, tok, layouts...)
	if err != nil {
		return nil, 0, err
	}
	return tok, b.KeyType, nil
}

// oaep runs CSNDPKE (clear data in, public or private RSA key) and
// CSNDPKD (enciphered data in, private key): rules PKOAEP2 or PKCSOAEP
// and a hash (PKCSOAEP: SHA-1 or SHA-256 only, 8/34 otherwise);
// data_structure_length must be 0; the output buffer must hold the
// modulus length (8/72, length back).
func (s *Server) oaep(c *call, enc bool) error {
	ch, err := c.rules(4, 2, 2,
		ruleGroup{words: []string{"PKOAEP2", "PKCSOAEP"}, required: true},
		ruleGroup{words: []string{"SHA-1", "SHA-224", "SHA-256", "SHA-384", "SHA-512"}, required: true})
	if err != nil {
		return err
	}
	if ch[0] == "PKCSOAEP" && ch[1] != "SHA-1" && ch[1] != "SHA-256" {
		return refuse(8, rsCombination, "PKCSOAEP takes SHA-1 or SHA-256, not %s (use PKOAEP2)", ch[1])
	}
	in, err := c.inBuf(6, 1, 1024, "data")
	if err != nil {
		return err
	}
	if err := c.zeroLen(8, "data_structure"); err != nil {
		return err
	}
	tok, err := c.inBuf(10, 1, 8000, "key")
	if err != nil {
		return err
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	key, kt, err := c.pkaKey(q, tok, enc, hsm.LayoutCCARSACRT, hsm.LayoutCCARSAME)
	if err != nil {
		return err
	}
	if kt != hsm.KeyRSA {
		return refuse(8, rsCVViolation, "RSA-OAEP needs an RSA key")
	}
	p := hsm.Params{Hash: hashWords[ch[1]]}
	var out []byte
	if enc {
		out, err = s.h.Encrypt(c.ctx, q.ID, key, hsm.MechRSAOAEP, p, in)
	} else {
		out, err = s.h.Decrypt(c.ctx, q.ID, key, hsm.MechRSAOAEP, p, in)
		if errors.Is(err, hsm.ErrBadData) {
			return refuse(8, rsOAEPDecode, "OAEP decoding failed")
		}
	}
	if err != nil {
		return simErr(err)
	}
	return c.output(12, out, "output")
}

func (s *Server) csndpke(c *call) error { return s.oaep(c, true) }
func (s *Server) csndpkd(c *call) error { return s.oaep(c, false) }

// sigRules parses the signature rules: ECDSA, PKCS-1.1 (the hash argument
// is a DER DigestInfo) or PKCS-PSS with a hash keyword (the hash argument
// is a 4-byte big-endian salt length and the digest).
func (c *call) sigRules(hash []byte) (hsm.Mechanism, hsm.Params, []byte, hsm.KeyType, error) {
	ch, err := c.rules(4, 1, 2,
		ruleGroup{words: []string{"ECDSA", "PKCS-1.1", "PKCS-PSS"}, required: true},
		ruleGroup{words: []string{"SHA-1", "SHA-224", "SHA-256", "SHA-384", "SHA-512"}})
	if err != nil {
		return 0, hsm.Params{}, nil, 0, err
	}
	switch ch[0] {
	case "ECDSA", "PKCS-1.1":
		if ch[1] != "" {
			return 0, hsm.Params{}, nil, 0, refuse(8, rsCombination, "%s takes no hash keyword (%s)", ch[0], ch[1])
		}
		if ch[0] == "ECDSA" {
			if len(hash) < 20 || len(hash) > 64 {
				return 0, hsm.Params{}, nil, 0, refuse(8, rsLength, "ECDSA hash of %d bytes", len(hash))
			}
			return hsm.MechECDSA, hsm.Params{}, hash, hsm.KeyEC, nil
		}
		return hsm.MechRSAPKCS, hsm.Params{}, hash, hsm.KeyRSA, nil
	}
	if ch[1] == "" {
		return 0, hsm.Params{}, nil, 0, refuse(8, rsCombination, "PKCS-PSS needs a hash keyword")
	}
	h := hashWords[ch[1]]
	if len(hash) != 4+h.Size() {
		return 0, hsm.Params{}, nil, 0, refuse(8, rsLength, "PKCS-PSS %s hash argument of %d bytes, want 4 + %d", ch[1], len(hash), h.Size())
	}
	salt := int(binary.BigEndian.Uint32(hash))
	return hsm.MechRSAPSS, hsm.Params{Hash: h, SaltLen: salt}, hash[4:], hsm.KeyRSA, nil
}

// sigSetup reads the key, hash and rules of CSNDDSG/CSNDDSV and returns
// what the simulator takes; a key of the wrong type for the scheme is 8/39.
func (s *Server) sigSetup(c *call, publicOK bool) (q hsm.QueueInfo, key []byte, m hsm.Mechanism, p hsm.Params, data []byte, err error) {
	tok, err := c.inBuf(6, 1, 8000, "PKA_key_id")
	if err != nil {
		return
	}
	hash, err := c.inBuf(8, 1, 1024, "hash")
	if err != nil {
		return
	}
	m, p, data, kt, err := c.sigRules(hash)
	if err != nil {
		return
	}
	if q, err = s.apqn(c); err != nil {
		return
	}
	key, got, err := c.pkaKey(q, tok, publicOK, hsm.LayoutCCAECC, hsm.LayoutCCARSACRT, hsm.LayoutCCARSAME)
	if err == nil && got != kt {
		err = refuse(8, rsCVViolation, "a %s key cannot be used for a %s signature", got, m)
	}
	return q, key, m, p, data, err
}

// csnddsg signs (§1.12); the signature buffer must hold the signature
// (8/72, length back); signature_bit_length returns its length in bits.
func (s *Server) csnddsg(c *call) error {
	q, key, m, p, data, err := s.sigSetup(c, false)
	if err != nil {
		return err
	}
	sig, err := s.h.Sign(c.ctx, q.ID, key, m, p, data)
	if err != nil {
		return simErr(err)
	}
	if err := c.outputAt(10, 12, sig, "signature_field"); err != nil {
		return err
	}
	return c.setInt(11, int64(len(sig))*8)
}

// csnddsv verifies with a public or private token; a signature that does
// not verify is 4/429 (§1.15).
func (s *Server) csnddsv(c *call) error {
	sig, err := c.inBuf(10, 1, 1024, "signature_field")
	if err != nil {
		return err
	}
	q, key, m, p, data, err := s.sigSetup(c, true)
	if err != nil {
		return err
	}
	if err := s.h.Verify(c.ctx, q.ID, key, m, p, data, sig); err != nil {
		if errors.Is(err, hsm.ErrSignature) || errors.Is(err, hsm.ErrBadData) {
			return refuse(4, rsSigNotVerified, "signature does not verify")
		}
		return simErr(err)
	}
	return nil
}

// hmacCall runs CSNBHMG/CSNBHMV: rules HMAC, SHA-256 (the simulator's
// only HMAC; SHA-1/224/384/512 are refused with 8/33), ONLY (the default;
// FIRST/MIDDLE/LAST are not implemented); chaining vector 128 bytes; an
// HMAC token under the AES master key. MAC_length is the digest length
// (32); a MAC that does not verify is 4/1 (§1.15).
func (s *Server) hmacCall(c *call, gen bool) error {
	_, err := c.rules(4, 2, 3,
		ruleGroup{words: []string{"HMAC"}, required: true},
		ruleGroup{words: []string{"SHA-256"}, required: true},
		ruleGroup{words: []string{"ONLY"}, def: "ONLY"})
	if err != nil {
		return err
	}
	tok, err := c.inBuf(6, 1, 8000, "key_identifier")
	if err != nil {
		return err
	}
	msg, err := c.inBuf(8, 0, MaxBuffer, "message_text")
	if err != nil {
		return err
	}
	if n, _ := c.intArg(10); n != 128 {
		return refuse(8, rsLength, "chaining_vector_length %d, want 128", n)
	}
	q, err := s.apqn(c)
	if err != nil {
		return err
	}
	if _, err := c.keyToken(q, tok, hsm.LayoutCCAHMAC); err != nil {
		return err
	}
	if gen {
		mac, err := s.h.Sign(c.ctx, q.ID, tok, hsm.MechHMACSHA256, hsm.Params{}, msg)
		if err != nil {
			return simErr(err)
		}
		return c.output(12, mac, "MAC")
	}
	mac, err := c.inBuf(12, 32, 32, "MAC")
	if err != nil {
		return err
	}
	if err := s.h.Verify(c.ctx, q.ID, tok, hsm.MechHMACSHA256, hsm.Params{}, msg, mac); err != nil {
		if errors.Is(err, hsm.ErrSignature) {
			return refuse(4, rsVerifyFailed, "MAC does not verify")
		}
		return simErr(err)
	}
	return nil
}

func (s *Server) csnbhmg(c *call) error { return s.hmacCall(c, true) }
func (s *Server) csnbhmv(c *call) error { return s.hmacCall(c, false) }
