package hostdouble

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// EP11 return values (PKCS#11 CK_RV and IBM's vendor codes from ep11.h, as
// listed in host-libraries.md §2.9) and constants the double checks.
const (
	ckrOK                    = 0x000
	ckrFunctionFailed        = 0x006
	ckrArgumentsBad          = 0x007
	ckrDataLenRange          = 0x021
	ckrEncryptedDataInvalid  = 0x040
	ckrEncryptedDataLenRange = 0x041
	ckrFunctionNotSupported  = 0x054
	ckrKeyTypeInconsistent   = 0x063
	ckrKeySizeRange          = 0x062
	ckrMechanismInvalid      = 0x070
	ckrMechanismParamInvalid = 0x071
	ckrPinIncorrect          = 0x0A0
	ckrPinLenRange           = 0x0A2
	ckrSessionClosed         = 0x0B0
	ckrSessionCount          = 0x0B1
	ckrSessionHandleInvalid  = 0x0B3
	ckrSignatureInvalid      = 0x0C0
	ckrTemplateIncomplete    = 0x0D0
	ckrTemplateInconsistent  = 0x0D1
	ckrBufferTooSmall        = 0x150
	ckrCurveNotSupported     = 0x140
	ckrIBMWKIDMismatch       = 0x80010001
	ckrIBMBlobError          = 0x80010004
	ckrIBMWKNotInitialized   = 0x80010009
	ckrIBMTargetInvalid      = 0x80010030

	// XCP admin reasons (ep11.h XCP_RSC_*; OCK ep11_mkchange.c).
	xcpRscWKMissing     = 49
	xcpRscNextWKMissing = 50

	xcpAdmReencrypt      = 25      // XCP_ADM_REENCRYPT
	xcpAdmqDomCtrlPoints = 0x10006 // XCP_ADMQ_DOM_CTRLPOINTS

	// m_get_xcp_info queries (CK_IBM_XCPQUERY_t, CK_IBM_XCPHQ_*).
	xcpqModule     = 1
	xcpqDomain     = 3
	xcpqExtCaps    = 5
	xcphqVersion   = 0xff000001
	xcpmsqFnList   = 2
	DoubleEP11Vers = 0x00040000 // host library 4.0.0 (major bits 16-23)
)

// PKCS#11 mechanisms, attributes and key types the double knows.
const (
	ckmRSAPKCSKeyPairGen = 0x0000
	ckmRSAPKCS           = 0x0001
	ckmRSAPKCSOAEP       = 0x0009
	ckmRSAPKCSPSS        = 0x000D
	ckmDES3KeyGen        = 0x0131
	ckmDES3ECB           = 0x0132
	ckmDES3CBC           = 0x0133
	ckmSHA256HMAC        = 0x0251
	ckmGenericSecretGen  = 0x0350
	ckmECKeyPairGen      = 0x1040
	ckmECDSA             = 0x1041
	ckmAESKeyGen         = 0x1080
	ckmAESECB            = 0x1081
	ckmAESCBC            = 0x1082
	ckmAESCBCPad         = 0x1085
	ckmAESGCM            = 0x1087
	ckmAESKeyWrap        = 0x2109
	ckmAESKeyWrapKWP     = 0x210B

	ckaClass          = 0x000
	ckaKeyType        = 0x100
	ckaModulusBits    = 0x121
	ckaPublicExponent = 0x122
	ckaValueLen       = 0x161
	ckaECParams       = 0x180

	ckoSecretKey      = 4
	ckoPrivateKey     = 3
	ckkRSA            = 0x0
	ckkEC             = 0x3
	ckkGenericSecret  = 0x10
	ckkDES3           = 0x15
	ckkAES            = 0x1F
	ckgMGF1SHA256     = 2
	ckmSHA256         = 0x250
	ckmSHA1           = 0x220
	ckmSHA384         = 0x260
	ckmSHA512         = 0x270
	ckmSHA224         = 0x255
	ckgMGF1SHA1       = 1
	ckgMGF1SHA384     = 3
	ckgMGF1SHA512     = 4
	ckgMGF1SHA224     = 5
	ckzDataSpecified  = 1
	xcpPinBlobBytes   = 80
	maxEP11BlobLength = 16384
)

// ep11Err is an EP11 refusal: its CK_RV.
type ep11Err struct {
	rv  uint64
	why string
}

func (e *ep11Err) Error() string { return fmt.Sprintf("EP11 CK_RV 0x%x: %s", e.rv, e.why) }

func ckr(rv uint64, format string, args ...any) error {
	return &ep11Err{rv: rv, why: fmt.Sprintf(format, args...)}
}

type ep11Func struct {
	nargs int
	fn    func(s *Server, c *call) error
}

var ep11Funcs = map[string]ep11Func{
	"m_init":              {0, func(*Server, *call) error { return nil }},
	"m_shutdown":          {0, func(*Server, *call) error { return nil }},
	"m_add_module":        {5, (*Server).mAddModule},
	"m_get_xcp_info":      {5, (*Server).mGetXCPInfo},
	"m_Login":             {7, (*Server).mLogin},
	"m_Logout":            {3, (*Server).mLogout},
	"m_GenerateKey":       {10, (*Server).mGenerateKey},
	"m_GenerateKeyPair":   {12, (*Server).mGenerateKeyPair},
	"m_EncryptSingle":     {8, func(s *Server, c *call) error { return s.mCrypt(c, true) }},
	"m_DecryptSingle":     {8, func(s *Server, c *call) error { return s.mCrypt(c, false) }},
	"m_SignSingle":        {8, (*Server).mSignSingle},
	"m_VerifySingle":      {8, (*Server).mVerifySingle},
	"m_WrapKey":           {10, (*Server).mWrapKey},
	"m_UnwrapKey":         {16, (*Server).mUnwrapKey},
	"m_admin":             {9, (*Server).mAdmin},
	"m_GetAttributeValue": {4, (*Server).mGetAttributeValue},
}

func (s *Server) ep11Call(c *call) error {
	f, ok := ep11Funcs[c.req.Func]
	if !ok {
		return frameErr("no EP11 function %q", c.req.Func)
	}
	if err := c.nargs(f.nargs); err != nil {
		return err
	}
	if s.h == nil {
		return frameErr("no simulator")
	}
	err := f.fn(s, c)
	var e *ep11Err
	switch {
	case err == nil:
		c.ret = ckrOK
	case errors.As(err, &e):
		s.log.Debug().Str("func", c.req.Func).Uint64("rv", e.rv).Str("why", e.why).Msg("EP11 double refused")
		c.outs = append(c.outs[:0], c.lengthBack...)
		c.ret = e.rv
	default:
		return err
	}
	return nil
}

// simRVs maps the simulator's sentinel errors to the CK_RV the EP11
// library gives for that situation; the first match wins.
var simRVs = []struct {
	err error
	rv  uint64
}{
	{hsm.ErrWrongMK, ckrIBMWKIDMismatch},
	{hsm.ErrRegisterState, ckrIBMWKNotInitialized},
	{hsm.ErrOffline, ckrIBMTargetInvalid},
	{hsm.ErrNoSuchAPQN, ckrIBMTargetInvalid},
	{hsm.ErrSessionBound, ckrSessionClosed},
	{hsm.ErrSessionLimit, ckrSessionCount},
	{hsm.ErrNoSession, ckrSessionHandleInvalid},
	{hsm.ErrBadPIN, ckrPinLenRange},
	{hsm.ErrBadBlob, ckrIBMBlobError},
	{hsm.ErrWrongMode, ckrKeyTypeInconsistent},
	{hsm.ErrMechanism, ckrMechanismParamInvalid},
	{hsm.ErrSignature, ckrSignatureInvalid},
	{hsm.ErrBadData, ckrDataLenRange},
}

// simRV maps a simulator error to the CK_RV the EP11 library gives.
func simRV(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range simRVs {
		if errors.Is(err, m.err) {
			return ckr(m.rv, "%v", err)
		}
	}
	return ckr(ckrFunctionFailed, "simulator: %v", err)
}

// ---- targets (§2.3) ----------------------------------------------------

// targetAPQNs decodes the target argument: the C side sends the APQNs of a
// target it made with m_add_module; target 0 arrives as NULL and an
// unknown value as unreadable.
func (c *call) targetAPQNs(i int) ([]apqn.ID, error) {
	a := c.arg(i)
	switch a.Kind {
	case KindNull:
		return nil, nil
	case KindIn:
		if len(a.Bytes)%3 != 0 || len(a.Bytes) == 0 {
			return nil, frameErr("target list of %d bytes", len(a.Bytes))
		}
		var out []apqn.ID
		for j := 0; j < len(a.Bytes); j += 3 {
			out = append(out, apqn.ID{Card: a.Bytes[j], Domain: binary.BigEndian.Uint16(a.Bytes[j+1:])})
		}
		return out, nil
	}
	return nil, ckr(ckrArgumentsBad, "target 0x%x was not made by m_add_module", uint64(a.Int))
}

// target picks the APQN a crypto call runs on: the single APQN of a
// single target, or the first online APQN of a group. Target 0 is not a
// target for crypto functions (CKR_ARGUMENTS_BAD).
func (s *Server) target(c *call, i int, single bool) (hsm.QueueInfo, error) {
	ids, err := c.targetAPQNs(i)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	if len(ids) == 0 {
		return hsm.QueueInfo{}, ckr(ckrArgumentsBad, "%s needs a target made by m_add_module", c.req.Func)
	}
	if single && len(ids) != 1 {
		return hsm.QueueInfo{}, ckr(ckrArgumentsBad, "%s needs a single-APQN target, this one has %d APQNs", c.req.Func, len(ids))
	}
	var last error
	for _, id := range ids {
		q, err := s.h.Queue(c.ctx, id)
		if err != nil {
			last = err
			continue
		}
		if q.Mode != apqn.ModeEP11 {
			return hsm.QueueInfo{}, ckr(ckrIBMTargetInvalid, "APQN %s is not an EP11 APQN", id)
		}
		if q.Online {
			return q, nil
		}
		last = fmt.Errorf("APQN %s is offline: %w", id, hsm.ErrOffline)
	}
	return hsm.QueueInfo{}, simRV(last)
}

// mAddModule validates one module for a target (XCP_Module, §2.3):
// version 1 or 2, XCP_MFL_MODULE set, no socket or handle flags, at least
// one domain bit, each named APQN an existing EP11 APQN.
func (s *Server) mAddModule(c *call) error {
	ver, _ := c.intArg(0)
	flags, _ := c.intArg(1)
	nr, _ := c.intArg(2)
	mask, ok := c.buf(3)
	if ver != 1 && ver != 2 {
		return ckr(ckrArgumentsBad, "XCP_Module version %d (1 or 2)", ver)
	}
	const mflModule, mflSocket, mflMhandle, mflVirtual, mflStrict, mflProbe, mflAlwTgtAdd, mflPerf = 2, 1, 4, 0x10, 0x20, 0x40, 0x80, 8
	if flags&mflModule == 0 || flags&(mflSocket|mflMhandle) != 0 || flags&^int64(mflModule|mflVirtual|mflStrict|mflProbe|mflAlwTgtAdd|mflPerf) != 0 {
		return ckr(ckrArgumentsBad, "XCP_Module flags 0x%x: the double takes XCP_MFL_MODULE (+VIRTUAL, STRICT, PROBE)", flags)
	}
	if !ok || len(mask) != 32 {
		return ckr(ckrArgumentsBad, "domain mask missing")
	}
	if nr < 0 || nr > 255 {
		return ckr(ckrArgumentsBad, "module_nr %d", nr)
	}
	n := 0
	for d := 0; d < 256; d++ {
		if mask[d/8]&(0x80>>(d%8)) == 0 {
			continue
		}
		n++
		q, err := s.h.Queue(c.ctx, apqn.ID{Card: uint8(nr), Domain: uint16(d)})
		if err != nil || q.Mode != apqn.ModeEP11 {
			return ckr(ckrIBMTargetInvalid, "APQN %02X.%04X is not an EP11 APQN of the simulator", nr, d)
		}
	}
	if n == 0 {
		return ckr(ckrArgumentsBad, "the domain mask selects no domain")
	}
	existing, err := c.targetAPQNs(4)
	if err != nil {
		return err
	}
	if len(existing) > 0 && flags&mflVirtual == 0 {
		return ckr(ckrArgumentsBad, "adding a module to an existing target needs XCP_MFL_VIRTUAL")
	}
	return nil
}

// ---- m_get_xcp_info (§2.2, §2.5) ---------------------------------------

// mGetXCPInfo returns a field stream (big-endian) that the C side lays
// out as the caller's native structure and checks against its length:
//
//	XCPHQ_VERSION      u32 version
//	XCPQ_DOMAIN        u64 domain, wk[32], nextwk[32], u64 flags, u64 mode
//	XCPQ_MODULE / 0    u64 api, u64 firmware id, u8 fw major, u8 fw minor,
//	                   serial[16], u64 domains, u64 control points
//	XCPQ_MODULE / FNLIST  mask[16]
//	XCPQ_EXT_CAPS      u64 count (0)
func (s *Server) mGetXCPInfo(c *call) error {
	query, _ := c.intArg(2)
	sub, _ := c.intArg(3)
	var out []byte
	be := binary.BigEndian
	switch uint64(query) {
	case xcphqVersion:
		if sub != 0 {
			return ckr(ckrArgumentsBad, "XCPHQ_VERSION takes subquery 0")
		}
		out = be.AppendUint32(nil, DoubleEP11Vers)
	case xcpqDomain:
		q, err := s.target(c, 4, true)
		if err != nil {
			return err
		}
		wk := q.MK[mkvp.EP11WK]
		var cur, next [32]byte
		if ps, err := (apqn.Bus{Root: s.h.SysfsRoot()}).MKVPs(q.ID); err == nil {
			for _, l := range ps.Lines {
				if l.Key == "WK" && l.Register == "CUR" && wk.Current.State == apqn.StateValid {
					copy(cur[:], l.Pattern)
				}
				if l.Key == "WK" && l.Register == "NEW" && wk.New.State != apqn.StateEmpty {
					copy(next[:], l.Pattern)
				}
			}
		}
		var flags uint64
		if wk.Current.State == apqn.StateValid {
			flags |= 2 // CK_IBM_DOM_CURR_WK
		}
		if wk.New.State == apqn.StateUncommitted || wk.New.State == apqn.StateCommitted {
			flags |= 4 // CK_IBM_DOM_NEXT_WK
		}
		if wk.New.State == apqn.StateCommitted {
			flags |= 8 // CK_IBM_DOM_COMMITTED_NWK
		}
		out = be.AppendUint64(nil, uint64(q.ID.Domain))
		out = append(append(out, cur[:]...), next[:]...)
		out = be.AppendUint64(out, flags)
		out = be.AppendUint64(out, 0)
	case xcpqModule:
		q, err := s.target(c, 4, true)
		if err != nil {
			return err
		}
		if sub == xcpmsqFnList {
			out = bytes.Repeat([]byte{0xff}, 16)
			break
		}
		if sub != 0 {
			return ckr(ckrArgumentsBad, "XCPQ_MODULE subquery %d", sub)
		}
		out = be.AppendUint64(nil, 4) // firmware API
		out = be.AppendUint64(out, 0) // firmware id
		out = append(out, 8, 0)       // firmware version
		out = append(out, []byte(fmt.Sprintf("93AAP%011X", q.ID.Card))...)
		qs, _ := s.h.Queues(c.ctx)
		n := 0
		for _, o := range qs {
			if o.ID.Card == q.ID.Card {
				n++
			}
		}
		out = be.AppendUint64(out, uint64(n))
		out = be.AppendUint64(out, 0x3ff) // highest control point index
	case xcpqExtCaps:
		if _, err := s.target(c, 4, true); err != nil {
			return err
		}
		out = be.AppendUint64(nil, 0)
	default:
		return ckr(ckrArgumentsBad, "m_get_xcp_info query 0x%x is not implemented by the double", query)
	}
	if err := c.setBytes(0, out); err != nil {
		return err
	}
	return c.setInt(1, int64(len(out)))
}

// ---- outputs -----------------------------------------------------------

// ep11Out returns data through buffer bufIdx and length lenIdx with the
// PKCS#11 conventions the EP11 functions follow: a NULL buffer is a length
// query (CKR_OK and the length), a buffer too small is
// CKR_BUFFER_TOO_SMALL with the needed length.
func (c *call) ep11Out(bufIdx, lenIdx int, data []byte) (bool, error) {
	if c.isNull(lenIdx) {
		return false, ckr(ckrArgumentsBad, "%s: a length pointer is NULL", c.req.Func)
	}
	if c.isNull(bufIdx) {
		return false, c.setInt(lenIdx, int64(len(data)))
	}
	if c.capOf(bufIdx) < len(data) {
		c.lengthBack = append(c.lengthBack, Output{Index: uint16(lenIdx), Int: int64(len(data)), IsInt: true})
		return false, ckr(ckrBufferTooSmall, "%s: buffer of %d bytes, %d needed", c.req.Func, c.capOf(bufIdx), len(data))
	}
	if err := c.setBytes(bufIdx, data); err != nil {
		return false, err
	}
	return true, c.setInt(lenIdx, int64(len(data)))
}

// keyOut returns a new key blob (buffer keyIdx, length keyIdx+1) and its
// checksum (buffer csIdx, length csIdx+1); both must fit before either is
// written (CKR_BUFFER_TOO_SMALL with the needed length).
func (c *call) keyOut(keyIdx, csIdx int, key, cs []byte) error {
	if !c.isNull(csIdx) && c.capOf(csIdx) < len(cs) {
		c.lengthBack = append(c.lengthBack, Output{Index: uint16(csIdx + 1), Int: int64(len(cs)), IsInt: true})
		return ckr(ckrBufferTooSmall, "checksum buffer of %d bytes, %d needed", c.capOf(csIdx), len(cs))
	}
	if _, err := c.ep11Out(keyIdx, keyIdx+1, key); err != nil {
		return err
	}
	_, err := c.ep11Out(csIdx, csIdx+1, cs)
	return err
}

// ---- sessions (§2.6) ---------------------------------------------------

func (s *Server) mLogin(c *call) error {
	pin, _ := c.buf(0)
	nonce, _ := c.buf(2)
	q, err := s.target(c, 6, true)
	if err != nil {
		return err
	}
	if len(pin) < hsm.MinPINBytes || len(pin) > hsm.MaxPINBytes {
		return ckr(ckrPinLenRange, "PIN of %d bytes (%d..%d)", len(pin), hsm.MinPINBytes, hsm.MaxPINBytes)
	}
	if len(nonce) == 0 || len(nonce) > hsm.MaxNonceBytes {
		return ckr(ckrArgumentsBad, "nonce of %d bytes (1..%d)", len(nonce), hsm.MaxNonceBytes)
	}
	if c.isNull(4) {
		return c.setInt(5, xcpPinBlobBytes)
	}
	if c.capOf(4) < xcpPinBlobBytes {
		c.lengthBack = append(c.lengthBack, Output{Index: 5, Int: xcpPinBlobBytes, IsInt: true})
		return ckr(ckrBufferTooSmall, "pin blob buffer of %d bytes, %d needed", c.capOf(4), xcpPinBlobBytes)
	}
	pb, err := s.h.Login(c.ctx, q.ID, pin, nonce)
	if err != nil {
		return simRV(err)
	}
	_, err = c.ep11Out(4, 5, pb)
	return err
}

func (s *Server) mLogout(c *call) error {
	pb, _ := c.buf(0)
	q, err := s.target(c, 2, true)
	if err != nil {
		return err
	}
	if len(pb) != xcpPinBlobBytes {
		return ckr(ckrArgumentsBad, "pin blob of %d bytes, want %d", len(pb), xcpPinBlobBytes)
	}
	return simRV(s.h.Logout(c.ctx, q.ID, pb))
}

// pinBinder binds keys to the session of the pin blob the caller passed.
type pinBinder []byte

func (b pinBinder) PinBlob(context.Context, apqn.ID, mkvp.Pattern) ([]byte, error) { return b, nil }

// bindCtx turns the pin/pinlen arguments into the context the simulator
// binds keys under: NULL/0 makes unbound keys, an 80-byte pin blob binds
// them; any other length is CKR_ARGUMENTS_BAD.
func (c *call) bindCtx(pinIdx int) (context.Context, error) {
	pin, ok := c.buf(pinIdx)
	n, _ := c.intArg(pinIdx + 1)
	switch {
	case !ok && n == 0:
		return c.ctx, nil
	case ok && n == 0 && len(pin) == 0:
		return c.ctx, nil
	case ok && len(pin) == xcpPinBlobBytes:
		return hsm.WithBinder(c.ctx, pinBinder(pin)), nil
	}
	return nil, ckr(ckrArgumentsBad, "pin blob of %d bytes: pass NULL/0 or the %d-byte blob of m_Login", n, xcpPinBlobBytes)
}

// ---- mechanisms and templates ------------------------------------------

type mechanism struct {
	mech   uint64
	kind   byte
	raw    []byte
	iv     []byte
	aad    []byte
	ivBits uint64
	tag    uint64
	hash   uint64
	mgf    uint64
	source uint64
	label  []byte
}

// mech decodes a flattened CK_MECHANISM (c/ep11.c flat_mech).
func (c *call) mech(i int) (*mechanism, error) {
	raw, ok := c.buf(i)
	if !ok {
		return nil, ckr(ckrMechanismInvalid, "the mechanism pointer is NULL")
	}
	r := &reader{b: raw}
	m := &mechanism{mech: r.u64(), kind: r.u8()}
	switch m.kind {
	case 0:
		m.raw = r.b
		r.b = nil
	case 1:
		m.iv = r.take(int(r.u32()))
		m.ivBits = r.u64()
		m.aad = r.take(int(r.u32()))
		m.tag = r.u64()
	case 2:
		m.hash, m.mgf, m.source = r.u64(), r.u64(), r.u64()
		m.label = r.take(int(r.u32()))
	case 3:
		return nil, ckr(ckrMechanismParamInvalid, "mechanism 0x%x: pParameter NULL with a non-zero length", m.mech)
	default:
		return nil, frameErr("mechanism kind %d", m.kind)
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, frameErr("malformed mechanism")
	}
	return m, nil
}

func (m *mechanism) noParams() error {
	if m.kind != 0 || len(m.raw) != 0 {
		return ckr(ckrMechanismParamInvalid, "mechanism 0x%x takes no parameter", m.mech)
	}
	return nil
}

type attr struct {
	typ  uint64
	val  []byte
	null bool
}

// template decodes a flattened CK_ATTRIBUTE array.
func (c *call) template(i, countIdx int) ([]attr, error) {
	raw, ok := c.buf(i)
	n, _ := c.intArg(countIdx)
	if !ok {
		if n != 0 {
			return nil, ckr(ckrArgumentsBad, "template NULL with count %d", n)
		}
		return nil, nil
	}
	r := &reader{b: raw}
	cnt := int(r.u32())
	if int64(cnt) != n {
		return nil, frameErr("template count %d, argument %d", cnt, n)
	}
	out := make([]attr, 0, cnt)
	for j := 0; j < cnt && r.err == nil; j++ {
		a := attr{typ: r.u64()}
		l := r.u32()
		if l == 0xffffffff {
			a.null = true
		} else {
			a.val = r.take(int(l))
		}
		out = append(out, a)
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, frameErr("malformed template")
	}
	return out, nil
}

// ulong reads a native CK_ULONG attribute value in the client's byte
// order; a value of another size is CKR_TEMPLATE_INCONSISTENT (PKCS#11
// CKR_ATTRIBUTE_VALUE_INVALID would be the spec's; the double's
// templates are those of key generation).
func (c *call) ulong(a attr) (uint64, error) {
	if a.null || len(a.val) != 8 {
		return 0, ckr(ckrTemplateInconsistent, "attribute 0x%x: a CK_ULONG has 8 bytes, got %d", a.typ, len(a.val))
	}
	return c.order.Uint64(a.val), nil
}

func find(t []attr, typ uint64) (attr, bool) {
	for _, a := range t {
		if a.typ == typ {
			return a, true
		}
	}
	return attr{}, false
}

// secretSpec is the key a secret-key template and mechanism ask for.
func (c *call) secretSpec(mech uint64, t []attr) (hsm.KeySpec, error) {
	vl, hasLen := find(t, ckaValueLen)
	var n uint64
	if hasLen {
		var err error
		if n, err = c.ulong(vl); err != nil {
			return hsm.KeySpec{}, err
		}
	}
	switch mech {
	case ckmAESKeyGen:
		if !hasLen {
			return hsm.KeySpec{}, ckr(ckrTemplateIncomplete, "CKM_AES_KEY_GEN needs CKA_VALUE_LEN")
		}
		if n != 16 && n != 24 && n != 32 {
			return hsm.KeySpec{}, ckr(ckrKeySizeRange, "AES key of %d bytes", n)
		}
		return hsm.KeySpec{Type: hsm.KeyAES, Bits: int(n) * 8}, nil
	case ckmDES3KeyGen:
		if hasLen && n != 24 {
			return hsm.KeySpec{}, ckr(ckrTemplateInconsistent, "DES3 keys have 24 bytes, CKA_VALUE_LEN says %d", n)
		}
		return hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, nil
	case ckmGenericSecretGen:
		if !hasLen {
			return hsm.KeySpec{}, ckr(ckrTemplateIncomplete, "CKM_GENERIC_SECRET_KEY_GEN needs CKA_VALUE_LEN")
		}
		if n < 10 || n > 256 {
			return hsm.KeySpec{}, ckr(ckrKeySizeRange, "generic secret of %d bytes (10..256)", n)
		}
		return hsm.KeySpec{Type: hsm.KeyHMAC, Bits: int(n) * 8}, nil
	}
	return hsm.KeySpec{}, ckr(ckrMechanismInvalid, "key generation mechanism 0x%x", mech)
}

// csum is the checksum m_GenerateKey and m_UnwrapKey return: the 3-byte
// key check value (the first bytes of the key's encryption of a zero
// block; OCK stores them as CKA_CHECK_VALUE, EP11_CSUMSIZE) and the key
// length in bits, BE32. HMAC keys have no check value: 4 bytes of length.
func (s *Server) csum(c *call, q apqn.ID, blob []byte, spec hsm.KeySpec) ([]byte, error) {
	var kcv []byte
	switch spec.Type {
	case hsm.KeyAES:
		ct, err := s.h.Encrypt(c.ctx, q, blob, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
		if err != nil {
			return nil, simRV(err)
		}
		kcv = ct[:3]
	case hsm.KeyDES3:
		ct, err := s.h.Encrypt(c.ctx, q, blob, hsm.MechDES3CBC, hsm.Params{IV: make([]byte, 8)}, make([]byte, 8))
		if err != nil {
			return nil, simRV(err)
		}
		kcv = ct[:3]
	}
	return binary.BigEndian.AppendUint32(kcv, uint32(spec.Bits)), nil
}

// ---- key generation ----------------------------------------------------

func (s *Server) mGenerateKey(c *call) error {
	m, err := c.mech(0)
	if err != nil {
		return err
	}
	if err := m.noParams(); err != nil {
		return err
	}
	t, err := c.template(1, 2)
	if err != nil {
		return err
	}
	spec, err := c.secretSpec(m.mech, t)
	if err != nil {
		return err
	}
	ctx, err := c.bindCtx(3)
	if err != nil {
		return err
	}
	q, err := s.target(c, 9, false)
	if err != nil {
		return err
	}
	if c.isNull(6) || c.isNull(8) {
		return ckr(ckrArgumentsBad, "klen and clen must not be NULL")
	}
	key, err := s.h.GenerateKey(ctx, q.ID, spec)
	if err != nil {
		return simRV(err)
	}
	cs, err := s.csum(c, q.ID, key, spec)
	if err != nil {
		return err
	}
	return c.keyOut(5, 7, key, cs)
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

func (s *Server) mGenerateKeyPair(c *call) error {
	m, err := c.mech(0)
	if err != nil {
		return err
	}
	if err := m.noParams(); err != nil {
		return err
	}
	pubT, err := c.template(1, 2)
	if err != nil {
		return err
	}
	if _, err := c.template(3, 4); err != nil {
		return err
	}
	var spec hsm.KeySpec
	switch m.mech {
	case ckmECKeyPairGen:
		p, ok := find(pubT, ckaECParams)
		if !ok {
			return ckr(ckrTemplateIncomplete, "CKM_EC_KEY_PAIR_GEN needs CKA_EC_PARAMS in the public template")
		}
		var oid asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(p.val, &oid); err != nil || len(rest) != 0 {
			return ckr(ckrCurveNotSupported, "CKA_EC_PARAMS is not a DER OBJECT IDENTIFIER")
		}
		switch {
		case oid.Equal(oidP256):
			spec = hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}
		case oid.Equal(oidP384):
			spec = hsm.KeySpec{Type: hsm.KeyEC, Bits: 384}
		default:
			return ckr(ckrCurveNotSupported, "curve %v: the simulator has P-256 and P-384", oid)
		}
	case ckmRSAPKCSKeyPairGen:
		a, ok := find(pubT, ckaModulusBits)
		if !ok {
			return ckr(ckrTemplateIncomplete, "CKM_RSA_PKCS_KEY_PAIR_GEN needs CKA_MODULUS_BITS")
		}
		bits, err := c.ulong(a)
		if err != nil {
			return err
		}
		if bits != 2048 && bits != 3072 && bits != 4096 {
			return ckr(ckrKeySizeRange, "RSA modulus of %d bits (the simulator makes 2048, 3072, 4096)", bits)
		}
		if e, ok := find(pubT, ckaPublicExponent); ok && !bytes.Equal(bytes.TrimLeft(e.val, "\x00"), []byte{1, 0, 1}) {
			return ckr(ckrTemplateInconsistent, "public exponent %x: the simulator's RSA keys use 65537", e.val)
		}
		spec = hsm.KeySpec{Type: hsm.KeyRSA, Bits: int(bits)}
	default:
		return ckr(ckrMechanismInvalid, "key pair mechanism 0x%x", m.mech)
	}
	ctx, err := c.bindCtx(5)
	if err != nil {
		return err
	}
	q, err := s.target(c, 11, false)
	if err != nil {
		return err
	}
	priv, pub, err := s.h.GenerateKeyPair(ctx, q.ID, spec)
	if err != nil {
		return simRV(err)
	}
	b, err := hsm.DecodeBlob(priv)
	if err != nil {
		return err
	}
	spki := MACedSPKI(pub, b.Pattern, b.Session)
	if !c.isNull(9) && c.capOf(9) < len(spki) {
		c.lengthBack = append(c.lengthBack, Output{Index: 10, Int: int64(len(spki)), IsInt: true})
		return ckr(ckrBufferTooSmall, "public key buffer of %d bytes, %d needed", c.capOf(9), len(spki))
	}
	if _, err := c.ep11Out(7, 8, priv); err != nil {
		return err
	}
	_, err = c.ep11Out(9, 10, spki)
	return err
}

// MACedSPKI is the double's public key blob (tokens note §4.2: the DER
// SPKI followed by OCTET STRINGs with the WKID, the session and a MAC).
// The double writes SPKI ‖ 04 10 WKVP ‖ 04 20 session ‖ 04 20 check,
// where check is SHA-256 over the rest: an integrity check, not a MAC
// (the real MAC key lives in the card).
func MACedSPKI(spki []byte, wk mkvp.Pattern, session [hsm.SessionIDSize]byte) []byte {
	out := append([]byte(nil), spki...)
	out = append(append(out, 0x04, 16), wk.Bytes()...)
	out = append(append(out, 0x04, 32), session[:]...)
	sum := sha256.Sum256(append([]byte("pkcshsm host double SPKI"), out...))
	return append(append(out, 0x04, 32), sum[:]...)
}

// parseMACedSPKI splits a MACed SPKI into the DER SPKI and its WKVP; ok is
// false for anything else.
func parseMACedSPKI(b []byte) (spki []byte, wk mkvp.Pattern, session []byte, ok bool) {
	var raw asn1.RawValue
	rest, err := asn1.Unmarshal(b, &raw)
	if err != nil || len(rest) != 2+16+2+32+2+32 || rest[0] != 4 || rest[1] != 16 || rest[18] != 4 || rest[19] != 32 || rest[52] != 4 || rest[53] != 32 {
		return nil, mkvp.Pattern{}, nil, false
	}
	body := b[:len(b)-34]
	sum := sha256.Sum256(append([]byte("pkcshsm host double SPKI"), body...))
	if !bytes.Equal(sum[:], rest[54:]) {
		return nil, mkvp.Pattern{}, nil, false
	}
	if _, err := x509.ParsePKIXPublicKey(raw.FullBytes); err != nil {
		return nil, mkvp.Pattern{}, nil, false
	}
	wk, err = mkvp.New(rest[2:18])
	if err != nil {
		return nil, mkvp.Pattern{}, nil, false
	}
	return raw.FullBytes, wk, rest[20:52], true
}

// ---- using keys --------------------------------------------------------

// targetKey resolves the call's single target (argument ti), then the key
// blob of argument ki on it: the target is checked first, as the library
// does.
func (s *Server) targetKey(c *call, ti, ki int, publicOK bool) (hsm.QueueInfo, []byte, error) {
	q, err := s.target(c, ti, false)
	if err != nil {
		return hsm.QueueInfo{}, nil, err
	}
	key, err := s.keyFor(c, ki, q, publicOK)
	return q, key, err
}

// keyFor checks the key blob argument: a key blob (the simulator checks
// its wrapping key: CKR_IBM_WKID_MISMATCH) or a MACed SPKI whose WKVP must
// be the CURRENT one of q.
func (s *Server) keyFor(c *call, idx int, q hsm.QueueInfo, publicOK bool) ([]byte, error) {
	key, ok := c.buf(idx)
	if !ok || len(key) == 0 {
		return nil, ckr(ckrArgumentsBad, "the key blob is NULL or empty")
	}
	if n, _ := c.intArg(idx + 1); n != int64(len(key)) {
		return nil, ckr(ckrArgumentsBad, "key length %d", n)
	}
	if key[0] != 0x30 {
		return key, nil
	}
	if !publicOK {
		return nil, ckr(ckrKeyTypeInconsistent, "%s needs a private or secret key blob, not a public key", c.req.Func)
	}
	spki, wk, _, ok := parseMACedSPKI(key)
	if !ok {
		return nil, ckr(ckrIBMBlobError, "not a MACed SPKI of this double")
	}
	if cur := q.MK[mkvp.EP11WK].Current; cur.State != apqn.StateValid || cur.Pattern != wk {
		return nil, ckr(ckrIBMWKIDMismatch, "the public key blob's WKID %s is not APQN %s's CURRENT wrapping key", wk, q.ID)
	}
	return spki, nil
}

func hashOf(mech uint64) (crypto.Hash, bool) {
	switch mech {
	case ckmSHA1:
		return crypto.SHA1, true
	case ckmSHA224:
		return crypto.SHA224, true
	case ckmSHA256:
		return crypto.SHA256, true
	case ckmSHA384:
		return crypto.SHA384, true
	case ckmSHA512:
		return crypto.SHA512, true
	}
	return 0, false
}

var mgfFor = map[crypto.Hash]uint64{crypto.SHA1: ckgMGF1SHA1, crypto.SHA224: ckgMGF1SHA224, crypto.SHA256: ckgMGF1SHA256, crypto.SHA384: ckgMGF1SHA384, crypto.SHA512: ckgMGF1SHA512}

// cryptMech maps an encrypt/decrypt mechanism and its parameters.
func (c *call) cryptMech(m *mechanism) (hsm.Mechanism, hsm.Params, error) {
	switch m.mech {
	case ckmAESECB:
		return hsm.MechAESECB, hsm.Params{}, m.noParams()
	case ckmDES3ECB:
		return hsm.MechDES3ECB, hsm.Params{}, m.noParams()
	case ckmAESCBC, ckmAESCBCPad, ckmDES3CBC:
		want := 16
		hm := map[uint64]hsm.Mechanism{ckmAESCBC: hsm.MechAESCBC, ckmAESCBCPad: hsm.MechAESCBCPad, ckmDES3CBC: hsm.MechDES3CBC}[m.mech]
		if m.mech == ckmDES3CBC {
			want = 8
		}
		if m.kind != 0 || len(m.raw) != want {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "mechanism 0x%x needs a %d-byte IV, got %d", m.mech, want, len(m.raw))
		}
		return hm, hsm.Params{IV: m.raw}, nil
	case ckmAESGCM:
		if m.kind != 1 {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "CKM_AES_GCM needs CK_GCM_PARAMS")
		}
		if m.ivBits != uint64(len(m.iv))*8 || len(m.iv) == 0 || m.tag%8 != 0 || m.tag > 128 {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "CK_GCM_PARAMS: IV %d bytes / %d bits, tag %d bits", len(m.iv), m.ivBits, m.tag)
		}
		return hsm.MechAESGCM, hsm.Params{IV: m.iv, AAD: m.aad, TagBits: int(m.tag)}, nil
	case ckmRSAPKCSOAEP:
		if m.kind != 2 {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "CKM_RSA_PKCS_OAEP needs CK_RSA_PKCS_OAEP_PARAMS")
		}
		h, ok := hashOf(m.hash)
		if !ok || mgfFor[h] != m.mgf || (m.source != 0 && m.source != ckzDataSpecified) {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "OAEP hash 0x%x with MGF %d, source %d", m.hash, m.mgf, m.source)
		}
		return hsm.MechRSAOAEP, hsm.Params{Hash: h, Label: m.label}, nil
	}
	return 0, hsm.Params{}, ckr(ckrMechanismInvalid, "mechanism 0x%x is not one the double encrypts with", m.mech)
}

func (s *Server) mCrypt(c *call, enc bool) error {
	m, err := c.mech(2)
	if err != nil {
		return err
	}
	hm, p, err := c.cryptMech(m)
	if err != nil {
		return err
	}
	q, key, err := s.targetKey(c, 7, 0, enc && hm == hsm.MechRSAOAEP)
	if err != nil {
		return err
	}
	in, _ := c.buf(3)
	var out []byte
	if enc {
		out, err = s.h.Encrypt(c.ctx, q.ID, key, hm, p, in)
	} else {
		out, err = s.h.Decrypt(c.ctx, q.ID, key, hm, p, in)
		if errors.Is(err, hsm.ErrBadData) {
			return ckr(ckrEncryptedDataInvalid, "%v", err)
		}
	}
	if err != nil {
		return simRV(err)
	}
	_, err = c.ep11Out(5, 6, out)
	return err
}

// signMech maps a signature mechanism: CKM_ECDSA (data is the hash),
// CKM_RSA_PKCS (data is the DigestInfo), CKM_RSA_PKCS_PSS with
// CK_RSA_PKCS_PSS_PARAMS (three native CK_ULONGs: hash, MGF, salt length;
// data is the hash), CKM_SHA256_HMAC.
func (c *call) signMech(m *mechanism) (hsm.Mechanism, hsm.Params, error) {
	switch m.mech {
	case ckmECDSA:
		return hsm.MechECDSA, hsm.Params{}, m.noParams()
	case ckmRSAPKCS:
		return hsm.MechRSAPKCS, hsm.Params{}, m.noParams()
	case ckmSHA256HMAC:
		return hsm.MechHMACSHA256, hsm.Params{}, m.noParams()
	case ckmRSAPKCSPSS:
		if m.kind != 0 || len(m.raw) != 24 {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "CKM_RSA_PKCS_PSS needs CK_RSA_PKCS_PSS_PARAMS (24 bytes), got %d", len(m.raw))
		}
		h, ok := hashOf(c.order.Uint64(m.raw))
		mgf, salt := c.order.Uint64(m.raw[8:]), c.order.Uint64(m.raw[16:])
		if !ok || mgfFor[h] != mgf || salt > 512 {
			return 0, hsm.Params{}, ckr(ckrMechanismParamInvalid, "PSS parameters: hash 0x%x, MGF %d, salt %d", c.order.Uint64(m.raw), mgf, salt)
		}
		return hsm.MechRSAPSS, hsm.Params{Hash: h, SaltLen: int(salt)}, nil
	}
	return 0, hsm.Params{}, ckr(ckrMechanismInvalid, "mechanism 0x%x is not one the double signs with", m.mech)
}

func (s *Server) mSignSingle(c *call) error {
	m, err := c.mech(2)
	if err != nil {
		return err
	}
	hm, p, err := c.signMech(m)
	if err != nil {
		return err
	}
	q, key, err := s.targetKey(c, 7, 0, false)
	if err != nil {
		return err
	}
	data, _ := c.buf(3)
	sig, err := s.h.Sign(c.ctx, q.ID, key, hm, p, data)
	if err != nil {
		return simRV(err)
	}
	_, err = c.ep11Out(5, 6, sig)
	return err
}

func (s *Server) mVerifySingle(c *call) error {
	m, err := c.mech(2)
	if err != nil {
		return err
	}
	hm, p, err := c.signMech(m)
	if err != nil {
		return err
	}
	q, key, err := s.targetKey(c, 7, 0, hm != hsm.MechHMACSHA256)
	if err != nil {
		return err
	}
	data, _ := c.buf(3)
	sig, _ := c.buf(5)
	if err := s.h.Verify(c.ctx, q.ID, key, hm, p, data, sig); err != nil {
		if errors.Is(err, hsm.ErrBadData) {
			return ckr(ckrSignatureInvalid, "%v", err)
		}
		return simRV(err)
	}
	return nil
}

func wrapMech(m *mechanism) (hsm.Mechanism, error) {
	switch m.mech {
	case ckmAESKeyWrap:
		return hsm.MechAESKW, m.noParams()
	case ckmAESKeyWrapKWP:
		return hsm.MechAESKWP, m.noParams()
	}
	return 0, ckr(ckrMechanismInvalid, "wrap mechanism 0x%x (the double wraps with CKM_AES_KEY_WRAP and _KWP)", m.mech)
}

// mWrapKey: the key to wrap, the KEK, no MAC key (attribute-bound
// wrapping is not implemented: CKR_ARGUMENTS_BAD).
func (s *Server) mWrapKey(c *call) error {
	m, err := c.mech(6)
	if err != nil {
		return err
	}
	hm, err := wrapMech(m)
	if err != nil {
		return err
	}
	if mk, _ := c.buf(4); len(mk) != 0 {
		return ckr(ckrArgumentsBad, "a MAC key is for attribute-bound wrapping, which the double does not do")
	}
	q, key, err := s.targetKey(c, 9, 0, false)
	if err != nil {
		return err
	}
	kek, err := s.keyFor(c, 2, q, false)
	if err != nil {
		return err
	}
	w, err := s.h.WrapKey(c.ctx, q.ID, kek, hm, hsm.Params{}, key)
	if err != nil {
		return simRV(err)
	}
	_, err = c.ep11Out(7, 8, w)
	return err
}

// mUnwrapKey: the template names a secret key (CKA_CLASS CKO_SECRET_KEY,
// CKA_KEY_TYPE AES, DES3 or GENERIC_SECRET; CKA_VALUE_LEN, required
// except for DES3 and for AES under CKM_AES_KEY_WRAP, where the wrapped
// length gives it).
func (s *Server) mUnwrapKey(c *call) error {
	m, err := c.mech(8)
	if err != nil {
		return err
	}
	if m.mech == ckmAESCBCPad {
		return s.importKey(c, m)
	}
	hm, err := wrapMech(m)
	if err != nil {
		return err
	}
	t, class, typ, err := c.unwrapTemplate()
	if err != nil {
		return err
	}
	wrapped, _ := c.buf(0)
	if class != ckoSecretKey {
		return ckr(ckrTemplateInconsistent, "CKA_CLASS %d: the double unwraps secret keys", class)
	}
	var spec hsm.KeySpec
	vl, hasLen := find(t, ckaValueLen)
	var n uint64
	if hasLen {
		if n, err = c.ulong(vl); err != nil {
			return err
		}
	}
	switch typ {
	case ckkAES:
		if !hasLen && hm == hsm.MechAESKW && len(wrapped) >= 8 {
			n, hasLen = uint64(len(wrapped)-8), true
		}
		if !hasLen {
			return ckr(ckrTemplateIncomplete, "CKA_VALUE_LEN is needed to unwrap an AES key with KWP")
		}
		spec = hsm.KeySpec{Type: hsm.KeyAES, Bits: int(n) * 8}
	case ckkDES3:
		spec = hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}
	case ckkGenericSecret:
		if !hasLen {
			return ckr(ckrTemplateIncomplete, "CKA_VALUE_LEN is needed to unwrap a generic secret")
		}
		spec = hsm.KeySpec{Type: hsm.KeyHMAC, Bits: int(n) * 8}
	default:
		return ckr(ckrTemplateInconsistent, "CKA_KEY_TYPE 0x%x", typ)
	}
	if err := hsm.CheckSpec(spec); err != nil {
		return ckr(ckrTemplateInconsistent, "%v", err)
	}
	ctx, err := c.bindCtx(6)
	if err != nil {
		return err
	}
	q, kek, err := s.targetKey(c, 15, 2, false)
	if err != nil {
		return err
	}
	key, err := s.h.UnwrapKey(ctx, q.ID, kek, hm, hsm.Params{}, wrapped, spec)
	if err != nil {
		if errors.Is(err, hsm.ErrBadData) {
			return ckr(ckrEncryptedDataInvalid, "%v", err)
		}
		return simRV(err)
	}
	cs, err := s.csum(c, q.ID, key, spec)
	if err != nil {
		return err
	}
	return c.keyOut(11, 13, key, cs)
}

// ---- m_admin (§2.7) ----------------------------------------------------

// Admin blocks. The real layout is in IBM's ep11-wire.pdf, which was not
// available; the double's xcpa_cmdblock / xcpa_queryblock build, and its
// xcpa_internal_rv parses, this layout (all big-endian):
//
//	command:  "HDAC" u32 fn, u32 domain, u64 query target, u32 n, payload
//	response: "HDAR" u32 fn, u32 domain, u64 rv, u32 reason, u32 n, payload
//
// Callers use the helpers, never the bytes (OCK and zkey do the same), so
// the layout is private to the double.
func (s *Server) mAdmin(c *call) error {
	cmd, ok := c.buf(4)
	if !ok {
		return ckr(ckrArgumentsBad, "m_admin without a command block")
	}
	if sigs, _ := c.buf(6); len(sigs) != 0 {
		return ckr(ckrArgumentsBad, "the double's admin commands take no signatures")
	}
	r := &reader{b: cmd}
	magic := r.take(4)
	fn, dom, qt := r.u32(), r.u32(), r.u64()
	payload := r.take(int(r.u32()))
	if r.err != nil || string(magic) != "HDAC" || len(r.b) != 0 {
		return ckr(ckrArgumentsBad, "not a command block from xcpa_cmdblock / xcpa_queryblock")
	}
	q, err := s.target(c, 8, true)
	if err != nil {
		return err
	}
	if uint32(q.ID.Domain) != dom {
		return ckr(ckrArgumentsBad, "the command block names domain %d, the target is %s", dom, q.ID)
	}
	var rv uint64
	var reason uint32
	var out []byte
	switch fn {
	case xcpAdmReencrypt:
		rv, reason, out = s.reencrypt(c, q, payload)
	case xcpAdmqDomCtrlPoints:
		if qt != uint64(q.ID.Card)<<32|uint64(q.ID.Domain) {
			return ckr(ckrArgumentsBad, "the query block names 0x%x, the target is %s", qt, q.ID)
		}
		out = bytes.Repeat([]byte{0xff}, 32)
	default:
		rv, reason = ckrArgumentsBad, 0
	}
	be := binary.BigEndian
	resp := append([]byte("HDAR"), be.AppendUint32(nil, fn)...)
	resp = be.AppendUint32(resp, dom)
	resp = be.AppendUint64(resp, rv)
	resp = be.AppendUint32(resp, reason)
	resp = be.AppendUint32(resp, uint32(len(out)))
	resp = append(resp, out...)
	if c.isNull(0) || c.isNull(1) {
		return ckr(ckrArgumentsBad, "m_admin needs a response buffer")
	}
	_, err = c.ep11Out(0, 1, resp)
	return err
}

// reencrypt is XCP_ADM_REENCRYPT on one blob: the blob must be under the
// CURRENT wrapping key (else embedded CKR_IBM_WKID_MISMATCH) and the next
// wrapping key committed (else embedded rv ≠ 0 with reason
// XCP_RSC_NEXT_WK_MISSING 50; no current key: XCP_RSC_WK_MISSING 49; OCK
// turns both into CKR_IBM_WK_NOT_INITIALIZED). The result has the blob's
// length (OCK checks). MACed SPKIs are re-enciphered too.
func (s *Server) reencrypt(c *call, q hsm.QueueInfo, blob []byte) (uint64, uint32, []byte) {
	wk := q.MK[mkvp.EP11WK]
	if wk.Current.State != apqn.StateValid {
		return ckrIBMWKNotInitialized, xcpRscWKMissing, nil
	}
	if wk.New.State != apqn.StateCommitted {
		return ckrIBMWKNotInitialized, xcpRscNextWKMissing, nil
	}
	if len(blob) > 0 && blob[0] == 0x30 {
		spki, pat, session, ok := parseMACedSPKI(blob)
		if !ok {
			return ckrIBMBlobError, 0, nil
		}
		if pat != wk.Current.Pattern {
			return ckrIBMWKIDMismatch, 0, nil
		}
		var sf [hsm.SessionIDSize]byte
		copy(sf[:], session)
		return ckrOK, 0, MACedSPKI(spki, wk.New.Pattern, sf)
	}
	out, err := s.h.Reencipher(c.ctx, q.ID, blob, hsm.ToNew)
	if err != nil {
		var e *ep11Err
		if errors.As(simRV(err), &e) {
			return e.rv, 0, nil
		}
		return ckrFunctionFailed, 0, nil
	}
	if len(out) != len(blob) {
		return ckrFunctionFailed, 0, nil
	}
	return ckrOK, 0, out
}

// unwrapTemplate reads m_UnwrapKey's template (arguments 9, 10): its
// CKA_CLASS and CKA_KEY_TYPE are required (CKR_TEMPLATE_INCOMPLETE). A MAC
// key (argument 4) is for attribute-bound wrapping, which the double does
// not do (CKR_ARGUMENTS_BAD).
func (c *call) unwrapTemplate() (t []attr, class, typ uint64, err error) {
	if mk, _ := c.buf(4); len(mk) != 0 {
		return nil, 0, 0, ckr(ckrArgumentsBad, "a MAC key is for attribute-bound wrapping, which the double does not do")
	}
	if t, err = c.template(9, 10); err != nil {
		return nil, 0, 0, err
	}
	cl, ok := find(t, ckaClass)
	kt, ok2 := find(t, ckaKeyType)
	if !ok || !ok2 {
		return nil, 0, 0, ckr(ckrTemplateIncomplete, "unwrap needs CKA_CLASS and CKA_KEY_TYPE")
	}
	if class, err = c.ulong(cl); err != nil {
		return nil, 0, 0, err
	}
	typ, err = c.ulong(kt)
	return t, class, typ, err
}

// importKey is m_UnwrapKey with CKM_AES_CBC_PAD: the way clear keys enter
// an EP11 adapter (OCK encrypts the clear key under a wrapping key it
// generated, then unwraps it). The KEK must be an AES key blob, the IV 16
// bytes; the template names a secret key (CKA_KEY_TYPE AES, DES3 or
// GENERIC_SECRET; the length is the decrypted key's) or a private key
// (CKA_CLASS CKO_PRIVATE_KEY, CKA_KEY_TYPE CKK_EC or CKK_RSA; the
// decrypted bytes are PKCS#8 DER).
func (s *Server) importKey(c *call, m *mechanism) error {
	hm, p, err := c.cryptMech(m)
	if err != nil {
		return err
	}
	t, class, typ, err := c.unwrapTemplate()
	if err != nil {
		return err
	}
	ctx, err := c.bindCtx(6)
	if err != nil {
		return err
	}
	q, kek, err := s.targetKey(c, 15, 2, false)
	if err != nil {
		return err
	}
	wrapped, _ := c.buf(0)
	material, err := s.h.Decrypt(c.ctx, q.ID, kek, hm, p, wrapped)
	if err != nil {
		if errors.Is(err, hsm.ErrBadData) {
			return ckr(ckrEncryptedDataInvalid, "%v", err)
		}
		return simRV(err)
	}
	var spec hsm.KeySpec
	switch {
	case class == ckoSecretKey && typ == ckkAES:
		spec = hsm.KeySpec{Type: hsm.KeyAES, Bits: len(material) * 8}
	case class == ckoSecretKey && typ == ckkDES3:
		spec = hsm.KeySpec{Type: hsm.KeyDES3, Bits: len(material) * 8}
	case class == ckoSecretKey && typ == ckkGenericSecret:
		spec = hsm.KeySpec{Type: hsm.KeyHMAC, Bits: len(material) * 8}
	case class == ckoPrivateKey && (typ == ckkEC || typ == ckkRSA):
		key, err := x509.ParsePKCS8PrivateKey(material)
		if err != nil {
			return ckr(ckrEncryptedDataInvalid, "the decrypted private key is not PKCS#8 DER")
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			spec = hsm.KeySpec{Type: hsm.KeyEC, Bits: k.Curve.Params().BitSize}
		case *rsa.PrivateKey:
			spec = hsm.KeySpec{Type: hsm.KeyRSA, Bits: k.N.BitLen()}
		}
		if (typ == ckkEC) != (spec.Type == hsm.KeyEC) {
			return ckr(ckrTemplateInconsistent, "CKA_KEY_TYPE 0x%x does not match the decrypted %s key", typ, spec.Type)
		}
	default:
		return ckr(ckrTemplateInconsistent, "CKA_CLASS %d / CKA_KEY_TYPE 0x%x", class, typ)
	}
	if vl, ok := find(t, ckaValueLen); ok {
		if n, err := c.ulong(vl); err != nil || int(n)*8 != spec.Bits {
			return ckr(ckrTemplateInconsistent, "CKA_VALUE_LEN does not match the decrypted key of %d bytes", len(material))
		}
	}
	if err := hsm.CheckSpec(spec); err != nil {
		return ckr(ckrKeySizeRange, "%v", err)
	}
	key, err := s.h.ImportKey(ctx, q.ID, spec, material)
	if err != nil {
		return simRV(err)
	}
	var cs []byte
	if spec.Type == hsm.KeyAES || spec.Type == hsm.KeyDES3 || spec.Type == hsm.KeyHMAC {
		if cs, err = s.csum(c, q.ID, key, spec); err != nil {
			return err
		}
	}
	return c.keyOut(11, 13, key, cs)
}

// Attributes m_GetAttributeValue answers.
const (
	ckaPublicKeyInfo        = 0x129
	ckrAttributeTypeInvalid = 0x012
	ckUnavailable           = ^uint64(0)
)

// mGetAttributeValue reads attributes of a key blob (§2.4: OCK asks a
// private key blob for CKA_PUBLIC_KEY_INFO, the DER SPKI, and
// CKA_KEY_TYPE). The C side sends the blob, the template as (type,
// capacity) pairs (capacity -1: pValue NULL, a length query), and the
// target; the answer is one stream per attribute — u64 ulValueLen (all
// ones: CK_UNAVAILABLE_INFORMATION), u32 n, n value bytes — that the C
// side writes into the caller's template. As PKCS#11's C_GetAttributeValue:
// an attribute the double does not know gets CK_UNAVAILABLE_INFORMATION
// and CKR_ATTRIBUTE_TYPE_INVALID, one whose buffer is too small gets it
// and CKR_BUFFER_TOO_SMALL; the others are still returned.
func (s *Server) mGetAttributeValue(c *call) error {
	blob, ok := c.buf(0)
	if !ok || len(blob) == 0 {
		return ckr(ckrArgumentsBad, "the key blob is NULL or empty")
	}
	raw, ok := c.buf(1)
	if !ok {
		return ckr(ckrArgumentsBad, "the template is NULL")
	}
	q, err := s.target(c, 3, false)
	if err != nil {
		return err
	}
	b, err := hsm.DecodeBlob(blob)
	if err != nil {
		return ckr(ckrIBMBlobError, "%v", err)
	}
	r := &reader{b: raw}
	n := int(r.u32())
	if n > 64 {
		return frameErr("template of %d attributes", n)
	}
	var out []byte
	var rv uint64
	be := binary.BigEndian
	for i := 0; i < n && r.err == nil; i++ {
		typ, capacity := r.u64(), int64(r.u64())
		var val []byte
		known := true
		switch typ {
		case ckaPublicKeyInfo:
			if b.KeyType != hsm.KeyEC && b.KeyType != hsm.KeyRSA {
				known = false
				break
			}
			spki, err := s.h.PublicKey(c.ctx, q.ID, blob)
			if err != nil {
				return simRV(err)
			}
			val = spki
		case ckaKeyType:
			kt := map[hsm.KeyType]uint64{hsm.KeyAES: ckkAES, hsm.KeyDES3: ckkDES3, hsm.KeyHMAC: ckkGenericSecret, hsm.KeyEC: ckkEC, hsm.KeyRSA: ckkRSA}[b.KeyType]
			val = c.order.AppendUint64(nil, kt)
		case ckaValueLen:
			if b.KeyType == hsm.KeyEC || b.KeyType == hsm.KeyRSA {
				known = false
				break
			}
			val = c.order.AppendUint64(nil, uint64(b.Bits/8))
		default:
			known = false
		}
		switch {
		case !known:
			out = be.AppendUint64(out, ckUnavailable)
			out = be.AppendUint32(out, 0)
			rv = ckrAttributeTypeInvalid
		case capacity < 0:
			out = be.AppendUint64(out, uint64(len(val)))
			out = be.AppendUint32(out, 0)
		case capacity < int64(len(val)):
			out = be.AppendUint64(out, ckUnavailable)
			out = be.AppendUint32(out, 0)
			if rv == 0 {
				rv = ckrBufferTooSmall
			}
		default:
			out = be.AppendUint64(out, uint64(len(val)))
			out = be.AppendUint32(out, uint32(len(val)))
			out = append(out, val...)
		}
	}
	if r.err != nil || len(r.b) != 0 {
		return frameErr("malformed attribute template")
	}
	if err := c.setBytes(2, out); err != nil {
		return err
	}
	if rv != 0 {
		// The per-attribute answers are returned with the error, as
		// C_GetAttributeValue does.
		c.lengthBack = append(c.lengthBack, c.outs...)
		return ckr(rv, "m_GetAttributeValue: an attribute is unknown or its buffer too small")
	}
	return nil
}
