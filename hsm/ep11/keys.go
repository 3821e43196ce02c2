package ep11

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// unwrapTemplate is the template of a key made by m_UnwrapKey.
func unwrapTemplate(spec hsm.KeySpec) []attr {
	switch spec.Type {
	case hsm.KeyAES:
		return append([]attr{ulongAttr(ckaClass, ckoSecretKey), ulongAttr(ckaKeyType, ckkAES)}, secretAttrs(spec)...)
	case hsm.KeyDES3:
		return append([]attr{ulongAttr(ckaClass, ckoSecretKey), ulongAttr(ckaKeyType, ckkDES3)}, secretAttrs(spec)...)
	case hsm.KeyHMAC:
		return append([]attr{ulongAttr(ckaClass, ckoSecretKey), ulongAttr(ckaKeyType, ckkGenericSecret)}, secretAttrs(spec)...)
	case hsm.KeyEC:
		return []attr{ulongAttr(ckaClass, ckoPrivateKey), ulongAttr(ckaKeyType, ckkEC), boolAttr(ckaSign, true), boolAttr(ckaSensitive, true)}
	case hsm.KeyRSA:
		return []attr{ulongAttr(ckaClass, ckoPrivateKey), ulongAttr(ckaKeyType, ckkRSA), boolAttr(ckaSign, true),
			boolAttr(ckaDecrypt, true), boolAttr(ckaSensitive, true)}
	}
	return nil
}

// checkMaterial validates clear key material against spec: raw secret
// bytes of the right length, or PKCS#8 DER of the right key.
func checkMaterial(spec hsm.KeySpec, material []byte) error {
	switch spec.Type {
	case hsm.KeyAES, hsm.KeyDES3, hsm.KeyHMAC:
		if 8*len(material) != spec.Bits {
			return dataErr("%s key material of %d bytes for a %d-bit key", spec.Type, len(material), spec.Bits)
		}
		return nil
	}
	k, err := x509.ParsePKCS8PrivateKey(material)
	if err != nil {
		return dataErr("private key material is not PKCS#8 DER: %v", err)
	}
	switch key := k.(type) {
	case *ecdsa.PrivateKey:
		if spec.Type == hsm.KeyEC && key.Curve.Params().BitSize == spec.Bits {
			return nil
		}
	case *rsa.PrivateKey:
		if spec.Type == hsm.KeyRSA && key.N.BitLen() == spec.Bits {
			return nil
		}
	}
	return dataErr("PKCS#8 key does not match a %d-bit %s key", spec.Bits, spec.Type)
}

// ImportKey enciphers clear key material as openCryptoki's EP11 token
// imports clear keys: a fresh AES transport key made on the adapter
// (m_GenerateKey) encrypts the material with CKM_AES_CBC_PAD
// (m_EncryptSingle), and m_UnwrapKey makes the secure key from it.
func (b *Backend) ImportKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec, material []byte) ([]byte, error) {
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	if err := checkMaterial(spec, material); err != nil {
		return nil, err
	}
	t, wk, pin, err := b.prepare(ctx, q, true)
	if err != nil {
		return nil, err
	}
	tk, rv := b.lib.generateKey(t, ckmAESKeyGen, []attr{ulongAttr(ckaValueLen, 32), boolAttr(ckaEncrypt, true), boolAttr(ckaUnwrap, true)}, nil)
	if rv != 0 {
		return nil, rvError("m_GenerateKey (transport key)", q, rv)
	}
	iv := make([]byte, 16)
	if _, err := rand.Read(iv); err != nil {
		return nil, errclass.New(errclass.Internal, "random IV: %v", err)
	}
	cbcPad := func(a *arena) *cmech { return a.mech(ckmAESCBCPad, a.bytes(iv, 16), 16) }
	enc, rv := b.lib.single("m_EncryptSingle", t, tk, cbcPad, material, len(material)+16)
	if rv != 0 {
		return nil, rvError("m_EncryptSingle (transport)", q, rv)
	}
	blob, rv := b.lib.unwrapKey(t, enc, tk, cbcPad, unwrapTemplate(spec), pin)
	if rv != 0 {
		return nil, rvError("m_UnwrapKey", q, rv)
	}
	return checkNew("m_UnwrapKey", q, blob, spec, wk)
}

func wrapMech(m hsm.Mechanism) (mechSpec, error) {
	var ck uint64
	switch m {
	case hsm.MechAESKW:
		ck = ckmAESKeyWrap
	case hsm.MechAESKWP:
		ck = ckmAESKeyWrapKWP
	default:
		return nil, mechErr("%s is not a key wrapping mechanism", m)
	}
	return func(a *arena) *cmech { return a.mech(ck, nil, 0) }, nil
}

// WrapKey calls m_WrapKey with the caller's mechanism, as openCryptoki
// does (host-libraries.md §2.4; whether the firmware lists AES-KW and
// AES-KWP is the card's mechanism list).
func (b *Backend) WrapKey(ctx context.Context, q apqn.ID, wrapping []byte, m hsm.Mechanism, p hsm.Params, target []byte) ([]byte, error) {
	ms, err := wrapMech(m)
	if err != nil {
		return nil, err
	}
	if _, err := keyFor(q, wrapping, m, hsm.KeyAES); err != nil {
		return nil, err
	}
	if _, err := keyFor(q, target, m, hsm.KeyAES, hsm.KeyDES3, hsm.KeyHMAC); err != nil {
		return nil, err
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	out, rv := b.lib.wrapKey(t, target, wrapping, ms)
	if rv != 0 {
		return nil, rvError("m_WrapKey", q, rv)
	}
	return out, nil
}

// UnwrapKey calls m_UnwrapKey.
func (b *Backend) UnwrapKey(ctx context.Context, q apqn.ID, unwrapping []byte, m hsm.Mechanism, p hsm.Params, wrapped []byte, spec hsm.KeySpec) ([]byte, error) {
	ms, err := wrapMech(m)
	if err != nil {
		return nil, err
	}
	if err := hsm.CheckSpec(spec); err != nil {
		return nil, err
	}
	if _, err := keyFor(q, unwrapping, m, hsm.KeyAES); err != nil {
		return nil, err
	}
	t, wk, pin, err := b.prepare(ctx, q, true)
	if err != nil {
		return nil, err
	}
	blob, rv := b.lib.unwrapKey(t, wrapped, unwrapping, ms, unwrapTemplate(spec), pin)
	if rv != 0 {
		return nil, rvError("m_UnwrapKey", q, rv)
	}
	return checkNew("m_UnwrapKey", q, blob, spec, wk)
}

// Reencipher re-enciphers a blob from the CURRENT to the committed NEW
// wrapping key with XCP_ADM_REENCRYPT (host-libraries.md §2.7, from
// ep11tok_reencipher_blob): the blob keeps its length and must come back
// under the NEW pattern. EP11 has no OLD register.
func (b *Backend) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	info, err := hsm.Inspect(blob)
	if err != nil {
		return nil, err
	}
	if info.Mode != apqn.ModeEP11 {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s is EP11, the key is a %s key: %w", q, info.Mode, hsm.ErrWrongMode)
	}
	switch d {
	case hsm.ToNew:
	case hsm.FromOld:
		return nil, errclass.New(errclass.InvalidArgument, "EP11 has no OLD register to re-encipher from: %w", hsm.ErrWrongMode)
	default:
		return nil, errclass.New(errclass.InvalidArgument, "unknown re-encipher direction %d", d)
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	r, err := b.wkRegisters(t, q)
	if err != nil {
		return nil, err
	}
	if r.New.State != apqn.StateCommitted {
		return nil, errclass.Newh(errclass.FailedPrecondition, "load and commit the new wrapping key first",
			"APQN %s: re-encipher to NEW needs the NEW wrapping key committed, it is %s: %w", q, r.New.State, hsm.ErrRegisterState)
	}
	if r.Current.Pattern != info.Pattern {
		return nil, errclass.New(errclass.FailedPrecondition, "APQN %s: the key's wrapping key %s is not the CURRENT one: %w", q, info.Pattern, hsm.ErrWrongMK)
	}
	res, rv, err := b.lib.reencrypt(t, q.Domain, blob)
	if err != nil {
		return nil, errclass.New(errclass.Of(err), "APQN %s: %w", q, err)
	}
	if rv != 0 {
		return nil, rvError("m_admin(XCP_ADM_REENCRYPT)", q, rv)
	}
	if res.rv != 0 {
		if res.reason == xcpRscWKMissing || res.reason == xcpRscNextWKMissing {
			return nil, errclass.New(errclass.FailedPrecondition, "XCP_ADM_REENCRYPT on APQN %s: CK_RV 0x%X, reason %d (wrapping key missing): %w", q, res.rv, res.reason, hsm.ErrRegisterState)
		}
		return nil, errclass.New(errclass.Of(rvError("", q, res.rv)), "XCP_ADM_REENCRYPT on APQN %s: CK_RV 0x%X, reason %d: %w", q, res.rv, res.reason, rvError("XCP_ADM_REENCRYPT", q, res.rv))
	}
	if len(res.payload) != len(blob) {
		return nil, errclass.New(errclass.Internal, "XCP_ADM_REENCRYPT on APQN %s returned %d bytes for a %d-byte blob", q, len(res.payload), len(blob))
	}
	got, err := hsm.Inspect(res.payload)
	if err != nil || got.Pattern != r.New.Pattern || got.KeyType != info.KeyType || got.Bits != info.Bits || got.Bound() != info.Bound() {
		return nil, errclass.New(errclass.Internal, "XCP_ADM_REENCRYPT on APQN %s returned a blob not under the NEW wrapping key %s", q, r.New.Pattern)
	}
	return res.payload, nil
}

// Login calls m_Login on q's single-APQN target (host-libraries.md
// §2.6); the pin blob must be XCP_PINBLOB_BYTES long.
func (b *Backend) Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error) {
	if len(pin) < hsm.MinPINBytes || len(pin) > hsm.MaxPINBytes {
		return nil, errclass.New(errclass.InvalidArgument, "EP11 session PIN of %d bytes, want %d to %d: %w", len(pin), hsm.MinPINBytes, hsm.MaxPINBytes, hsm.ErrBadPIN)
	}
	if len(nonce) == 0 || len(nonce) > hsm.MaxNonceBytes {
		return nil, errclass.New(errclass.InvalidArgument, "EP11 session nonce of %d bytes, want 1 to %d: %w", len(nonce), hsm.MaxNonceBytes, hsm.ErrBadPIN)
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return nil, err
	}
	blob, rv := b.lib.login(t, pin, nonce)
	switch rv {
	case 0:
	case ckrPinIncorrect, ckrPinInvalid, ckrPinLenRange:
		return nil, errclass.New(errclass.InvalidArgument, "m_Login on APQN %s returned CK_RV 0x%X: %w", q, rv, hsm.ErrBadPIN)
	case ckrSessionCount:
		return nil, errclass.New(errclass.Unavailable, "m_Login on APQN %s returned CK_RV 0x%X (CKR_SESSION_COUNT): %w", q, rv, hsm.ErrSessionLimit)
	default:
		return nil, rvError("m_Login", q, rv)
	}
	if len(blob) != hsm.PinBlobSize {
		return nil, errclass.New(errclass.Internal, "m_Login on APQN %s returned a %d-byte pin blob, want %d", q, len(blob), hsm.PinBlobSize)
	}
	return blob, nil
}

// Logout calls m_Logout with the pin blob.
func (b *Backend) Logout(ctx context.Context, q apqn.ID, pinBlob []byte) error {
	if len(pinBlob) != hsm.PinBlobSize {
		return errclass.New(errclass.InvalidArgument, "pin blob of %d bytes, want %d: %w", len(pinBlob), hsm.PinBlobSize, hsm.ErrNoSession)
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return err
	}
	switch rv := b.lib.logout(t, pinBlob); rv {
	case 0:
		return nil
	case ckrUserNotLoggedIn, ckrSessionHandleInv, ckrPinIncorrect:
		return errclass.New(errclass.NotFound, "m_Logout on APQN %s returned CK_RV 0x%X: %w", q, rv, hsm.ErrNoSession)
	default:
		return rvError("m_Logout", q, rv)
	}
}

// SessionStatus: the EP11 host library functions the project follows
// report no session count, so there is none to give.
func (b *Backend) SessionStatus(ctx context.Context, q apqn.ID) (hsm.SessionStatus, error) {
	if _, err := b.sysQueue(q); err != nil {
		return hsm.SessionStatus{}, err
	}
	return hsm.SessionStatus{}, errclass.Newh(errclass.FailedPrecondition, "use ep11info or the TKE to see the sessions of an adapter",
		"the EP11 host library does not report how many sessions APQN %s holds", q)
}
