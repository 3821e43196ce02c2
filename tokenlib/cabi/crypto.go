package cabi

/*
#include "cabi.h"
*/
import "C"

import (
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/oprules"
)

// Encryption, decryption, digests, signatures and verification.

type (
	initFn   func(l *tokenlib.Library, h tokenlib.SessionHandle, m tokenlib.Mechanism, key tokenlib.ObjectHandle) error
	oneFn    func(l *tokenlib.Library, h tokenlib.SessionHandle, in, out []byte) (int, error)
	updateFn func(l *tokenlib.Library, h tokenlib.SessionHandle, in []byte) error
	finalFn  func(l *tokenlib.Library, h tokenlib.SessionHandle, out []byte) (int, error)
)

func opInit(name string, fn initFn, hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hKey C.CK_OBJECT_HANDLE) C.CK_RV {
	return entry(name, func(l *tokenlib.Library) error {
		m, err := mechIn(pMechanism)
		if err != nil {
			return err
		}
		return fn(l, tokenlib.SessionHandle(hSession), m, tokenlib.ObjectHandle(hKey))
	})
}

// opOne is a call with input and output: the single-part C_Encrypt,
// C_Decrypt, C_Sign, C_Digest, and C_EncryptUpdate and C_DecryptUpdate,
// whose block mechanisms output the complete blocks of every part. A NULL
// pOut asks for the length, a short buffer is CKR_BUFFER_TOO_SMALL with it
// in *pulOutLen; after either the application calls again with the same
// input.
func opOne(name string, fn oneFn, hSession C.CK_SESSION_HANDLE, pIn C.CK_BYTE_PTR, ulInLen C.CK_ULONG, pOut C.CK_BYTE_PTR, pulOutLen C.CK_ULONG_PTR) C.CK_RV {
	return entry(name, func(l *tokenlib.Library) error {
		in, err := dataIn(pIn, ulInLen, "the input")
		if err != nil {
			return argsEnd(l, name, hSession, err)
		}
		out, err := outBuf(pOut, pulOutLen)
		if err != nil {
			return argsEnd(l, name, hSession, err)
		}
		n, err := fn(l, tokenlib.SessionHandle(hSession), in, out)
		return outLen(pulOutLen, n, err)
	})
}

// opUpdate is C_DigestUpdate, C_SignUpdate and C_VerifyUpdate.
func opUpdate(name string, fn updateFn, hSession C.CK_SESSION_HANDLE, pIn C.CK_BYTE_PTR, ulInLen C.CK_ULONG) C.CK_RV {
	return entry(name, func(l *tokenlib.Library) error {
		in, err := dataIn(pIn, ulInLen, "the input")
		if err != nil {
			return argsEnd(l, name, hSession, err)
		}
		return fn(l, tokenlib.SessionHandle(hSession), in)
	})
}

func opFinal(name string, fn finalFn, hSession C.CK_SESSION_HANDLE, pOut C.CK_BYTE_PTR, pulOutLen C.CK_ULONG_PTR) C.CK_RV {
	return entry(name, func(l *tokenlib.Library) error {
		out, err := outBuf(pOut, pulOutLen)
		if err != nil {
			return argsEnd(l, name, hSession, err)
		}
		n, err := fn(l, tokenlib.SessionHandle(hSession), out)
		return outLen(pulOutLen, n, err)
	})
}

// argsEnd applies the operation rules (package oprules) to an error found
// in the arguments of a call of C function name, before the engine saw
// the call: like an error of the engine, it ends the active operation of
// the function's family (PKCS#11 v2.40 §5.2).
func argsEnd(l *tokenlib.Library, name string, hSession C.CK_SESSION_HANDLE, err error) error {
	if r, ok := oprules.Lookup(name); ok && r.Ends(ck.RVFromError(err), false) {
		l.EndOperation(tokenlib.SessionHandle(hSession), r.Family)
	}
	return err
}

//export go_C_EncryptInit
func go_C_EncryptInit(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hKey C.CK_OBJECT_HANDLE) C.CK_RV {
	return opInit("C_EncryptInit", (*tokenlib.Library).EncryptInit, hSession, pMechanism, hKey)
}

//export go_C_Encrypt
func go_C_Encrypt(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pEncryptedData C.CK_BYTE_PTR, pulEncryptedDataLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_Encrypt", (*tokenlib.Library).Encrypt, hSession, pData, ulDataLen, pEncryptedData, pulEncryptedDataLen)
}

//export go_C_EncryptUpdate
func go_C_EncryptUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG, pEncryptedPart C.CK_BYTE_PTR, pulEncryptedPartLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_EncryptUpdate", (*tokenlib.Library).EncryptUpdate, hSession, pPart, ulPartLen, pEncryptedPart, pulEncryptedPartLen)
}

//export go_C_EncryptFinal
func go_C_EncryptFinal(hSession C.CK_SESSION_HANDLE, pLastEncryptedPart C.CK_BYTE_PTR, pulLastEncryptedPartLen C.CK_ULONG_PTR) C.CK_RV {
	return opFinal("C_EncryptFinal", (*tokenlib.Library).EncryptFinal, hSession, pLastEncryptedPart, pulLastEncryptedPartLen)
}

//export go_C_DecryptInit
func go_C_DecryptInit(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hKey C.CK_OBJECT_HANDLE) C.CK_RV {
	return opInit("C_DecryptInit", (*tokenlib.Library).DecryptInit, hSession, pMechanism, hKey)
}

//export go_C_Decrypt
func go_C_Decrypt(hSession C.CK_SESSION_HANDLE, pEncryptedData C.CK_BYTE_PTR, ulEncryptedDataLen C.CK_ULONG, pData C.CK_BYTE_PTR, pulDataLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_Decrypt", (*tokenlib.Library).Decrypt, hSession, pEncryptedData, ulEncryptedDataLen, pData, pulDataLen)
}

//export go_C_DecryptUpdate
func go_C_DecryptUpdate(hSession C.CK_SESSION_HANDLE, pEncryptedPart C.CK_BYTE_PTR, ulEncryptedPartLen C.CK_ULONG, pPart C.CK_BYTE_PTR, pulPartLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_DecryptUpdate", (*tokenlib.Library).DecryptUpdate, hSession, pEncryptedPart, ulEncryptedPartLen, pPart, pulPartLen)
}

//export go_C_DecryptFinal
func go_C_DecryptFinal(hSession C.CK_SESSION_HANDLE, pLastPart C.CK_BYTE_PTR, pulLastPartLen C.CK_ULONG_PTR) C.CK_RV {
	return opFinal("C_DecryptFinal", (*tokenlib.Library).DecryptFinal, hSession, pLastPart, pulLastPartLen)
}

//export go_C_DigestInit
func go_C_DigestInit(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR) C.CK_RV {
	return opInit("C_DigestInit", func(l *tokenlib.Library, h tokenlib.SessionHandle, m tokenlib.Mechanism, _ tokenlib.ObjectHandle) error {
		return l.DigestInit(h, m)
	}, hSession, pMechanism, 0)
}

//export go_C_Digest
func go_C_Digest(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pDigest C.CK_BYTE_PTR, pulDigestLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_Digest", (*tokenlib.Library).Digest, hSession, pData, ulDataLen, pDigest, pulDigestLen)
}

//export go_C_DigestUpdate
func go_C_DigestUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG) C.CK_RV {
	return opUpdate("C_DigestUpdate", (*tokenlib.Library).DigestUpdate, hSession, pPart, ulPartLen)
}

//export go_C_DigestFinal
func go_C_DigestFinal(hSession C.CK_SESSION_HANDLE, pDigest C.CK_BYTE_PTR, pulDigestLen C.CK_ULONG_PTR) C.CK_RV {
	return opFinal("C_DigestFinal", (*tokenlib.Library).DigestFinal, hSession, pDigest, pulDigestLen)
}

//export go_C_SignInit
func go_C_SignInit(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hKey C.CK_OBJECT_HANDLE) C.CK_RV {
	return opInit("C_SignInit", (*tokenlib.Library).SignInit, hSession, pMechanism, hKey)
}

//export go_C_Sign
func go_C_Sign(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pSignature C.CK_BYTE_PTR, pulSignatureLen C.CK_ULONG_PTR) C.CK_RV {
	return opOne("C_Sign", (*tokenlib.Library).Sign, hSession, pData, ulDataLen, pSignature, pulSignatureLen)
}

//export go_C_SignUpdate
func go_C_SignUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG) C.CK_RV {
	return opUpdate("C_SignUpdate", (*tokenlib.Library).SignUpdate, hSession, pPart, ulPartLen)
}

//export go_C_SignFinal
func go_C_SignFinal(hSession C.CK_SESSION_HANDLE, pSignature C.CK_BYTE_PTR, pulSignatureLen C.CK_ULONG_PTR) C.CK_RV {
	return opFinal("C_SignFinal", (*tokenlib.Library).SignFinal, hSession, pSignature, pulSignatureLen)
}

//export go_C_VerifyInit
func go_C_VerifyInit(hSession C.CK_SESSION_HANDLE, pMechanism C.CK_MECHANISM_PTR, hKey C.CK_OBJECT_HANDLE) C.CK_RV {
	return opInit("C_VerifyInit", (*tokenlib.Library).VerifyInit, hSession, pMechanism, hKey)
}

//export go_C_Verify
func go_C_Verify(hSession C.CK_SESSION_HANDLE, pData C.CK_BYTE_PTR, ulDataLen C.CK_ULONG, pSignature C.CK_BYTE_PTR, ulSignatureLen C.CK_ULONG) C.CK_RV {
	return entry("C_Verify", func(l *tokenlib.Library) error {
		data, err := dataIn(pData, ulDataLen, "pData")
		if err != nil {
			return argsEnd(l, "C_Verify", hSession, err)
		}
		sig, err := dataIn(pSignature, ulSignatureLen, "pSignature")
		if err != nil {
			return argsEnd(l, "C_Verify", hSession, err)
		}
		return l.Verify(tokenlib.SessionHandle(hSession), data, sig)
	})
}

//export go_C_VerifyUpdate
func go_C_VerifyUpdate(hSession C.CK_SESSION_HANDLE, pPart C.CK_BYTE_PTR, ulPartLen C.CK_ULONG) C.CK_RV {
	return opUpdate("C_VerifyUpdate", (*tokenlib.Library).VerifyUpdate, hSession, pPart, ulPartLen)
}

//export go_C_VerifyFinal
func go_C_VerifyFinal(hSession C.CK_SESSION_HANDLE, pSignature C.CK_BYTE_PTR, ulSignatureLen C.CK_ULONG) C.CK_RV {
	return entry("C_VerifyFinal", func(l *tokenlib.Library) error {
		sig, err := dataIn(pSignature, ulSignatureLen, "pSignature")
		if err != nil {
			return argsEnd(l, "C_VerifyFinal", hSession, err)
		}
		return l.VerifyFinal(tokenlib.SessionHandle(hSession), sig)
	})
}
