package cabi

/*
#include "cabi.h"
*/
import "C"

import (
	"unsafe"

	"github.com/pkcshsm/pkcshsm/tokenlib"
)

// Key generation, wrapping and random numbers.

//export go_C_GenerateKey
func go_C_GenerateKey(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, pTemplate C.CK_ATTRIBUTE_PTR, ulCount C.CK_ULONG, phKey C.CK_OBJECT_HANDLE_PTR) C.CK_RV {
	return entry("C_GenerateKey", func(l *tokenlib.Library) error {
		if phKey == nil {
			return argsBad("phKey is NULL")
		}
		m, err := mechIn(pMechanism)
		if err != nil {
			return err
		}
		t, err := templateIn(pTemplate, ulCount)
		if err != nil {
			return err
		}
		h, err := l.GenerateKey(tokenlib.SessionHandle(hSession), m, t)
		if err != nil {
			return err
		}
		*phKey = C.CK_OBJECT_HANDLE(h)
		return nil
	})
}

//export go_C_GenerateKeyPair
func go_C_GenerateKeyPair(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR,
	pPublicKeyTemplate C.CK_ATTRIBUTE_PTR, ulPublicKeyAttributeCount C.CK_ULONG,
	pPrivateKeyTemplate C.CK_ATTRIBUTE_PTR, ulPrivateKeyAttributeCount C.CK_ULONG,
	phPublicKey C.CK_OBJECT_HANDLE_PTR, phPrivateKey C.CK_OBJECT_HANDLE_PTR) C.CK_RV {
	return entry("C_GenerateKeyPair", func(l *tokenlib.Library) error {
		if phPublicKey == nil || phPrivateKey == nil {
			return argsBad("phPublicKey or phPrivateKey is NULL")
		}
		m, err := mechIn(pMechanism)
		if err != nil {
			return err
		}
		pub, err := templateIn(pPublicKeyTemplate, ulPublicKeyAttributeCount)
		if err != nil {
			return err
		}
		priv, err := templateIn(pPrivateKeyTemplate, ulPrivateKeyAttributeCount)
		if err != nil {
			return err
		}
		hpub, hpriv, err := l.GenerateKeyPair(tokenlib.SessionHandle(hSession), m, pub, priv)
		if err != nil {
			return err
		}
		*phPublicKey, *phPrivateKey = C.CK_OBJECT_HANDLE(hpub), C.CK_OBJECT_HANDLE(hpriv)
		return nil
	})
}

//export go_C_WrapKey
func go_C_WrapKey(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hWrappingKey C.CK_OBJECT_HANDLE, hKey C.CK_OBJECT_HANDLE,
	pWrappedKey C.CK_BYTE_PTR, pulWrappedKeyLen C.CK_ULONG_PTR) C.CK_RV {
	return entry("C_WrapKey", func(l *tokenlib.Library) error {
		m, err := mechIn(pMechanism)
		if err != nil {
			return err
		}
		out, err := outBuf(pWrappedKey, pulWrappedKeyLen)
		if err != nil {
			return err
		}
		n, err := l.WrapKey(tokenlib.SessionHandle(hSession), m, tokenlib.ObjectHandle(hWrappingKey), tokenlib.ObjectHandle(hKey), out)
		return outLen(pulWrappedKeyLen, n, err)
	})
}

//export go_C_UnwrapKey
func go_C_UnwrapKey(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hUnwrappingKey C.CK_OBJECT_HANDLE,
	pWrappedKey C.CK_BYTE_PTR, ulWrappedKeyLen C.CK_ULONG, pTemplate C.CK_ATTRIBUTE_PTR, ulAttributeCount C.CK_ULONG,
	phKey C.CK_OBJECT_HANDLE_PTR) C.CK_RV {
	return entry("C_UnwrapKey", func(l *tokenlib.Library) error {
		if phKey == nil {
			return argsBad("phKey is NULL")
		}
		m, err := mechIn(pMechanism)
		if err != nil {
			return err
		}
		wrapped, err := bytesIn(pWrappedKey, ulWrappedKeyLen, "pWrappedKey")
		if err != nil {
			return err
		}
		t, err := templateIn(pTemplate, ulAttributeCount)
		if err != nil {
			return err
		}
		h, err := l.UnwrapKey(tokenlib.SessionHandle(hSession), m, tokenlib.ObjectHandle(hUnwrappingKey), wrapped, t)
		if err != nil {
			return err
		}
		*phKey = C.CK_OBJECT_HANDLE(h)
		return nil
	})
}

//export go_C_SeedRandom
func go_C_SeedRandom(hSession C.CK_SESSION_HANDLE, pSeed C.CK_BYTE_PTR, ulSeedLen C.CK_ULONG) C.CK_RV {
	return entry("C_SeedRandom", func(l *tokenlib.Library) error {
		seed, err := bytesIn(pSeed, ulSeedLen, "pSeed")
		if err != nil {
			return err
		}
		return l.SeedRandom(tokenlib.SessionHandle(hSession), seed)
	})
}

//export go_C_GenerateRandom
func go_C_GenerateRandom(hSession C.CK_SESSION_HANDLE, RandomData C.CK_BYTE_PTR, ulRandomLen C.CK_ULONG) C.CK_RV {
	return entry("C_GenerateRandom", func(l *tokenlib.Library) error {
		if RandomData == nil && ulRandomLen != 0 {
			return argsBad("RandomData is NULL with length %d", uint64(ulRandomLen))
		}
		if ulRandomLen > maxData {
			return argsBad("random length %d is too large", uint64(ulRandomLen))
		}
		var buf []byte
		if ulRandomLen > 0 {
			buf = unsafe.Slice((*byte)(unsafe.Pointer(RandomData)), ulRandomLen)
		}
		return l.GenerateRandom(tokenlib.SessionHandle(hSession), buf)
	})
}
