package cabi

/*
#include "cabi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Objects, attributes and searches.

//export go_C_CreateObject
func go_C_CreateObject(hSession C.CK_SESSION_HANDLE, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG, phObject C.CK_OBJECT_HANDLE_PTR) C.CK_RV {
	return entry("C_CreateObject", func(l *tokenlib.Library) error {
		if phObject == nil {
			return argsBad("phObject is NULL")
		}
		t, err := templateIn(pTemplate, ulCount)
		if err != nil {
			return err
		}
		h, err := l.CreateObject(tokenlib.SessionHandle(hSession), t)
		if err != nil {
			return err
		}
		*phObject = C.CK_OBJECT_HANDLE(h)
		return nil
	})
}

//export go_C_CopyObject
func go_C_CopyObject(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG, phNewObject C.CK_OBJECT_HANDLE_PTR) C.CK_RV {
	return entry("C_CopyObject", func(l *tokenlib.Library) error {
		if phNewObject == nil {
			return argsBad("phNewObject is NULL")
		}
		t, err := templateIn(pTemplate, ulCount)
		if err != nil {
			return err
		}
		h, err := l.CopyObject(tokenlib.SessionHandle(hSession), tokenlib.ObjectHandle(hObject), t)
		if err != nil {
			return err
		}
		*phNewObject = C.CK_OBJECT_HANDLE(h)
		return nil
	})
}

//export go_C_DestroyObject
func go_C_DestroyObject(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE) C.CK_RV {
	return entry("C_DestroyObject", func(l *tokenlib.Library) error {
		return l.DestroyObject(tokenlib.SessionHandle(hSession), tokenlib.ObjectHandle(hObject))
	})
}

//export go_C_GetObjectSize
func go_C_GetObjectSize(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pulSize C.CK_ULONG_PTR) C.CK_RV {
	return entry("C_GetObjectSize", func(l *tokenlib.Library) error {
		if pulSize == nil {
			return argsBad("pulSize is NULL")
		}
		n, err := l.GetObjectSize(tokenlib.SessionHandle(hSession), tokenlib.ObjectHandle(hObject))
		if err != nil {
			return err
		}
		*pulSize = C.CK_ULONG(n)
		return nil
	})
}

// untouched marks a request the engine did not reach (the object or
// session was invalid): its ulValueLen stays as the caller set it.
const untouched = -2

//export go_C_GetAttributeValue
func go_C_GetAttributeValue(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG) C.CK_RV {
	// PKCS#11 v2.40 §5.7: every entry is processed. pValue NULL asks for
	// the length; an entry that is sensitive, unknown or whose buffer is
	// too small gets CK_UNAVAILABLE_INFORMATION, and the call returns the
	// matching error after all entries were processed.
	return entry("C_GetAttributeValue", func(l *tokenlib.Library) error {
		ca, err := attrs(pTemplate, ulCount)
		if err != nil {
			return err
		}
		req := make([]tokenlib.AttrRequest, len(ca))
		for i, a := range ca {
			req[i] = tokenlib.AttrRequest{Type: ck.Attribute(a._type), Len: untouched}
			if a.pValue != nil {
				// A length no buffer has (CK_UNAVAILABLE_INFORMATION left
				// over from an earlier call that reused the template) is
				// treated as no room at all: never written through.
				n := a.ulValueLen
				if n > maxValue {
					n = 0
				}
				req[i].Buf = unsafe.Slice((*byte)(a.pValue), n)
			}
		}
		err = l.GetAttributeValue(tokenlib.SessionHandle(hSession), tokenlib.ObjectHandle(hObject), req)
		for i := range ca {
			switch n := req[i].Len; {
			case n == untouched:
			case n < 0:
				ca[i].ulValueLen = unavailable
			default:
				ca[i].ulValueLen = C.CK_ULONG(n)
			}
		}
		return err
	})
}

//export go_C_SetAttributeValue
func go_C_SetAttributeValue(hSession C.CK_SESSION_HANDLE, hObject C.CK_OBJECT_HANDLE, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG) C.CK_RV {
	return entry("C_SetAttributeValue", func(l *tokenlib.Library) error {
		t, err := templateIn(pTemplate, ulCount)
		if err != nil {
			return err
		}
		return l.SetAttributeValue(tokenlib.SessionHandle(hSession), tokenlib.ObjectHandle(hObject), t)
	})
}

//export go_C_FindObjectsInit
func go_C_FindObjectsInit(hSession C.CK_SESSION_HANDLE, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG) C.CK_RV {
	return entry("C_FindObjectsInit", func(l *tokenlib.Library) error {
		t, err := templateIn(pTemplate, ulCount)
		if err != nil {
			return err
		}
		return l.FindObjectsInit(tokenlib.SessionHandle(hSession), t)
	})
}

//export go_C_FindObjects
func go_C_FindObjects(hSession C.CK_SESSION_HANDLE, phObject C.CK_OBJECT_HANDLE_PTR, ulMaxObjectCount C.CK_ULONG, pulObjectCount C.CK_ULONG_PTR) C.CK_RV {
	return entry("C_FindObjects", func(l *tokenlib.Library) error {
		if pulObjectCount == nil || (phObject == nil && ulMaxObjectCount != 0) {
			return argsBad("phObject or pulObjectCount is NULL")
		}
		hs, err := l.FindObjects(tokenlib.SessionHandle(hSession), int(min(ulMaxObjectCount, maxObjects)))
		if err != nil {
			return err
		}
		if len(hs) > 0 {
			out := unsafe.Slice(phObject, len(hs))
			for i, h := range hs {
				out[i] = C.CK_OBJECT_HANDLE(h)
			}
		}
		*pulObjectCount = C.CK_ULONG(len(hs))
		return nil
	})
}

//export go_C_FindObjectsFinal
func go_C_FindObjectsFinal(hSession C.CK_SESSION_HANDLE) C.CK_RV {
	return entry("C_FindObjectsFinal", func(l *tokenlib.Library) error {
		return l.FindObjectsFinal(tokenlib.SessionHandle(hSession))
	})
}
