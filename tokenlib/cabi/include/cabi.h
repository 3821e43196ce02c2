/* The platform macros pkcs11.h needs (Linux, LP64: no packing), the
 * vendored OASIS PKCS#11 v2.40 headers, and the C helpers of
 * tokenlib/cabi. Not a public header. */
#ifndef PKCSHSM_CABI_H
#define PKCSHSM_CABI_H

#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif

#include "pkcs11.h"

/* PKCS#11 3.0 interface discovery (the 3.0 headers are not vendored; the
 * layout is the OASIS one). */
typedef struct CK_INTERFACE {
	CK_CHAR *pInterfaceName;
	CK_VOID_PTR pFunctionList;
	CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;
#ifndef CKF_INTERFACE_FORK_SAFE
#define CKF_INTERFACE_FORK_SAFE 0x00000001UL
#endif

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount);
CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
		     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags);

/* CK_GCM_PARAMS as PKCS#11 v2.30 headers (and some consumers built with
 * them) lay it out, without ulIvBits. */
typedef struct PKCSHSM_GCM_PARAMS_V230 {
	CK_BYTE_PTR pIv;
	CK_ULONG ulIvLen;
	CK_BYTE_PTR pAAD;
	CK_ULONG ulAADLen;
	CK_ULONG ulTagBits;
} PKCSHSM_GCM_PARAMS_V230;

/* The fork guard (cabi.c). */
int pkcshsm_forked(void);
CK_RV pkcshsm_refuse_forked(const char *fn, CK_RV rv);

#endif
