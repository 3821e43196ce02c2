// Package tokenlib is pkcshsm's PKCS#11 token engine: the slots, tokens,
// sessions, logins, objects and mechanisms of the CCA and EP11 secure-key
// tokens, in pure Go. The C module (a later, thin cgo layer) maps each
// C_* function to the method of the same name on [Library]; the admin CLI
// (cmd/pkcshsm) and pkcshsm_mk_change use the engine in process.
//
// # Opening the library
//
// [Open] reads pkcshsm.conf (and each slot's ccatok.conf / ep11tok.conf),
// opens every token's store under the layout's token directory and checks
// each token's adapters:
//
//	lib, err := tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv()})
//	defer lib.Close()
//	h, err := lib.OpenSession(0, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
//	err = lib.Login(h, ck.CKU_USER, pin)
//	key, err := lib.GenerateKey(h, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN},
//		[]tokenlib.Attribute{tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_TOKEN, true)})
//
// A Library is one application in PKCS#11 terms: a login applies to all of
// its sessions on the token, session objects belong to it and die with the
// session that made them, and closing the last session of a token logs it
// out. Token objects live in the token's SQLite store and are shared by all
// processes. A Library's memory follows the objects it uses, not the
// token's size: opening a token reads no object; C_FindObjects runs on the
// store's indexed columns (class, private flag, unique id, and digests of
// CKA_LABEL and CKA_ID) and hands out handles page by page, decoding
// nothing; an object is decoded (its private attributes unsealed) when it
// is first used and kept in a bounded cache (package objcache), and every
// use compares the cached copy's version with the stored one (one indexed
// read), so a key another process changed, made or destroyed is seen at
// once.
//
// # Secure keys
//
// Keys are never held in the clear. Generation, import and every
// cryptographic operation go through the [hsm.Backend]; a secret or
// private key object stores only its secure key blob in CKA_IBM_OPAQUE.
// Creating a key from CKA_VALUE (or from the RSA/EC private components)
// imports it into the HSM and drops the clear value; CKA_VALUE of a key is
// always CKR_ATTRIBUTE_SENSITIVE. Public keys are kept as attributes
// (CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS, CKA_EC_POINT,
// CKA_PUBLIC_KEY_INFO) and verify and encrypt in software.
//
// # Adapters and master keys
//
// A token uses the APQNs its configuration selects (APQN_ALLOWLIST or
// APQN_ANY) that the backend has online in the token's mode. At start every
// one must have a valid CURRENT master key of each type the token uses
// (CCA: SYM, AES, APKA; EP11: the wrapping key) equal to EXPECTED_MKVPS /
// EXPECTED_WKVP, or, where none is configured, to each other's. Each new
// secure key's pattern is checked against the same value. Work is spread
// round robin over the APQNs; an APQN that is unavailable is skipped for
// the next. When the check fails the token stays listed and every
// operation needing the HSM returns CKR_DEVICE_ERROR naming the APQN and
// both patterns; the check is retried on the next use.
//
// All blob access is in keys.go: that is where the master key change adds
// CKA_IBM_OPAQUE_REENC and CKA_IBM_OPAQUE_OLD handling.
//
// # Errors
//
// Every error carries an errclass class (for the CLI's exit codes) and the
// exact CK_RV the C layer returns: [RV] or ck.RVFromError read it. Bad
// templates, PINs and session states get the PKCS#11 return value the
// specification prescribes and change nothing.
//
// # Conventions of the Go API
//
// Attribute values are in their C representation ([Bool], [Ulong],
// [Bytes], [DecodeUlong], [DecodeBool]). Functions that produce output take
// the caller's buffer and return the length: a nil buffer asks for the
// length, a short one is CKR_BUFFER_TOO_SMALL, and neither ends the
// operation. [Library.GetAttributeValue] follows C_GetAttributeValue
// entry by entry; [Library.GetAttributes] is the convenient form.
// Multi-part encryption and decryption with AES-ECB, AES-CBC, AES-CBC-PAD
// and DES3-CBC output the complete blocks of every Update (CBC-PAD
// decryption holds back the last block, whose padding Final removes); the
// other multi-part operations buffer their input and produce all output at
// Final.
//
// # Mapping to the C functions
//
//	C_Initialize / C_Finalize          Open / Library.Close
//	C_GetInfo                          GetInfo
//	C_GetSlotList / C_GetSlotInfo      GetSlotList / GetSlotInfo
//	C_GetTokenInfo                     GetTokenInfo
//	C_GetMechanismList / _Info         GetMechanismList / GetMechanismInfo
//	C_InitToken / C_InitPIN / C_SetPIN InitToken / InitPIN / SetPIN
//	C_OpenSession / C_CloseSession     OpenSession / CloseSession
//	C_CloseAllSessions                 CloseAllSessions
//	C_GetSessionInfo                   GetSessionInfo
//	C_Login / C_Logout                 Login / Logout
//	C_CreateObject / C_CopyObject      CreateObject / CopyObject
//	C_DestroyObject / C_GetObjectSize  DestroyObject / GetObjectSize
//	C_GetAttributeValue                GetAttributeValue ([AttrRequest])
//	C_SetAttributeValue                SetAttributeValue
//	C_FindObjects{Init,,Final}         FindObjectsInit / FindObjects / FindObjectsFinal
//	C_Encrypt{Init,,Update,Final}      EncryptInit / Encrypt / EncryptUpdate / EncryptFinal
//	C_Decrypt{Init,,Update,Final}      DecryptInit / Decrypt / DecryptUpdate / DecryptFinal
//	C_Digest{Init,,Update,Final}       DigestInit / Digest / DigestUpdate / DigestFinal
//	C_Sign{Init,,Update,Final}         SignInit / Sign / SignUpdate / SignFinal
//	C_Verify{Init,,Update,Final}       VerifyInit / Verify / VerifyUpdate / VerifyFinal
//	C_GenerateKey / C_GenerateKeyPair  GenerateKey / GenerateKeyPair
//	C_WrapKey / C_UnwrapKey            WrapKey / UnwrapKey
//	C_SeedRandom / C_GenerateRandom    SeedRandom / GenerateRandom
//
// Not provided (the C layer answers CKR_FUNCTION_NOT_SUPPORTED):
// C_GetOperationState, C_SetOperationState, C_DigestKey, C_SignRecover,
// C_VerifyRecover, the dual-function calls, C_DeriveKey,
// C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent. Extra Go
// methods for the admin tools: GetAttributes, KeyBlobInfo, TokenAPQNs,
// RestoreOldBlob.
package tokenlib
