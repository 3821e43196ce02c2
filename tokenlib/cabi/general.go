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

// Slot, token and mechanism information, and token/PIN administration.

//export go_C_GetInfo
func go_C_GetInfo(pInfo C.CK_INFO_PTR) C.CK_RV {
	return entry("C_GetInfo", func(l *tokenlib.Library) error {
		if pInfo == nil {
			return argsBad("pInfo is NULL")
		}
		in := l.GetInfo()
		putVersion(&pInfo.cryptokiVersion, in.CryptokiVersion)
		putString(unsafe.Pointer(&pInfo.manufacturerID[0]), len(pInfo.manufacturerID), in.ManufacturerID)
		pInfo.flags = C.CK_FLAGS(in.Flags)
		putString(unsafe.Pointer(&pInfo.libraryDescription[0]), len(pInfo.libraryDescription), in.LibraryDescription)
		putVersion(&pInfo.libraryVersion, in.LibraryVersion)
		return nil
	})
}

// ulongList is the length convention for a list of CK_ULONG values.
func ulongList[T ~uint](p *C.CK_ULONG, pulCount C.CK_ULONG_PTR, list []T) error {
	if pulCount == nil {
		return argsBad("pulCount is NULL")
	}
	n := C.CK_ULONG(len(list))
	if p == nil {
		*pulCount = n
		return nil
	}
	if *pulCount < n {
		*pulCount = n
		return errRV(ck.CKR_BUFFER_TOO_SMALL, "room for %d entries, %d needed", uint64(*pulCount), len(list))
	}
	out := unsafe.Slice(p, n)
	for i, v := range list {
		out[i] = C.CK_ULONG(v)
	}
	*pulCount = n
	return nil
}

//export go_C_GetSlotList
func go_C_GetSlotList(tokenPresent C.CK_BBOOL, pSlotList C.CK_SLOT_ID_PTR, pulCount C.CK_ULONG_PTR) C.CK_RV {
	return entry("C_GetSlotList", func(l *tokenlib.Library) error {
		// Every configured slot has its token: tokenPresent changes nothing.
		return ulongList((*C.CK_ULONG)(pSlotList), pulCount, l.GetSlotList())
	})
}

//export go_C_GetSlotInfo
func go_C_GetSlotInfo(slotID C.CK_SLOT_ID, pInfo C.CK_SLOT_INFO_PTR) C.CK_RV {
	return entry("C_GetSlotInfo", func(l *tokenlib.Library) error {
		in, err := l.GetSlotInfo(tokenlib.SlotID(slotID))
		if err != nil {
			return err
		}
		if pInfo == nil {
			return argsBad("pInfo is NULL")
		}
		putString(unsafe.Pointer(&pInfo.slotDescription[0]), len(pInfo.slotDescription), in.SlotDescription)
		putString(unsafe.Pointer(&pInfo.manufacturerID[0]), len(pInfo.manufacturerID), in.ManufacturerID)
		pInfo.flags = C.CK_FLAGS(in.Flags)
		putVersion(&pInfo.hardwareVersion, in.HardwareVersion)
		putVersion(&pInfo.firmwareVersion, in.FirmwareVersion)
		return nil
	})
}

//export go_C_GetTokenInfo
func go_C_GetTokenInfo(slotID C.CK_SLOT_ID, pInfo C.CK_TOKEN_INFO_PTR) C.CK_RV {
	return entry("C_GetTokenInfo", func(l *tokenlib.Library) error {
		in, err := l.GetTokenInfo(tokenlib.SlotID(slotID))
		if err != nil {
			return err
		}
		if pInfo == nil {
			return argsBad("pInfo is NULL")
		}
		p := pInfo
		putString(unsafe.Pointer(&p.label[0]), len(p.label), in.Label)
		putString(unsafe.Pointer(&p.manufacturerID[0]), len(p.manufacturerID), in.ManufacturerID)
		putString(unsafe.Pointer(&p.model[0]), len(p.model), in.Model)
		putString(unsafe.Pointer(&p.serialNumber[0]), len(p.serialNumber), in.SerialNumber)
		p.flags = C.CK_FLAGS(in.Flags)
		p.ulMaxSessionCount = C.CK_ULONG(in.MaxSessionCount)
		p.ulSessionCount = C.CK_ULONG(in.SessionCount)
		p.ulMaxRwSessionCount = C.CK_ULONG(in.MaxRwSessionCount)
		p.ulRwSessionCount = C.CK_ULONG(in.RwSessionCount)
		p.ulMaxPinLen = C.CK_ULONG(in.MaxPinLen)
		p.ulMinPinLen = C.CK_ULONG(in.MinPinLen)
		p.ulTotalPublicMemory = C.CK_ULONG(in.TotalPublicMemory)
		p.ulFreePublicMemory = C.CK_ULONG(in.FreePublicMemory)
		p.ulTotalPrivateMemory = C.CK_ULONG(in.TotalPrivateMemory)
		p.ulFreePrivateMemory = C.CK_ULONG(in.FreePrivateMemory)
		putVersion(&p.hardwareVersion, in.HardwareVersion)
		putVersion(&p.firmwareVersion, in.FirmwareVersion)
		putString(unsafe.Pointer(&p.utcTime[0]), len(p.utcTime), in.UTCTime)
		return nil
	})
}

//export go_C_GetMechanismList
func go_C_GetMechanismList(slotID C.CK_SLOT_ID, pMechanismList C.CK_MECHANISM_TYPE_PTR, pulCount C.CK_ULONG_PTR) C.CK_RV {
	return entry("C_GetMechanismList", func(l *tokenlib.Library) error {
		list, err := l.GetMechanismList(tokenlib.SlotID(slotID))
		if err != nil {
			return err
		}
		return ulongList((*C.CK_ULONG)(pMechanismList), pulCount, list)
	})
}

//export go_C_GetMechanismInfo
func go_C_GetMechanismInfo(slotID C.CK_SLOT_ID, typ C.CK_MECHANISM_TYPE, pInfo C.CK_MECHANISM_INFO_PTR) C.CK_RV {
	return entry("C_GetMechanismInfo", func(l *tokenlib.Library) error {
		in, err := l.GetMechanismInfo(tokenlib.SlotID(slotID), ck.Mechanism(typ))
		if err != nil {
			return err
		}
		if pInfo == nil {
			return argsBad("pInfo is NULL")
		}
		pInfo.ulMinKeySize = C.CK_ULONG(in.MinKeySize)
		pInfo.ulMaxKeySize = C.CK_ULONG(in.MaxKeySize)
		pInfo.flags = C.CK_FLAGS(in.Flags)
		return nil
	})
}

//export go_C_InitToken
func go_C_InitToken(slotID C.CK_SLOT_ID, pPin C.CK_UTF8CHAR_PTR, ulPinLen C.CK_ULONG, pLabel C.CK_UTF8CHAR_PTR) C.CK_RV {
	return entry("C_InitToken", func(l *tokenlib.Library) error {
		if pLabel == nil {
			return argsBad("pLabel is NULL")
		}
		pin, err := pinIn(pPin, ulPinLen)
		if err != nil {
			return err
		}
		defer clear(pin)
		return l.InitToken(tokenlib.SlotID(slotID), pin, fixedString(pLabel, 32))
	})
}

//export go_C_InitPIN
func go_C_InitPIN(hSession C.CK_SESSION_HANDLE, pPin C.CK_UTF8CHAR_PTR, ulPinLen C.CK_ULONG) C.CK_RV {
	return entry("C_InitPIN", func(l *tokenlib.Library) error {
		pin, err := pinIn(pPin, ulPinLen)
		if err != nil {
			return err
		}
		defer clear(pin)
		return l.InitPIN(tokenlib.SessionHandle(hSession), pin)
	})
}

//export go_C_SetPIN
func go_C_SetPIN(hSession C.CK_SESSION_HANDLE, pOldPin C.CK_UTF8CHAR_PTR, ulOldLen C.CK_ULONG, pNewPin C.CK_UTF8CHAR_PTR, ulNewLen C.CK_ULONG) C.CK_RV {
	return entry("C_SetPIN", func(l *tokenlib.Library) error {
		oldPIN, err := pinIn(pOldPin, ulOldLen)
		if err != nil {
			return err
		}
		defer clear(oldPIN)
		newPIN, err := pinIn(pNewPin, ulNewLen)
		if err != nil {
			return err
		}
		defer clear(newPIN)
		return l.SetPIN(tokenlib.SessionHandle(hSession), oldPIN, newPIN)
	})
}

// C_GetFunctionStatus and C_CancelFunction are the legacy parallel-function
// calls: PKCS#11 v2.40 §5.17 says a library answers them with
// CKR_FUNCTION_NOT_PARALLEL (after C_Initialize; before it, like every
// function, CKR_CRYPTOKI_NOT_INITIALIZED).

//export go_C_GetFunctionStatus
func go_C_GetFunctionStatus(hSession C.CK_SESSION_HANDLE) C.CK_RV {
	return entry("C_GetFunctionStatus", func(*tokenlib.Library) error {
		return errRV(ck.CKR_FUNCTION_NOT_PARALLEL, "no function runs in parallel with the application")
	})
}

//export go_C_CancelFunction
func go_C_CancelFunction(hSession C.CK_SESSION_HANDLE) C.CK_RV {
	return entry("C_CancelFunction", func(*tokenlib.Library) error {
		return errRV(ck.CKR_FUNCTION_NOT_PARALLEL, "no function runs in parallel with the application")
	})
}

// go_C_WaitForSlotEvent: every slot's token is always present, so there
// is never a slot event. With CKF_DONT_BLOCK the answer is CKR_NO_EVENT; a
// blocking wait is CKR_FUNCTION_NOT_SUPPORTED (allowed by §5.5), rather
// than a thread blocked until C_Finalize. Before C_Initialize it is
// CKR_CRYPTOKI_NOT_INITIALIZED.
//
//export go_C_WaitForSlotEvent
func go_C_WaitForSlotEvent(flags C.CK_FLAGS, pSlot C.CK_SLOT_ID_PTR, pReserved C.CK_VOID_PTR) C.CK_RV {
	return entry("C_WaitForSlotEvent", func(*tokenlib.Library) error {
		if pReserved != nil {
			return argsBad("pReserved must be NULL")
		}
		if pSlot == nil {
			return argsBad("pSlot is NULL")
		}
		if ck.Flags(flags)&ck.CKF_DONT_BLOCK != 0 {
			return errRV(ck.CKR_NO_EVENT, "tokens are always present: no slot events")
		}
		return errRV(ck.CKR_FUNCTION_NOT_SUPPORTED, "blocking waits are not supported: tokens are always present, no slot event ever comes")
	})
}
