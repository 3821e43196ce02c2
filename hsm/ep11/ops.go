package ep11

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/internal/backend"
	"github.com/pkcshsm/pkcshsm/hsm/internal/pkcs1"
	"github.com/pkcshsm/pkcshsm/hsm/internal/pubkey"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// PKCS#11 values (PKCS#11 v2.40 pkcs11t.h; CKM_AES_KEY_WRAP_KWP from
// v3.0).
const (
	ckmRSAKeyPairGen  = 0x0000
	ckmRSAPKCS        = 0x0001
	ckmRSAOAEP        = 0x0009
	ckmRSAPSS         = 0x000D
	ckmDES3KeyGen     = 0x0131
	ckmDES3ECB        = 0x0132
	ckmDES3CBC        = 0x0133
	ckmSHA1           = 0x0220
	ckmSHA256         = 0x0250
	ckmSHA224         = 0x0255
	ckmSHA256HMAC     = 0x0251
	ckmSHA384         = 0x0260
	ckmSHA512         = 0x0270
	ckmGenericKeyGen  = 0x0350
	ckmECKeyPairGen   = 0x1040
	ckmECDSA          = 0x1041
	ckmAESKeyGen      = 0x1080
	ckmAESECB         = 0x1081
	ckmAESCBC         = 0x1082
	ckmAESCBCPad      = 0x1085
	ckmAESGCM         = 0x1087
	ckmAESKeyWrap     = 0x2109
	ckmAESKeyWrapKWP  = 0x210B
	ckaClass          = 0x0000
	ckaValue          = 0x0011
	ckaKeyType        = 0x0100
	ckaSensitive      = 0x0103
	ckaEncrypt        = 0x0104
	ckaDecrypt        = 0x0105
	ckaWrap           = 0x0106
	ckaUnwrap         = 0x0107
	ckaSign           = 0x0108
	ckaVerify         = 0x010A
	ckaModulusBits    = 0x0121
	ckaPublicExponent = 0x0122
	ckaPublicKeyInfo  = 0x0129
	ckaValueLen       = 0x0161
	ckaECParams       = 0x0180
	ckoPrivateKey     = 3
	ckoSecretKey      = 4
	ckkRSA            = 0x00
	ckkEC             = 0x03
	ckkGenericSecret  = 0x10
	ckkDES3           = 0x15
	ckkAES            = 0x1F
)

// mechFor returns the CK_MECHANISM of a key type's generation.
func genMech(k hsm.KeyType) uint64 {
	switch k {
	case hsm.KeyAES:
		return ckmAESKeyGen
	case hsm.KeyDES3:
		return ckmDES3KeyGen
	case hsm.KeyHMAC:
		return ckmGenericKeyGen
	}
	return 0
}

// secretAttrs is the template of a secret key: its length where the
// mechanism needs one and what it may be used for.
func secretAttrs(spec hsm.KeySpec) []attr {
	switch spec.Type {
	case hsm.KeyAES:
		return []attr{ulongAttr(ckaValueLen, uint64(spec.Bits/8)), boolAttr(ckaEncrypt, true), boolAttr(ckaDecrypt, true),
			boolAttr(ckaWrap, true), boolAttr(ckaUnwrap, true), boolAttr(ckaSensitive, true)}
	case hsm.KeyDES3:
		return []attr{boolAttr(ckaEncrypt, true), boolAttr(ckaDecrypt, true), boolAttr(ckaSensitive, true)}
	case hsm.KeyHMAC:
		return []attr{ulongAttr(ckaValueLen, uint64(spec.Bits/8)), boolAttr(ckaSign, true), boolAttr(ckaVerify, true), boolAttr(ckaSensitive, true)}
	}
	return nil
}

var curveOIDs = map[int][]byte{
	256: {0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}, // prime256v1
	384: {0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22},                   // secp384r1
}

// prepare selects q, reads its wrapping key and, when ctx carries a
// binder, the pin blob that binds new keys to the EP11 session
// (host-libraries.md §2.4: the pin argument of GenerateKey,
// GenerateKeyPair and UnwrapKey).
func (b *Backend) prepare(ctx context.Context, q apqn.ID, bind bool) (uint64, mkvp.Pattern, []byte, error) {
	t, err := b.target(ctx, q)
	if err != nil {
		return 0, mkvp.Pattern{}, nil, err
	}
	r, err := b.wkRegisters(t, q)
	if err != nil {
		return 0, mkvp.Pattern{}, nil, err
	}
	cur := r.Current
	if cur.State != apqn.StateValid {
		return 0, mkvp.Pattern{}, nil, errclass.New(errclass.FailedPrecondition, "APQN %s has no current wrapping key: %w", q, hsm.ErrRegisterState)
	}
	var pin []byte
	if bd := hsm.BinderFrom(ctx); bind && bd != nil {
		if pin, err = bd.PinBlob(ctx, q, cur.Pattern); err != nil {
			return 0, mkvp.Pattern{}, nil, err
		}
	}
	return t, cur.Pattern, pin, nil
}

// checkNew checks a blob the library made: an EP11 key of spec under
// the CURRENT wrapping key.
func checkNew(fn string, q apqn.ID, blob []byte, spec hsm.KeySpec, wk mkvp.Pattern) ([]byte, error) {
	info, err := hsm.Inspect(blob)
	if err != nil {
		return nil, errclass.New(errclass.Internal, "%s on APQN %s returned a blob pkcshsm cannot read: %v", fn, q, err)
	}
	if info.Mode != apqn.ModeEP11 || info.KeyType != spec.Type || info.Bits != spec.Bits || info.Pattern != wk {
		return nil, errclass.New(errclass.Internal, "%s on APQN %s returned a %s %d-bit key under %s, want %s %d-bit under %s",
			fn, q, info.KeyType, info.Bits, info.Pattern, spec.Type, spec.Bits, wk)
	}
	return blob, nil
}

// GenerateKey calls m_GenerateKey.
func (b *Backend) GenerateKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	m := genMech(spec.Type)
	if m == 0 {
		return nil, errclass.New(errclass.InvalidArgument, "GenerateKey makes secret keys, not %s: use GenerateKeyPair", spec.Type)
	}
	t, wk, pin, err := b.prepare(ctx, q, true)
	if err != nil {
		return nil, err
	}
	blob, rv := b.lib.generateKey(t, m, secretAttrs(spec), pin)
	if rv != 0 {
		return nil, rvError("m_GenerateKey", q, rv)
	}
	return checkNew("m_GenerateKey", q, blob, spec, wk)
}

// GenerateKeyPair calls m_GenerateKeyPair; the public key comes back as a
// MACed SPKI (host-libraries.md §2.8) whose first element is the DER
// SubjectPublicKeyInfo.
func (b *Backend) GenerateKeyPair(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, []byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, nil, err
	}
	var m uint64
	var pub, priv []attr
	switch spec.Type {
	case hsm.KeyEC:
		m = ckmECKeyPairGen
		pub = []attr{bytesAttr(ckaECParams, curveOIDs[spec.Bits]), boolAttr(ckaVerify, true)}
		priv = []attr{boolAttr(ckaSign, true), boolAttr(ckaSensitive, true)}
	case hsm.KeyRSA:
		m = ckmRSAKeyPairGen
		pub = []attr{ulongAttr(ckaModulusBits, uint64(spec.Bits)), bytesAttr(ckaPublicExponent, []byte{1, 0, 1}),
			boolAttr(ckaEncrypt, true), boolAttr(ckaVerify, true)}
		priv = []attr{boolAttr(ckaDecrypt, true), boolAttr(ckaSign, true), boolAttr(ckaSensitive, true)}
	default:
		return nil, nil, errclass.New(errclass.InvalidArgument, "GenerateKeyPair makes EC and RSA keys, not %s", spec.Type)
	}
	t, wk, pin, err := b.prepare(ctx, q, true)
	if err != nil {
		return nil, nil, err
	}
	key, maced, rv := b.lib.generateKeyPair(t, m, pub, priv, pin)
	if rv != 0 {
		return nil, nil, rvError("m_GenerateKeyPair", q, rv)
	}
	if key, err = checkNew("m_GenerateKeyPair", q, key, spec, wk); err != nil {
		return nil, nil, err
	}
	spki, err := spkiOf(maced)
	if err != nil {
		return nil, nil, errclass.New(errclass.Internal, "m_GenerateKeyPair on APQN %s: %v", q, err)
	}
	return key, spki, nil
}

// spkiOf returns the SubjectPublicKeyInfo at the start of a MACed SPKI,
// checked by parsing it.
func spkiOf(maced []byte) ([]byte, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(maced, &raw); err != nil {
		return nil, errclass.New(errclass.Internal, "public key is not a MACed SPKI: %v", err)
	}
	if _, err := x509.ParsePKIXPublicKey(raw.FullBytes); err != nil {
		return nil, errclass.New(errclass.Internal, "public key is not a SubjectPublicKeyInfo: %v", err)
	}
	return append([]byte(nil), raw.FullBytes...), nil
}

// keyFor checks the blob a call is given (hsm/internal/backend).
func keyFor(q apqn.ID, key []byte, m hsm.Mechanism, types ...hsm.KeyType) (hsm.BlobInfo, error) {
	return backend.Key(q, apqn.ModeEP11, key, m, types...)
}

var (
	mechErr = backend.MechErr
	dataErr = backend.DataErr
)

// PublicKey reads CKA_PUBLIC_KEY_INFO of a private key blob with
// m_GetAttributeValue (openCryptoki import_blob; host-libraries.md §2.4).
func (b *Backend) PublicKey(ctx context.Context, q apqn.ID, key []byte) ([]byte, error) {
	if _, err := keyFor(q, key, 0, hsm.KeyEC, hsm.KeyRSA); err != nil {
		return nil, err
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	v, rv := b.lib.attribute(t, key, ckaPublicKeyInfo, 4096)
	if rv != 0 {
		return nil, rvError("m_GetAttributeValue(CKA_PUBLIC_KEY_INFO)", q, rv)
	}
	if _, err := x509.ParsePKIXPublicKey(v); err != nil {
		return nil, errclass.New(errclass.Internal, "m_GetAttributeValue(CKA_PUBLIC_KEY_INFO) on APQN %s returned no SubjectPublicKeyInfo: %v", q, err)
	}
	return v, nil
}

var hashMech = map[crypto.Hash]struct{ mech, mgf uint64 }{
	crypto.SHA1:   {ckmSHA1, 1},
	crypto.SHA256: {ckmSHA256, 2},
	crypto.SHA384: {ckmSHA384, 3},
	crypto.SHA512: {ckmSHA512, 4},
	crypto.SHA224: {ckmSHA224, 5},
}

// cipherMech maps an encryption mechanism and its parameters to
// CK_MECHANISM, checking the key type, IV and data.
func cipherMech(q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte, enc bool) (mechSpec, int, error) {
	plain := func(ck uint64) mechSpec { return func(a *arena) *cmech { return a.mech(ck, nil, 0) } }
	withIV := func(ck uint64, iv []byte) mechSpec {
		return func(a *arena) *cmech { return a.mech(ck, a.bytes(iv, len(iv)), len(iv)) }
	}
	switch m {
	case hsm.MechAESECB, hsm.MechAESCBC, hsm.MechAESCBCPad, hsm.MechAESGCM:
		if _, err := keyFor(q, key, m, hsm.KeyAES); err != nil {
			return nil, 0, err
		}
	case hsm.MechDES3CBC, hsm.MechDES3ECB:
		if _, err := keyFor(q, key, m, hsm.KeyDES3); err != nil {
			return nil, 0, err
		}
	case hsm.MechRSAOAEP:
		if _, err := keyFor(q, key, m, hsm.KeyRSA); err != nil {
			return nil, 0, err
		}
	default:
		return nil, 0, mechErr("%s is not an encryption mechanism", m)
	}
	switch m {
	case hsm.MechAESECB:
		if len(data)%16 != 0 {
			return nil, 0, dataErr("AES-ECB data of %d bytes is not a multiple of 16", len(data))
		}
		return plain(ckmAESECB), len(data), nil
	case hsm.MechAESCBC, hsm.MechAESCBCPad:
		if len(p.IV) != 16 {
			return nil, 0, mechErr("%s needs a 16-byte IV, not %d bytes", m, len(p.IV))
		}
		if m == hsm.MechAESCBC || !enc {
			if len(data)%16 != 0 || m == hsm.MechAESCBCPad && len(data) == 0 {
				return nil, 0, dataErr("%s data of %d bytes is not a multiple of 16", m, len(data))
			}
		}
		ck := uint64(ckmAESCBC)
		if m == hsm.MechAESCBCPad {
			ck = ckmAESCBCPad
		}
		return withIV(ck, p.IV), len(data) + 16, nil
	case hsm.MechAESGCM:
		tag := p.TagBits
		if tag == 0 {
			tag = 128
		}
		if tag%8 != 0 || tag < 96 || tag > 128 {
			return nil, 0, mechErr("AES-GCM tag of %d bits: use 96 to 128 bits in steps of 8", tag)
		}
		if len(p.IV) == 0 {
			return nil, 0, mechErr("AES-GCM needs an IV")
		}
		if !enc && len(data) < tag/8 {
			return nil, 0, dataErr("AES-GCM ciphertext of %d bytes is shorter than its tag", len(data))
		}
		iv, aad := p.IV, p.AAD
		return func(a *arena) *cmech {
			pp, n := a.gcmParams(iv, aad, tag)
			return a.mech(ckmAESGCM, pp, n)
		}, len(data) + 16, nil
	case hsm.MechDES3CBC:
		if len(p.IV) != 8 {
			return nil, 0, mechErr("DES3-CBC needs an 8-byte IV, not %d bytes", len(p.IV))
		}
		if len(data)%8 != 0 {
			return nil, 0, dataErr("DES3-CBC data of %d bytes is not a multiple of 8", len(data))
		}
		return withIV(ckmDES3CBC, p.IV), len(data), nil
	case hsm.MechDES3ECB:
		if len(data)%8 != 0 {
			return nil, 0, dataErr("DES3-ECB data of %d bytes is not a multiple of 8", len(data))
		}
		return plain(ckmDES3ECB), len(data), nil
	case hsm.MechRSAOAEP:
		h, ok := hashMech[p.Hash]
		if !ok {
			return nil, 0, mechErr("RSA-OAEP with hash %v is not supported", p.Hash)
		}
		label := p.Label
		return func(a *arena) *cmech {
			pp, n := a.oaepParams(h.mech, h.mgf, label)
			return a.mech(ckmRSAOAEP, pp, n)
		}, 1024, nil
	}
	return nil, 0, mechErr("%s is not an encryption mechanism", m)
}

// Encrypt calls m_EncryptSingle.
func (b *Backend) Encrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	if pub := pubkey.Parse(key); pub != nil && m == hsm.MechRSAOAEP {
		if _, err := b.sysQueue(q); err != nil {
			return nil, err
		}
		return pubkey.EncryptOAEP(pub, p, data)
	}
	ms, capacity, err := cipherMech(q, key, m, p, data, true)
	if err != nil {
		return nil, err
	}
	if m == hsm.MechRSAOAEP {
		// The public half does the encryption; EP11 takes it as a MACed
		// SPKI, and the private blob's CKA_PUBLIC_KEY_INFO is plain: use
		// the software RSA operation on the extracted public key, as the
		// result is the same and no secret is involved.
		return b.oaepEncrypt(ctx, q, key, p, data)
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	out, rv := b.lib.single("m_EncryptSingle", t, key, ms, data, capacity)
	if rv != 0 {
		return nil, rvError("m_EncryptSingle", q, rv)
	}
	return out, nil
}

func (b *Backend) oaepEncrypt(ctx context.Context, q apqn.ID, key []byte, p hsm.Params, data []byte) ([]byte, error) {
	der, err := b.PublicKey(ctx, q, key)
	if err != nil {
		return nil, err
	}
	return pubkey.EncryptOAEP(pubkey.Parse(der), p, data)
}

// Decrypt calls m_DecryptSingle.
func (b *Backend) Decrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	ms, capacity, err := cipherMech(q, key, m, p, data, false)
	if err != nil {
		return nil, err
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	out, rv := b.lib.single("m_DecryptSingle", t, key, ms, data, capacity)
	if rv != 0 {
		return nil, rvError("m_DecryptSingle", q, rv)
	}
	return out, nil
}

// signMech maps a signature mechanism to CK_MECHANISM and its input.
func signMech(q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) (mechSpec, []byte, error) {
	plain := func(ck uint64) mechSpec { return func(a *arena) *cmech { return a.mech(ck, nil, 0) } }
	switch m {
	case hsm.MechHMACSHA256:
		if _, err := keyFor(q, key, m, hsm.KeyHMAC); err != nil {
			return nil, nil, err
		}
		return plain(ckmSHA256HMAC), data, nil
	case hsm.MechECDSA:
		if _, err := keyFor(q, key, m, hsm.KeyEC); err != nil {
			return nil, nil, err
		}
		return plain(ckmECDSA), data, nil
	case hsm.MechRSAPKCS:
		if _, err := keyFor(q, key, m, hsm.KeyRSA); err != nil {
			return nil, nil, err
		}
		if p.Hash == 0 {
			return plain(ckmRSAPKCS), data, nil
		}
		di, ok := pkcs1.DigestInfo(p.Hash, data)
		if !ok {
			return nil, nil, mechErr("RSA-PKCS with hash %v and a %d-byte digest is not supported", p.Hash, len(data))
		}
		return plain(ckmRSAPKCS), di, nil
	case hsm.MechRSAPSS:
		if _, err := keyFor(q, key, m, hsm.KeyRSA); err != nil {
			return nil, nil, err
		}
		h, ok := hashMech[p.Hash]
		if !ok || len(data) != p.Hash.Size() {
			return nil, nil, mechErr("RSA-PSS with hash %v and a %d-byte digest is not supported", p.Hash, len(data))
		}
		if p.SaltLen < 0 {
			return nil, nil, mechErr("RSA-PSS salt length %d", p.SaltLen)
		}
		salt := p.SaltLen
		return func(a *arena) *cmech {
			pp, n := a.pssParams(h.mech, h.mgf, salt)
			return a.mech(ckmRSAPSS, pp, n)
		}, data, nil
	}
	return nil, nil, mechErr("%s is not a signature mechanism", m)
}

// Sign calls m_SignSingle.
func (b *Backend) Sign(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	ms, in, err := signMech(q, key, m, p, data)
	if err != nil {
		return nil, err
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	out, rv := b.lib.single("m_SignSingle", t, key, ms, in, 1024)
	if rv != 0 {
		return nil, rvError("m_SignSingle", q, rv)
	}
	return out, nil
}

// Verify checks a signature. HMAC keys verify with m_VerifySingle on the
// secret blob; public-key signatures are checked against the public key
// the private blob reports (CKA_PUBLIC_KEY_INFO), as EP11 verifies with
// MACed SPKIs the token does not keep.
func (b *Backend) Verify(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	if pub := pubkey.Parse(key); pub != nil {
		if _, err := b.sysQueue(q); err != nil {
			return err
		}
		return pubkey.Verify(pub, m, p, data, sig)
	}
	ms, in, err := signMech(q, key, m, p, data)
	if err != nil {
		return err
	}
	if m != hsm.MechHMACSHA256 {
		return b.verifyPublic(ctx, q, key, m, p, data, sig)
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return err
	}
	if rv := b.lib.verifySingle(t, key, ms, in, sig); rv != 0 {
		return rvError("m_VerifySingle", q, rv)
	}
	return nil
}

func (b *Backend) verifyPublic(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	der, err := b.PublicKey(ctx, q, key)
	if err != nil {
		return err
	}
	pub := pubkey.Parse(der)
	if pub == nil {
		return errclass.New(errclass.Internal, "public key of APQN %s is not a SubjectPublicKeyInfo", q)
	}
	return pubkey.Verify(pub, m, p, data, sig)
}
