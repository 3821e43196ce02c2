package tokenlib

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"hash"
	"math/big"

	_ "crypto/sha1" // registers SHA-1 for crypto.Hash.New
	_ "crypto/sha256"
	_ "crypto/sha512"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/opbuf"
	"github.com/pkcshsm/pkcshsm/tokenlib/oprules"
)

// opKind is the kind (function family) of a crypto operation; a session
// has at most one active operation of each kind. The rules of PKCS#11 §5
// for them are one table, in package oprules.
type opKind = oprules.Family

const (
	opEncrypt = oprules.Encrypt
	opDecrypt = oprules.Decrypt
	opSign    = oprules.Sign
	opVerify  = oprules.Verify
	opDigest  = oprules.Digest
)

var opNames = map[opKind]string{opEncrypt: "encrypt", opDecrypt: "decrypt", opSign: "sign", opVerify: "verify", opDigest: "digest"}

// opState is an active operation. Multi-part encryption and decryption with
// the block mechanisms work block by block as the parts come (see
// multipart.go); the other multi-part operations buffer their input and do
// the work at Final (hash-then-sign mechanisms and digests hash as they
// go). The key is a snapshot taken at Init.
type opState struct {
	mech   Mechanism
	spec   mechSpec
	params hsm.Params
	key    *object
	tok    *token
	epoch  uint64
	buf    []byte // input not processed yet
	iv     []byte // block modes: the IV of the next backend call (nil: params.IV)
	total  int    // block modes: bytes given to the Update calls
	h      hash.Hash
	result []byte        // output computed for a length query, returned next time
	pooled bool          // the last crypt's output is a buffer of package opbuf (see crypt)
	phase  oprules.Phase // how far the operation got (oprules.Rule.Allowed)
}

// opFlags are the mechanism flags and key attributes each kind needs.
var opNeeds = map[opKind]struct {
	flag ck.Flags
	attr ck.Attribute
}{
	opEncrypt: {ck.CKF_ENCRYPT, ck.CKA_ENCRYPT},
	opDecrypt: {ck.CKF_DECRYPT, ck.CKA_DECRYPT},
	opSign:    {ck.CKF_SIGN, ck.CKA_SIGN},
	opVerify:  {ck.CKF_VERIFY, ck.CKA_VERIFY},
}

func errMechanism(m ck.Mechanism, what string) error {
	return newErrh(ck.CKR_MECHANISM_INVALID, errclass.InvalidArgument,
		"list the token's mechanisms with `pkcshsm mechanisms`", "mechanism %v cannot %s on this token", m, what)
}

// wantClass is the key class an operation kind needs for a mechanism.
func wantClass(kind opKind, spec mechSpec) ck.ObjectClass {
	switch spec.keyType {
	case ck.CKK_EC, ck.CKK_RSA:
		if kind == opEncrypt || kind == opVerify {
			return ck.CKO_PUBLIC_KEY
		}
		return ck.CKO_PRIVATE_KEY
	}
	return ck.CKO_SECRET_KEY
}

// opInit starts an operation of kind on session s.
func (l *Library) opInit(h SessionHandle, kind opKind, m Mechanism, key ObjectHandle) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.ops[kind] != nil {
		return newErrh(ck.CKR_OPERATION_ACTIVE, errclass.FailedPrecondition,
			"finish or cancel the active operation first", "a %s operation is already active in this session", opNames[kind])
	}
	t := s.tok
	spec, ok := t.mechs[m.Type]
	if !ok {
		return errMechanism(m.Type, opNames[kind])
	}
	op := &opState{mech: m, spec: spec, tok: t}
	if kind == opDigest {
		if spec.info.Flags&ck.CKF_DIGEST == 0 {
			return errMechanism(m.Type, "digest")
		}
		if m.Param != nil {
			return paramErr(m.Type, "%v takes no parameter", m.Type)
		}
		op.h = spec.hash.New()
		s.ops[kind] = op
		return nil
	}
	need := opNeeds[kind]
	t.mu.Lock()
	o, err := t.objectLocked(context.Background(), key)
	op.epoch = t.loginEpoch
	t.mu.Unlock()
	if RV(err) == ck.CKR_OBJECT_HANDLE_INVALID {
		return &Error{rv: ck.CKR_KEY_HANDLE_INVALID, err: errors.Unwrap(err)}
	}
	if err != nil {
		return err
	}
	if err := t.ep11CheckUse(context.Background(), s, o); err != nil {
		return err
	}
	// The key's type is checked before what the token does with the
	// mechanism: CKM_RSA_PKCS with an AES key is CKR_KEY_TYPE_INCONSISTENT
	// whether or not the token encrypts with CKM_RSA_PKCS.
	if !o.isKey() || o.keyType() != spec.keyType || (o.class() != wantClass(kind, spec) && spec.info.Flags&need.flag != 0) {
		return newErrh(ck.CKR_KEY_TYPE_INCONSISTENT, errclass.InvalidArgument,
			"use a key of the mechanism's type", "%v needs a %v %v, key %d is a %v %v",
			m.Type, spec.keyType, wantClass(kind, spec), key, o.keyType(), o.class())
	}
	if spec.info.Flags&need.flag == 0 {
		return errMechanism(m.Type, opNames[kind])
	}
	if !o.flag(need.attr) {
		return newErrh(ck.CKR_KEY_FUNCTION_NOT_PERMITTED, errclass.PermissionDenied,
			"create the key with "+attrName(need.attr)+" true", "key %d has %s false", key, attrName(need.attr))
	}
	p, err := hsmParams(m, spec)
	if err != nil {
		return err
	}
	op.key, op.params = o, p
	if (kind == opSign || kind == opVerify) && spec.hash != 0 {
		op.h = spec.hash.New()
	}
	s.ops[kind] = op
	return nil
}

// withOp runs fn for a call of kind k (Single, Update or Final) on the
// active operation of family kind, following the rules of package
// oprules: a call its phase does not allow is CKR_OPERATION_ACTIVE; fn
// returns the output (nil for none); out == nil asks for the length and a
// short out is CKR_BUFFER_TOO_SMALL, both keep the operation active and
// remember the computed output, so the HSM is asked once and the next
// call of the same function returns it; every other error ends the
// operation, and so does the success of a single-part or Final call.
func (l *Library) withOp(h SessionHandle, kind opKind, k oprules.Kind, out []byte, fn func(op *opState) ([]byte, error)) (int, error) {
	r := oprules.For(kind, k)
	s, op, err := l.activeOp(h, kind)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if err := op.allow(r); err != nil {
		delete(s.ops, kind)
		return 0, err
	}
	pending := (k == oprules.Single && op.phase == oprules.SinglePending) || (k == oprules.Final && op.phase == oprules.FinalPending)
	if !pending {
		op.pooled = false
		res, err := fn(op)
		if err != nil {
			if r.Ends(RV(err), out == nil) {
				delete(s.ops, kind)
			}
			return 0, err
		}
		if k == oprules.Update {
			op.phase = r.After(op.phase)
			return 0, nil
		}
		op.result = res
	}
	n := len(op.result)
	if out == nil || len(out) < n {
		op.phase = r.After(op.phase)
		if out == nil {
			return n, nil
		}
		return n, newErr(ck.CKR_BUFFER_TOO_SMALL, errclass.InvalidArgument, "output buffer has %d bytes, %d needed", len(out), n)
	}
	copy(out, op.result)
	delete(s.ops, kind)
	// The operation is over: its buffered input and a pooled result go
	// back, cleared.
	opbuf.Put(op.buf)
	if op.pooled {
		opbuf.Put(op.result)
	}
	op.buf, op.result, op.pooled = nil, nil, false
	return n, nil
}

// allow checks that a call of r may come now (oprules.Rule.Allowed).
func (op *opState) allow(r oprules.Rule) error {
	if r.Allowed(op.phase) {
		return nil
	}
	switch op.phase {
	case oprules.Multi:
		return newErrh(ck.CKR_OPERATION_ACTIVE, errclass.FailedPrecondition,
			"after an Update, finish with the Final function; the operation has ended, start again with Init",
			"%s after an Update of the %s operation", r.Name, r.Family)
	case oprules.SinglePending:
		return newErrh(ck.CKR_OPERATION_ACTIVE, errclass.FailedPrecondition,
			"after a length query or a short buffer, call the same single-part function again; the operation has ended, start again with Init",
			"%s while the single-part %s call is pending", r.Name, r.Family)
	default:
		return newErrh(ck.CKR_OPERATION_ACTIVE, errclass.FailedPrecondition,
			"after a length query or a short buffer, call the Final function again; the operation has ended, start again with Init",
			"%s while the %s Final call is pending", r.Name, r.Family)
	}
}

// EndOperation ends the active operation of family f in session h, if any:
// the C layer calls it when it refuses a call's arguments and
// oprules says that error ends the operation.
func (l *Library) EndOperation(h SessionHandle, f oprules.Family) {
	s, err := l.session(h)
	if err != nil {
		return
	}
	delete(s.ops, f)
	s.mu.Unlock()
}

// activeOp returns session h, locked, and its active operation of kind.
// An operation on a private key whose login ended is ended here.
func (l *Library) activeOp(h SessionHandle, kind opKind) (*session, *opState, error) {
	s, err := l.session(h)
	if err != nil {
		return nil, nil, err
	}
	op := s.ops[kind]
	if op == nil {
		s.mu.Unlock()
		return nil, nil, newErrh(ck.CKR_OPERATION_NOT_INITIALIZED, errclass.FailedPrecondition,
			"call the matching Init function first", "no %s operation is active in this session", opNames[kind])
	}
	if op.key != nil && op.key.isPrivate() {
		op.tok.mu.Lock()
		stale := op.epoch != op.tok.loginEpoch
		op.tok.mu.Unlock()
		if stale {
			delete(s.ops, kind)
			s.mu.Unlock()
			return nil, nil, newErr(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied, "the login that started the %s operation ended", opNames[kind])
		}
	}
	return s, op, nil
}

func (op *opState) update(data []byte) {
	if op.h != nil {
		op.h.Write(data)
		return
	}
	op.buf = opbuf.Append(op.buf, data)
}

// input returns what the operation works on: the digest for
// hash-then-sign mechanisms and digests, the buffered data otherwise.
func (op *opState) input() []byte {
	if op.h != nil {
		return op.h.Sum(nil)
	}
	return op.buf
}

// EncryptInit starts an encryption (C_EncryptInit).
func (l *Library) EncryptInit(h SessionHandle, m Mechanism, key ObjectHandle) error {
	return l.opInit(h, opEncrypt, m, key)
}

// Encrypt encrypts data in one part (C_Encrypt). out nil returns the
// output length; see withOp for the buffer convention.
//
// Encrypt, like every call that takes data (Decrypt, the Update calls,
// Sign, Verify, Digest), only reads data during the call and keeps no
// reference to it, and writes out only after the whole output is
// computed: the C layer passes the application's buffers in place, and
// they may be one and the same (in-place encryption).
func (l *Library) Encrypt(h SessionHandle, data, out []byte) (int, error) {
	return l.withOp(h, opEncrypt, oprules.Single, out, func(op *opState) ([]byte, error) {
		return op.encrypt(data)
	})
}

// EncryptUpdate continues a multi-part encryption (C_EncryptUpdate) and
// writes to out the ciphertext of the complete blocks it has, returning
// its length: AES-ECB, AES-CBC, AES-CBC-PAD and DES3-CBC stream, AES-GCM
// and RSA-OAEP output everything at EncryptFinal. out nil returns the
// length; a short out is CKR_BUFFER_TOO_SMALL; after either, call again
// with the same data.
func (l *Library) EncryptUpdate(h SessionHandle, data, out []byte) (int, error) {
	return l.withUpdate(h, opEncrypt, data, out)
}

// EncryptFinal finishes a multi-part encryption and returns the rest of
// its output.
func (l *Library) EncryptFinal(h SessionHandle, out []byte) (int, error) {
	return l.withOp(h, opEncrypt, oprules.Final, out, func(op *opState) ([]byte, error) {
		if bm, ok := op.streams(opEncrypt); ok {
			return op.blockFinal(bm, false)
		}
		return op.encrypt(op.buf)
	})
}

// DecryptInit starts a decryption (C_DecryptInit).
func (l *Library) DecryptInit(h SessionHandle, m Mechanism, key ObjectHandle) error {
	return l.opInit(h, opDecrypt, m, key)
}

// Decrypt decrypts data in one part (C_Decrypt).
func (l *Library) Decrypt(h SessionHandle, data, out []byte) (int, error) {
	return l.withOp(h, opDecrypt, oprules.Single, out, func(op *opState) ([]byte, error) {
		return op.decrypt(data)
	})
}

// DecryptUpdate continues a multi-part decryption (C_DecryptUpdate); see
// EncryptUpdate. AES-CBC-PAD holds back the last complete block until
// more data comes or DecryptFinal removes its padding.
func (l *Library) DecryptUpdate(h SessionHandle, data, out []byte) (int, error) {
	return l.withUpdate(h, opDecrypt, data, out)
}

// DecryptFinal finishes a multi-part decryption and returns the rest of
// its output.
func (l *Library) DecryptFinal(h SessionHandle, out []byte) (int, error) {
	return l.withOp(h, opDecrypt, oprules.Final, out, func(op *opState) ([]byte, error) {
		if bm, ok := op.streams(opDecrypt); ok {
			return op.blockFinal(bm, true)
		}
		return op.decrypt(op.buf)
	})
}

// SignInit starts a signature or MAC (C_SignInit).
func (l *Library) SignInit(h SessionHandle, m Mechanism, key ObjectHandle) error {
	return l.opInit(h, opSign, m, key)
}

// Sign signs data in one part (C_Sign).
func (l *Library) Sign(h SessionHandle, data, out []byte) (int, error) {
	return l.withOp(h, opSign, oprules.Single, out, func(op *opState) ([]byte, error) {
		op.update(data)
		return op.sign()
	})
}

// SignUpdate adds data to a multi-part signature.
func (l *Library) SignUpdate(h SessionHandle, data []byte) error {
	_, err := l.withOp(h, opSign, oprules.Update, nil, func(op *opState) ([]byte, error) {
		op.update(data)
		return nil, nil
	})
	return err
}

// SignFinal finishes a multi-part signature.
func (l *Library) SignFinal(h SessionHandle, out []byte) (int, error) {
	return l.withOp(h, opSign, oprules.Final, out, func(op *opState) ([]byte, error) { return op.sign() })
}

// VerifyInit starts a verification (C_VerifyInit).
func (l *Library) VerifyInit(h SessionHandle, m Mechanism, key ObjectHandle) error {
	return l.opInit(h, opVerify, m, key)
}

// Verify checks a signature in one part (C_Verify): nil when it verifies,
// CKR_SIGNATURE_INVALID or CKR_SIGNATURE_LEN_RANGE otherwise.
func (l *Library) Verify(h SessionHandle, data, sig []byte) error {
	_, err := l.withOp(h, opVerify, oprules.Single, []byte{}, func(op *opState) ([]byte, error) {
		op.update(data)
		return nil, op.verify(sig)
	})
	return err
}

// VerifyUpdate adds data to a multi-part verification.
func (l *Library) VerifyUpdate(h SessionHandle, data []byte) error {
	_, err := l.withOp(h, opVerify, oprules.Update, nil, func(op *opState) ([]byte, error) {
		op.update(data)
		return nil, nil
	})
	return err
}

// VerifyFinal finishes a multi-part verification.
func (l *Library) VerifyFinal(h SessionHandle, sig []byte) error {
	_, err := l.withOp(h, opVerify, oprules.Final, []byte{}, func(op *opState) ([]byte, error) { return nil, op.verify(sig) })
	return err
}

// DigestInit starts a digest (C_DigestInit).
func (l *Library) DigestInit(h SessionHandle, m Mechanism) error {
	return l.opInit(h, opDigest, m, 0)
}

// Digest hashes data in one part (C_Digest).
func (l *Library) Digest(h SessionHandle, data, out []byte) (int, error) {
	return l.withOp(h, opDigest, oprules.Single, out, func(op *opState) ([]byte, error) {
		op.h.Write(data)
		return op.h.Sum(nil), nil
	})
}

// DigestUpdate adds data to a multi-part digest.
func (l *Library) DigestUpdate(h SessionHandle, data []byte) error {
	_, err := l.withOp(h, opDigest, oprules.Update, nil, func(op *opState) ([]byte, error) {
		op.update(data)
		return nil, nil
	})
	return err
}

// DigestFinal finishes a multi-part digest.
func (l *Library) DigestFinal(h SessionHandle, out []byte) (int, error) {
	return l.withOp(h, opDigest, oprules.Final, out, func(op *opState) ([]byte, error) { return op.h.Sum(nil), nil })
}

// GenerateRandom fills buf with random bytes (C_GenerateRandom).
func (l *Library) GenerateRandom(h SessionHandle, buf []byte) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	s.mu.Unlock()
	if _, err := rand.Read(buf); err != nil {
		return newErr(ck.CKR_DEVICE_ERROR, errclass.Unavailable, "random source: %v", err)
	}
	return nil
}

func blockCheck(m ck.Mechanism, n int, decrypt bool) error {
	bs := 0
	switch m {
	case ck.CKM_AES_ECB, ck.CKM_AES_CBC:
		bs = 16
	case ck.CKM_DES3_CBC, ck.CKM_DES3_ECB:
		bs = 8
	case ck.CKM_AES_CBC_PAD:
		if decrypt {
			bs = 16
		}
	}
	if bs != 0 && (n%bs != 0 || (decrypt && n == 0 && m == ck.CKM_AES_CBC_PAD)) {
		if decrypt {
			return newErr(ck.CKR_ENCRYPTED_DATA_LEN_RANGE, errclass.InvalidArgument, "%v: %d bytes is not a multiple of the %d-byte block", m, n, bs)
		}
		return newErr(ck.CKR_DATA_LEN_RANGE, errclass.InvalidArgument, "%v: %d bytes is not a multiple of the %d-byte block", m, n, bs)
	}
	return nil
}

// encrypt encrypts data in one backend call: a single-part call's input
// as the caller gave it (not copied: a single-part call cannot follow an
// Update, so nothing is buffered), or Final's buffered parts.
func (op *opState) encrypt(data []byte) ([]byte, error) {
	ctx := context.Background()
	if op.mech.Type == ck.CKM_RSA_PKCS_OAEP {
		pk, err := publicKeyOf(op.key)
		if err != nil {
			return nil, err
		}
		rk, ok := pk.(*rsa.PublicKey)
		if !ok {
			return nil, newErr(ck.CKR_KEY_TYPE_INCONSISTENT, errclass.InvalidArgument, "OAEP needs an RSA key")
		}
		out, err := rsa.EncryptOAEP(op.params.Hash.New(), rand.Reader, rk, data, op.params.Label)
		if err != nil {
			return nil, newErr(ck.CKR_DATA_LEN_RANGE, errclass.InvalidArgument, "OAEP: %d bytes of data are too long for the key", len(data))
		}
		return out, nil
	}
	if err := blockCheck(op.mech.Type, len(data), false); err != nil {
		return nil, err
	}
	out, err := op.crypt(ctx, op.spec.hsmMech, op.params, data, false)
	return out, hsmErr(err, op.mech.Type.String()+" encrypt")
}

// crypt is one backend encryption or decryption of data with the
// operation's key. Inputs of at least a pooled buffer's size go to an
// hsm.Appender backend with a buffer from package opbuf for the output, which
// op.pooled records: the Final or single-part call that hands the result
// over gives it back (withOp), and so does withUpdate after copying. On
// an error the buffer, which may hold part of a result, is dropped.
func (op *opState) crypt(ctx context.Context, m hsm.Mechanism, p hsm.Params, data []byte, decrypt bool) ([]byte, error) {
	var out []byte
	ap, pool := op.tok.lib.backend.(hsm.Appender)
	pool = pool && len(data) >= opbuf.Min && len(data)+hsm.MaxAppendGrowth <= opbuf.Max
	var dst []byte
	if pool {
		dst = opbuf.Get(len(data) + hsm.MaxAppendGrowth)
	}
	err := op.tok.useKey(ctx, op.key, func(q apqn.ID, blob []byte) error {
		var err error
		switch {
		case pool && decrypt:
			out, err = ap.DecryptAppend(ctx, q, blob, m, p, dst, data)
		case pool:
			out, err = ap.EncryptAppend(ctx, q, blob, m, p, dst, data)
		case decrypt:
			out, err = op.tok.lib.backend.Decrypt(ctx, q, blob, m, p, data)
		default:
			out, err = op.tok.lib.backend.Encrypt(ctx, q, blob, m, p, data)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	op.pooled = pool && cap(out) == cap(dst) && len(out) > 0 && &out[:1][0] == &dst[:1][0]
	return out, nil
}

func (op *opState) decrypt(data []byte) ([]byte, error) {
	ctx := context.Background()
	if err := blockCheck(op.mech.Type, len(data), true); err != nil {
		return nil, err
	}
	out, err := op.crypt(ctx, op.spec.hsmMech, op.params, data, true)
	if errors.Is(err, hsm.ErrBadData) {
		return nil, wrapRV(ck.CKR_ENCRYPTED_DATA_INVALID, err, "%v decrypt", op.mech.Type)
	}
	return out, hsmErr(err, op.mech.Type.String()+" decrypt")
}

func (op *opState) sign() ([]byte, error) {
	ctx := context.Background()
	data := op.input()
	var out []byte
	err := op.tok.useKey(ctx, op.key, func(q apqn.ID, blob []byte) error {
		var err error
		out, err = op.tok.lib.backend.Sign(ctx, q, blob, op.spec.hsmMech, op.params, data)
		return err
	})
	if errors.Is(err, hsm.ErrBadData) {
		return nil, wrapRV(ck.CKR_DATA_LEN_RANGE, err, "%v sign", op.mech.Type)
	}
	return out, hsmErr(err, op.mech.Type.String()+" sign")
}

func sigInvalid(m ck.Mechanism) error {
	return newErr(ck.CKR_SIGNATURE_INVALID, errclass.InvalidArgument, "%v: the signature does not verify", m)
}

func (op *opState) verify(sig []byte) error {
	data := op.input()
	if op.spec.keyType == ck.CKK_GENERIC_SECRET {
		ctx := context.Background()
		if len(sig) != 32 {
			return newErr(ck.CKR_SIGNATURE_LEN_RANGE, errclass.InvalidArgument, "HMAC-SHA256 MACs are 32 bytes, not %d", len(sig))
		}
		err := op.tok.useKey(ctx, op.key, func(q apqn.ID, blob []byte) error {
			return op.tok.lib.backend.Verify(ctx, q, blob, op.spec.hsmMech, op.params, data, sig)
		})
		if errors.Is(err, hsm.ErrSignature) {
			return sigInvalid(op.mech.Type)
		}
		return hsmErr(err, "HMAC verify")
	}
	pk, err := publicKeyOf(op.key)
	if err != nil {
		return err
	}
	switch k := pk.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return newErr(ck.CKR_SIGNATURE_LEN_RANGE, errclass.InvalidArgument, "ECDSA signature has %d bytes, want %d", len(sig), 2*size)
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, data, r, s) {
			return sigInvalid(op.mech.Type)
		}
		return nil
	case *rsa.PublicKey:
		if len(sig) != k.Size() {
			return newErr(ck.CKR_SIGNATURE_LEN_RANGE, errclass.InvalidArgument, "RSA signature has %d bytes, want %d", len(sig), k.Size())
		}
		var err error
		switch op.spec.hsmMech {
		case hsm.MechRSAPKCS:
			err = rsa.VerifyPKCS1v15(k, op.params.Hash, data, sig)
		case hsm.MechRSAPSS:
			if len(data) != op.params.Hash.Size() {
				return newErr(ck.CKR_DATA_LEN_RANGE, errclass.InvalidArgument, "PSS input must be a %d-byte digest", op.params.Hash.Size())
			}
			err = rsa.VerifyPSS(k, op.params.Hash, data, sig, &rsa.PSSOptions{SaltLength: op.params.SaltLen, Hash: op.params.Hash})
		}
		if err != nil {
			return sigInvalid(op.mech.Type)
		}
		return nil
	}
	return newErr(ck.CKR_KEY_TYPE_INCONSISTENT, errclass.InvalidArgument, "unsupported public key")
}

var _ = crypto.SHA256
