package cabi

/*
#include "cabi.h"
*/
import "C"

import (
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Sessions and logins.

//export go_C_OpenSession
func go_C_OpenSession(slotID C.CK_SLOT_ID, flags C.CK_FLAGS, pApplication C.CK_VOID_PTR, Notify C.CK_NOTIFY, phSession C.CK_SESSION_HANDLE_PTR) C.CK_RV {
	// pApplication and Notify are the application's: the library never
	// calls back (PKCS#11 allows a library to ignore the callback).
	return entry("C_OpenSession", func(l *tokenlib.Library) error {
		if phSession == nil {
			return argsBad("phSession is NULL")
		}
		h, err := l.OpenSession(tokenlib.SlotID(slotID), ck.Flags(flags))
		if err != nil {
			return err
		}
		*phSession = C.CK_SESSION_HANDLE(h)
		return nil
	})
}

//export go_C_CloseSession
func go_C_CloseSession(hSession C.CK_SESSION_HANDLE) C.CK_RV {
	return entry("C_CloseSession", func(l *tokenlib.Library) error {
		return l.CloseSession(tokenlib.SessionHandle(hSession))
	})
}

//export go_C_CloseAllSessions
func go_C_CloseAllSessions(slotID C.CK_SLOT_ID) C.CK_RV {
	return entry("C_CloseAllSessions", func(l *tokenlib.Library) error {
		return l.CloseAllSessions(tokenlib.SlotID(slotID))
	})
}

//export go_C_GetSessionInfo
func go_C_GetSessionInfo(hSession C.CK_SESSION_HANDLE, pInfo C.CK_SESSION_INFO_PTR) C.CK_RV {
	return entry("C_GetSessionInfo", func(l *tokenlib.Library) error {
		in, err := l.GetSessionInfo(tokenlib.SessionHandle(hSession))
		if err != nil {
			return err
		}
		if pInfo == nil {
			return argsBad("pInfo is NULL")
		}
		pInfo.slotID = C.CK_SLOT_ID(in.SlotID)
		pInfo.state = C.CK_STATE(in.State)
		pInfo.flags = C.CK_FLAGS(in.Flags)
		pInfo.ulDeviceError = C.CK_ULONG(in.DeviceError)
		return nil
	})
}

//export go_C_Login
func go_C_Login(hSession C.CK_SESSION_HANDLE, userType C.CK_USER_TYPE, pPin C.CK_UTF8CHAR_PTR, ulPinLen C.CK_ULONG) C.CK_RV {
	return entry("C_Login", func(l *tokenlib.Library) error {
		pin, err := pinIn(pPin, ulPinLen)
		if err != nil {
			return err
		}
		defer clear(pin)
		return l.Login(tokenlib.SessionHandle(hSession), ck.UserType(userType), pin)
	})
}

//export go_C_Logout
func go_C_Logout(hSession C.CK_SESSION_HANDLE) C.CK_RV {
	return entry("C_Logout", func(l *tokenlib.Library) error {
		return l.Logout(tokenlib.SessionHandle(hSession))
	})
}
