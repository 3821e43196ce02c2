package ep11

/*
#include <stdint.h>
#include <stdlib.h>
typedef unsigned long CK_ULONG;
typedef struct { CK_ULONG mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;
typedef struct { CK_ULONG type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;

// PKCS#11 mechanism parameter structures (PKCS#11 v2.40 §2.8, §2.1.8,
// §2.1.9), with CK_ULONG as this platform's unsigned long.
typedef struct { unsigned char *pIv; CK_ULONG ulIvLen; CK_ULONG ulIvBits; unsigned char *pAAD; CK_ULONG ulAADLen; CK_ULONG ulTagBits; } CK_GCM_PARAMS;
typedef struct { CK_ULONG hashAlg; CK_ULONG mgf; CK_ULONG source; void *pSourceData; CK_ULONG ulSourceDataLen; } CK_RSA_PKCS_OAEP_PARAMS;
typedef struct { CK_ULONG hashAlg; CK_ULONG mgf; CK_ULONG sLen; } CK_RSA_PKCS_PSS_PARAMS;

// CK_IBM_DOMAIN_INFO (ep11.h; host-libraries.md §2.5).
typedef struct { CK_ULONG domain; unsigned char wk[32]; unsigned char nextwk[32]; CK_ULONG flags; unsigned char mode[8]; } CK_IBM_DOMAIN_INFO;
*/
import "C"

import "unsafe"

// attr is one template attribute: a CK_BBOOL, a CK_ULONG or bytes.
type attr struct {
	typ   uint64
	kind  uint8 // 0 bytes, 1 bool, 2 ulong
	bytes []byte
	b     bool
	ul    uint64
}

func boolAttr(t uint64, v bool) attr    { return attr{typ: t, kind: 1, b: v} }
func ulongAttr(t, v uint64) attr        { return attr{typ: t, kind: 2, ul: v} }
func bytesAttr(t uint64, v []byte) attr { return attr{typ: t, bytes: v} }

// template builds a CK_ATTRIBUTE array in C memory; values are stored as
// the C types they are, in the host's byte order as the library reads
// them.
func (a *arena) template(attrs []attr) (*C.CK_ATTRIBUTE, C.CK_ULONG) {
	if len(attrs) == 0 {
		return nil, 0
	}
	arr := (*[64]C.CK_ATTRIBUTE)(a.alloc(len(attrs) * int(unsafe.Sizeof(C.CK_ATTRIBUTE{}))))
	for i, at := range attrs {
		arr[i]._type = C.CK_ULONG(at.typ)
		switch at.kind {
		case 1:
			p := (*C.uchar)(a.alloc(1))
			if at.b {
				*p = 1
			}
			arr[i].pValue, arr[i].ulValueLen = unsafe.Pointer(p), 1
		case 2:
			arr[i].pValue, arr[i].ulValueLen = unsafe.Pointer(a.ulong(at.ul)), C.CK_ULONG(unsafe.Sizeof(C.CK_ULONG(0)))
		default:
			arr[i].pValue, arr[i].ulValueLen = a.bytes(at.bytes, len(at.bytes)), C.CK_ULONG(len(at.bytes))
		}
	}
	return &arr[0], C.CK_ULONG(len(attrs))
}

// mech builds a CK_MECHANISM with a parameter already in C memory.
func (a *arena) mech(m uint64, param unsafe.Pointer, plen int) *C.CK_MECHANISM {
	p := (*C.CK_MECHANISM)(a.alloc(int(unsafe.Sizeof(C.CK_MECHANISM{}))))
	p.mechanism, p.pParameter, p.ulParameterLen = C.CK_ULONG(m), param, C.CK_ULONG(plen)
	return p
}

// gcmParams builds CK_GCM_PARAMS.
func (a *arena) gcmParams(iv, aad []byte, tagBits int) (unsafe.Pointer, int) {
	p := (*C.CK_GCM_PARAMS)(a.alloc(int(unsafe.Sizeof(C.CK_GCM_PARAMS{}))))
	p.pIv = (*C.uchar)(a.bytes(iv, len(iv)))
	p.ulIvLen = C.CK_ULONG(len(iv))
	p.ulIvBits = C.CK_ULONG(8 * len(iv))
	if len(aad) > 0 {
		p.pAAD = (*C.uchar)(a.bytes(aad, len(aad)))
	}
	p.ulAADLen = C.CK_ULONG(len(aad))
	p.ulTagBits = C.CK_ULONG(tagBits)
	return unsafe.Pointer(p), int(unsafe.Sizeof(*p))
}

// oaepParams builds CK_RSA_PKCS_OAEP_PARAMS (source CKZ_DATA_SPECIFIED).
func (a *arena) oaepParams(hash, mgf uint64, label []byte) (unsafe.Pointer, int) {
	p := (*C.CK_RSA_PKCS_OAEP_PARAMS)(a.alloc(int(unsafe.Sizeof(C.CK_RSA_PKCS_OAEP_PARAMS{}))))
	p.hashAlg, p.mgf, p.source = C.CK_ULONG(hash), C.CK_ULONG(mgf), 1
	if len(label) > 0 {
		p.pSourceData = a.bytes(label, len(label))
	}
	p.ulSourceDataLen = C.CK_ULONG(len(label))
	return unsafe.Pointer(p), int(unsafe.Sizeof(*p))
}

// pssParams builds CK_RSA_PKCS_PSS_PARAMS.
func (a *arena) pssParams(hash, mgf uint64, salt int) (unsafe.Pointer, int) {
	p := (*C.CK_RSA_PKCS_PSS_PARAMS)(a.alloc(int(unsafe.Sizeof(C.CK_RSA_PKCS_PSS_PARAMS{}))))
	p.hashAlg, p.mgf, p.sLen = C.CK_ULONG(hash), C.CK_ULONG(mgf), C.CK_ULONG(salt)
	return unsafe.Pointer(p), int(unsafe.Sizeof(*p))
}

// domainInfo is CK_IBM_DOMAIN_INFO as Go values.
type domainInfo struct {
	domain     uint64
	wk, nextwk [32]byte
	flags      uint64
}

const domainInfoSize = int(unsafe.Sizeof(C.CK_IBM_DOMAIN_INFO{}))

func readDomainInfo(p unsafe.Pointer) domainInfo {
	c := (*C.CK_IBM_DOMAIN_INFO)(p)
	var d domainInfo
	d.domain, d.flags = uint64(c.domain), uint64(c.flags)
	copy(d.wk[:], C.GoBytes(unsafe.Pointer(&c.wk[0]), 32))
	copy(d.nextwk[:], C.GoBytes(unsafe.Pointer(&c.nextwk[0]), 32))
	return d
}

type cmech = C.CK_MECHANISM
