// Package ctest calls the module's PKCS#11 functions the way a C
// application does, for the tests of tokenlib/cabi: through the
// CK_FUNCTION_LIST that C_GetFunctionList returns, with arguments in C
// memory the test builds (Alloc, PutAttr ...). Every argument is a
// uintptr: a C address, NULL (0) or an integer, so a test can pass
// anything a C caller could, including bad pointer/length pairs.
//
// The package links tokenlib/cabi into the test binary and exports its
// dynamic symbols (-rdynamic), so dlopen("") finds C_GetFunctionList in the
// test binary itself (miekg/pkcs11's pkcs11.New("")). Tests only.
package ctest

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -rdynamic
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cabi.h"

static CK_FUNCTION_LIST_PTR ctest_list(CK_RV *rv)
{
	CK_FUNCTION_LIST_PTR f = NULL;
	*rv = C_GetFunctionList(&f);
	return f;
}

static CK_RV ctest_interface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR v, CK_FLAGS flags, CK_FUNCTION_LIST_PTR *out)
{
	CK_INTERFACE_PTR i = NULL;
	CK_RV rv = C_GetInterface(name, v, &i, flags);
	if (rv == CKR_OK)
		*out = (CK_FUNCTION_LIST_PTR)i->pFunctionList;
	return rv;
}

static CK_RV ctest_interface_list(uintptr_t list, uintptr_t count)
{
	return C_GetInterfaceList((CK_INTERFACE_PTR)list, (CK_ULONG_PTR)count);
}
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	_ "github.com/pkcshsm/pkcshsm/tokenlib/cabi" // the module under test
)

// List is the module's CK_FUNCTION_LIST.
type List struct{ f C.CK_FUNCTION_LIST_PTR }

// Functions returns the list C_GetFunctionList returns.
func Functions() (*List, error) {
	var rv C.CK_RV
	f := C.ctest_list(&rv)
	if rv != C.CKR_OK || f == nil {
		return nil, fmt.Errorf("C_GetFunctionList: rv 0x%x", uint64(rv))
	}
	return &List{f}, nil
}

// Interface returns the list of the PKCS#11 3.0 interface name (NUL
// terminated C string address, or 0) and version (address of a CK_VERSION,
// or 0), and the CK_RV.
func Interface(name, version uintptr, flags uint) (*List, uint) {
	var f C.CK_FUNCTION_LIST_PTR
	rv := C.ctest_interface((*C.CK_UTF8CHAR)(ptr(name)), (*C.CK_VERSION)(ptr(version)), C.CK_FLAGS(flags), &f)
	if rv != C.CKR_OK {
		return nil, uint(rv)
	}
	return &List{f}, uint(rv)
}

// GetInterfaceList calls C_GetInterfaceList with C addresses.
func GetInterfaceList(list, count uintptr) uint {
	return uint(C.ctest_interface_list(C.uintptr_t(list), C.uintptr_t(count)))
}

// SizeofInterface is sizeof(CK_INTERFACE).
const SizeofInterface = C.sizeof_CK_INTERFACE

// InterfaceAt reads entry i of a CK_INTERFACE array: the name and the
// function list.
func InterfaceAt(p uintptr, i int) (string, *List) {
	c := (*C.CK_INTERFACE)(ptr(p + uintptr(i*SizeofInterface)))
	return C.GoString((*C.char)(unsafe.Pointer(c.pInterfaceName))), &List{C.CK_FUNCTION_LIST_PTR(c.pFunctionList)}
}

// Same reports whether two lists are the same C structure.
func Same(a, b *List) bool { return a.f == b.f }

// Version is the version field of the list.
func (l *List) Version() (major, minor byte) { return byte(l.f.version.major), byte(l.f.version.minor) }

// Entries returns the function pointers of the list, in order, as
// addresses (0 for a missing entry).
func (l *List) Entries() []uintptr {
	n := (unsafe.Sizeof(*l.f) - unsafe.Offsetof(l.f.C_Initialize)) / unsafe.Sizeof(uintptr(0))
	return unsafe.Slice((*uintptr)(unsafe.Pointer(&l.f.C_Initialize)), n)
}

// Sizes of the C types, for building structures.
const (
	SizeofULong     = C.sizeof_CK_ULONG
	SizeofAttribute = C.sizeof_CK_ATTRIBUTE
	SizeofMechanism = C.sizeof_CK_MECHANISM
	SizeofGCM       = C.sizeof_CK_GCM_PARAMS
	SizeofPSS       = C.sizeof_CK_RSA_PKCS_PSS_PARAMS
	SizeofOAEP      = C.sizeof_CK_RSA_PKCS_OAEP_PARAMS
	SizeofInitArgs  = C.sizeof_CK_C_INITIALIZE_ARGS
	SizeofInfo      = C.sizeof_CK_INFO
	SizeofTokenInfo = C.sizeof_CK_TOKEN_INFO
	SizeofSlotInfo  = C.sizeof_CK_SLOT_INFO
	SizeofSession   = C.sizeof_CK_SESSION_INFO
	SizeofMechInfo  = C.sizeof_CK_MECHANISM_INFO
	Unavailable     = ^uint(0) // CK_UNAVAILABLE_INFORMATION
)

// Mem is a block of C memory.
type Mem struct {
	P uintptr
	N int
}

// guard is the number of canary bytes after each allocation.
const guard = 16

// Alloc returns n zeroed bytes of C memory, followed by canary bytes that
// Overrun checks (P is never NULL, even for n = 0).
func Alloc(n int) Mem {
	p := C.calloc(C.size_t(n+guard), 1)
	m := Mem{uintptr(p), n}
	for i := range guard {
		*(*byte)(ptr(m.P + uintptr(n+i))) = 0xA5
	}
	return m
}

// Overrun reports whether something wrote past the end of m.
func (m Mem) Overrun() bool {
	for i := range guard {
		if *(*byte)(ptr(m.P + uintptr(m.N+i))) != 0xA5 {
			return true
		}
	}
	return false
}

// Free releases m.
func (m Mem) Free() { C.free(ptr(m.P)) }

// Bytes views the memory.
func (m Mem) Bytes() []byte { return unsafe.Slice((*byte)(ptr(m.P)), m.N) }

// At is the address of byte off.
func (m Mem) At(off int) uintptr { return m.P + uintptr(off) }

// CBytes copies b into new C memory.
func CBytes(b []byte) Mem {
	m := Alloc(len(b))
	copy(m.Bytes(), b)
	return m
}

// CString copies s into new C memory with a NUL terminator.
func CString(s string) Mem {
	m := Alloc(len(s) + 1)
	copy(m.Bytes(), s)
	return m
}

// ULong reads the CK_ULONG at address p.
func ULong(p uintptr) uint { return uint(*(*C.CK_ULONG)(ptr(p))) }

// SetULong writes the CK_ULONG at address p.
func SetULong(p uintptr, v uint) { *(*C.CK_ULONG)(ptr(p)) = C.CK_ULONG(v) }

// Word reads a pointer-sized word at p.
func Word(p uintptr) uintptr { return *(*uintptr)(ptr(p)) }

// SetWord writes a pointer-sized word at p.
func SetWord(p, v uintptr) { *(*uintptr)(ptr(p)) = v }

// Attr is one CK_ATTRIBUTE: the type, the address of the value (0 for
// NULL) and ulValueLen.
type Attr struct {
	Type  uint
	Value uintptr
	Len   uint
}

// PutAttrs writes a CK_ATTRIBUTE array into new C memory.
func PutAttrs(as []Attr) Mem {
	m := Alloc(len(as) * SizeofAttribute)
	for i, a := range as {
		c := (*C.CK_ATTRIBUTE)(ptr(m.At(i * SizeofAttribute)))
		c._type, c.pValue, c.ulValueLen = C.CK_ATTRIBUTE_TYPE(a.Type), C.CK_VOID_PTR(ptr(a.Value)), C.CK_ULONG(a.Len)
	}
	return m
}

// GetAttr reads entry i of a CK_ATTRIBUTE array.
func GetAttr(m Mem, i int) Attr {
	c := (*C.CK_ATTRIBUTE)(ptr(m.At(i * SizeofAttribute)))
	return Attr{uint(c._type), uintptr(unsafe.Pointer(c.pValue)), uint(c.ulValueLen)}
}

// PutMechanism writes a CK_MECHANISM into new C memory.
func PutMechanism(typ uint, param uintptr, n uint) Mem {
	m := Alloc(SizeofMechanism)
	c := (*C.CK_MECHANISM)(ptr(m.P))
	c.mechanism, c.pParameter, c.ulParameterLen = C.CK_MECHANISM_TYPE(typ), C.CK_VOID_PTR(ptr(param)), C.CK_ULONG(n)
	return m
}

// ULongBytes is a CK_ULONG attribute value.
func ULongBytes(v uint) []byte { return binary.NativeEndian.AppendUint64(nil, uint64(v)) }

// Words writes pointer-sized words (a structure of pointers and
// CK_ULONGs, which have the same size on LP64) into new C memory.
func Words(ws ...uintptr) Mem {
	m := Alloc(len(ws) * int(unsafe.Sizeof(uintptr(0))))
	for i, w := range ws {
		SetWord(m.At(i*int(unsafe.Sizeof(uintptr(0)))), w)
	}
	return m
}

// ptr turns a C address into a pointer. The addresses come from C
// allocations (or are deliberately bad), never from Go memory.
func ptr(p uintptr) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&p))
}
