// Package cabi is the C ABI of the token library: the PKCS#11 v2.40 entry
// points of libpkcshsm.so (built by cmd/libpkcshsm) over [tokenlib]. It is
// the only cgo package of the project.
//
// The C side is generated: gen.go reads the vendored OASIS header
// include/pkcs11f.h and writes zfuncs.c, one C wrapper per C_* function
// and the static CK_FUNCTION_LIST (go generate ./tokenlib/cabi; a test
// checks the committed file is current). A wrapper first checks in C that
// the process is the one that loaded the module (the fork guard, cabi.c),
// then calls the cgo-exported go_C_* function of the same name; a
// function without one returns CKR_FUNCTION_NOT_SUPPORTED. C_GetInterface
// and C_GetInterfaceList (PKCS#11 3.0) return the same 2.40 list.
//
// Every Go entry point recovers panics (CKR_GENERAL_ERROR, logged), copies
// its inputs out of C memory before the engine sees them, and turns
// errors into CK_RV values in one place ([ck.RVFromError]). C_Initialize
// opens the [tokenlib.Library] (which starts the runtime agent that
// follows master key changes through pkcshsmd), C_Finalize closes it; the
// library can be initialised again afterwards.
//
// Logging goes to the file named by PKCSHSM_LOG (JSON lines, level from
// PKCSHSM_LOG_LEVEL), and nowhere when it is unset: the module never
// writes to its host's stdout or stderr. exports.so (a linker script)
// limits the dynamic symbols to C_*. man/libpkcshsm.3 is the user's
// documentation.
package cabi
