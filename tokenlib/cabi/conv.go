package cabi

/*
#include "cabi.h"
*/
import "C"

import (
	"bytes"
	"unsafe"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Limits on what the caller's lengths may claim. C memory cannot be
// checked, but a length no real call uses (CK_UNAVAILABLE_INFORMATION, a
// negative int cast to CK_ULONG) is refused before anything is read.
const (
	maxData      = 1 << 30 // bytes of one input or output buffer
	maxValue     = 1 << 24 // bytes of one attribute value or parameter field
	maxTemplate  = 1 << 12 // attributes in one template
	maxObjects   = 1 << 20 // handles asked from C_FindObjects at once
	unavailable  = ^C.CK_ULONG(0)
	sizeofULong  = C.sizeof_CK_ULONG
	sizeofAttr   = C.sizeof_CK_ATTRIBUTE
	sizeofGCM    = C.sizeof_CK_GCM_PARAMS
	sizeofGCM230 = C.sizeof_PKCSHSM_GCM_PARAMS_V230
)

// bytesIn copies a caller's input buffer into Go memory (the engine may
// keep what it is given, the caller may free its buffer). NULL is allowed
// only with length 0.
func bytesIn(p C.CK_BYTE_PTR, n C.CK_ULONG, what string) ([]byte, error) {
	b, err := dataIn(p, n, what)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// dataIn views a caller's input buffer in place, without copying it: the
// data of the crypto calls (C_Encrypt, C_EncryptUpdate, C_Sign, C_Verify,
// ...), which the engine only reads during the call and never keeps (see
// tokenlib.Library.Encrypt). A 64 KiB C_Encrypt no longer copies its input
// into Go memory first. NULL is allowed only with length 0. The view may
// alias the output buffer (in-place encryption): the engine computes the
// whole output before it writes any of it.
func dataIn(p C.CK_BYTE_PTR, n C.CK_ULONG, what string) ([]byte, error) {
	if p == nil {
		if n != 0 {
			return nil, argsBad("%s is NULL with length %d", what, uint64(n))
		}
		return nil, nil
	}
	if n > maxData {
		return nil, argsBad("%s length %d is too large", what, uint64(n))
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), n), nil
}

// pinIn copies a PIN; the caller clears it after use.
func pinIn(p C.CK_UTF8CHAR_PTR, n C.CK_ULONG) ([]byte, error) {
	if n > 4096 {
		return nil, errRV(ck.CKR_PIN_LEN_RANGE, "PIN length %d is out of range", uint64(n))
	}
	return bytesIn((*C.CK_BYTE)(unsafe.Pointer(p)), n, "PIN")
}

// outBuf is the PKCS#11 length convention (v2.40 §5.2) for an output
// buffer p with length *pulLen: pulLen must not be NULL; p NULL asks for
// the length (nil); otherwise the caller's memory, written in place.
func outBuf(p C.CK_BYTE_PTR, pulLen C.CK_ULONG_PTR) ([]byte, error) {
	if pulLen == nil {
		return nil, argsBad("the output length pointer is NULL")
	}
	if p == nil {
		return nil, nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), min(*pulLen, maxData)), nil
}

// outLen stores the result length of a call that produced output, or that
// failed only because the buffer was too small (the caller learns the
// size it needs); any other failure leaves *pulLen alone.
func outLen(pulLen C.CK_ULONG_PTR, n int, err error) error {
	if err == nil || ck.RVFromError(err) == ck.CKR_BUFFER_TOO_SMALL {
		*pulLen = C.CK_ULONG(n)
	}
	return err
}

// attrs views a C template.
func attrs(p C.CK_ATTRIBUTE_PTR, n C.CK_ULONG) ([]C.CK_ATTRIBUTE, error) {
	if n == 0 {
		return nil, nil
	}
	if p == nil {
		return nil, argsBad("the template is NULL with %d attributes", uint64(n))
	}
	if n > maxTemplate {
		return nil, argsBad("a template of %d attributes is too large", uint64(n))
	}
	return unsafe.Slice(p, n), nil
}

// templateIn copies an input template (C_CreateObject, C_GenerateKey,
// C_FindObjectsInit ...). A NULL value with a non-zero length is a bad
// argument; an absurd length is CKR_ATTRIBUTE_VALUE_INVALID.
func templateIn(p C.CK_ATTRIBUTE_PTR, n C.CK_ULONG) ([]tokenlib.Attribute, error) {
	ca, err := attrs(p, n)
	if err != nil || ca == nil {
		return nil, err
	}
	out := make([]tokenlib.Attribute, len(ca))
	for i, a := range ca {
		t := ck.Attribute(a._type)
		if a.ulValueLen > maxValue {
			return nil, errRV(ck.CKR_ATTRIBUTE_VALUE_INVALID, "%v: value length %d is invalid", t, uint64(a.ulValueLen))
		}
		if a.pValue == nil && a.ulValueLen != 0 {
			return nil, argsBad("%v: pValue is NULL with ulValueLen %d", t, uint64(a.ulValueLen))
		}
		out[i] = tokenlib.Attribute{Type: t, Value: []byte{}}
		if a.ulValueLen > 0 {
			out[i].Value = C.GoBytes(unsafe.Pointer(a.pValue), C.int(a.ulValueLen))
		}
	}
	return out, nil
}

// paramBytes copies a field of a mechanism parameter.
func paramBytes(p C.CK_BYTE_PTR, n C.CK_ULONG, m ck.Mechanism, what string) ([]byte, error) {
	if p == nil {
		if n != 0 {
			return nil, errRV(ck.CKR_MECHANISM_PARAM_INVALID, "%v: %s is NULL with length %d", m, what, uint64(n))
		}
		return nil, nil
	}
	if n > maxValue {
		return nil, errRV(ck.CKR_MECHANISM_PARAM_INVALID, "%v: %s length %d is invalid", m, what, uint64(n))
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n)), nil
}

// mechIn decodes a CK_MECHANISM and its parameter into Go memory. The
// parameter's size must be exactly that of the structure the mechanism
// takes (CKR_MECHANISM_PARAM_INVALID otherwise); the engine checks the
// values.
func mechIn(p C.CK_MECHANISM_PTR) (tokenlib.Mechanism, error) {
	if p == nil {
		return tokenlib.Mechanism{}, argsBad("pMechanism is NULL")
	}
	m := tokenlib.Mechanism{Type: ck.Mechanism(p.mechanism)}
	n := p.ulParameterLen
	if p.pParameter == nil {
		if n != 0 {
			return m, errRV(ck.CKR_MECHANISM_PARAM_INVALID, "%v: pParameter is NULL with length %d", m.Type, uint64(n))
		}
		return m, nil
	}
	bad := func(want string) error {
		return errRV(ck.CKR_MECHANISM_PARAM_INVALID, "%v: parameter of %d bytes is not a %s", m.Type, uint64(n), want)
	}
	var err error
	switch m.Type {
	case ck.CKM_AES_GCM:
		var g tokenlib.GCMParams
		switch n {
		case sizeofGCM:
			c := (*C.CK_GCM_PARAMS)(p.pParameter)
			g.TagBits = uint(c.ulTagBits)
			if g.IV, err = paramBytes(c.pIv, c.ulIvLen, m.Type, "pIv"); err == nil {
				g.AAD, err = paramBytes(c.pAAD, c.ulAADLen, m.Type, "pAAD")
			}
		case sizeofGCM230:
			c := (*C.PKCSHSM_GCM_PARAMS_V230)(p.pParameter)
			g.TagBits = uint(c.ulTagBits)
			if g.IV, err = paramBytes(c.pIv, c.ulIvLen, m.Type, "pIv"); err == nil {
				g.AAD, err = paramBytes(c.pAAD, c.ulAADLen, m.Type, "pAAD")
			}
		default:
			return m, bad("CK_GCM_PARAMS")
		}
		m.Param = &g
	case ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA1_RSA_PKCS_PSS, ck.CKM_SHA224_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS,
		ck.CKM_SHA384_RSA_PKCS_PSS, ck.CKM_SHA512_RSA_PKCS_PSS:
		if n != C.sizeof_CK_RSA_PKCS_PSS_PARAMS {
			return m, bad("CK_RSA_PKCS_PSS_PARAMS")
		}
		c := (*C.CK_RSA_PKCS_PSS_PARAMS)(p.pParameter)
		m.Param = &tokenlib.PSSParams{Hash: ck.Mechanism(c.hashAlg), MGF: ck.MGF(c.mgf), SaltLen: uint(c.sLen)}
	case ck.CKM_RSA_PKCS_OAEP:
		if n != C.sizeof_CK_RSA_PKCS_OAEP_PARAMS {
			return m, bad("CK_RSA_PKCS_OAEP_PARAMS")
		}
		c := (*C.CK_RSA_PKCS_OAEP_PARAMS)(p.pParameter)
		o := &tokenlib.OAEPParams{Hash: ck.Mechanism(c.hashAlg), MGF: ck.MGF(c.mgf), Source: uint(c.source)}
		o.SourceData, err = paramBytes((*C.CK_BYTE)(c.pSourceData), c.ulSourceDataLen, m.Type, "pSourceData")
		m.Param = o
	default:
		// Raw bytes (an IV); an empty parameter is no parameter.
		var b []byte
		b, err = paramBytes((*C.CK_BYTE)(p.pParameter), n, m.Type, "pParameter")
		if len(b) > 0 {
			m.Param = b
		}
	}
	return m, err
}

// putString blank-pads s into a fixed-size CK_UTF8CHAR/CK_CHAR field.
func putString(dst unsafe.Pointer, size int, s string) {
	b := unsafe.Slice((*byte)(dst), size)
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func putVersion(dst *C.CK_VERSION, v tokenlib.Version) {
	dst.major, dst.minor = C.CK_BYTE(v.Major), C.CK_BYTE(v.Minor)
}

// fixedString reads a blank-padded fixed-size field (C_InitToken's label),
// up to a NUL some callers put there.
func fixedString(p C.CK_UTF8CHAR_PTR, size int) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(p)), size)
	for i, c := range b {
		if c == 0 {
			b = b[:i]
			break
		}
	}
	end := len(b)
	for end > 0 && (b[end-1] == ' ' || b[end-1] == 0) {
		end--
	}
	return string(b[:end])
}
