package cabi

/*
#cgo CFLAGS: -I${SRCDIR}/include
#cgo LDFLAGS: ${SRCDIR}/exports.so
#include "cabi.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"unsafe"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

//go:generate go run gen.go

// Environment variables read at C_Initialize.
const (
	EnvLog      = "PKCSHSM_LOG"       // log file (JSON lines); unset: no logging
	EnvLogLevel = "PKCSHSM_LOG_LEVEL" // debug, info (default), warn, error
)

// module is the state between C_Initialize and C_Finalize. Every entry
// point holds mu for reading while it runs; C_Initialize and C_Finalize
// hold it for writing, so C_Finalize waits for the calls in flight and no
// call sees a half-closed library.
var module struct {
	mu      sync.RWMutex
	lib     *tokenlib.Library
	log     zerolog.Logger
	logFile *os.File
}

// entry runs fn for the C function name with the library, holding the
// module lock for reading: it answers CKR_CRYPTOKI_NOT_INITIALIZED when
// there is none, turns fn's error into the CK_RV (see rvOf) and a panic
// into CKR_GENERAL_ERROR, logged with its stack.
func entry(name string, fn func(l *tokenlib.Library) error) (rv C.CK_RV) {
	module.mu.RLock()
	defer module.mu.RUnlock()
	defer recoverRV(name, &rv)
	if module.lib == nil {
		return C.CKR_CRYPTOKI_NOT_INITIALIZED
	}
	if testHookEntered != nil {
		testHookEntered(name)
	}
	return rvOf(name, fn(module.lib))
}

// testHookEntered, set only by tests (export_test.go), is called by every
// entry point that holds the module lock, before it calls the engine.
var testHookEntered func(name string)

// recoverRV is deferred by every Go entry point: a panic never reaches
// the host.
func recoverRV(name string, rv *C.CK_RV) {
	if r := recover(); r != nil {
		module.log.Error().Str("function", name).Str("panic", fmt.Sprint(r)).
			Str("stack", string(debug.Stack())).Msg("panic in a PKCS#11 entry point; returning CKR_GENERAL_ERROR")
		*rv = C.CKR_GENERAL_ERROR
	}
}

// rvOf is the one place where errors become CK_RV values: the engine's
// errors carry their CK_RV or an errclass class (ck.RVFromError decides).
// C_Initialize may only return the codes PKCS#11 lists for it: a failed
// tokenlib.Open is CKR_FUNCTION_FAILED unless it was an internal error.
// Failures are logged at debug level, without PINs or key material (the
// engine's messages never contain them).
func rvOf(name string, err error) C.CK_RV {
	if err == nil {
		return C.CKR_OK
	}
	rv := ck.RVFromError(err)
	if name == "C_Initialize" && rv != ck.CKR_GENERAL_ERROR {
		rv = ck.CKR_FUNCTION_FAILED
	}
	module.log.Debug().Str("function", name).Str("rv", rv.String()).Err(err).Msg("call failed")
	return C.CK_RV(rv)
}

// errRV returns an error that becomes rv at the C edge, for the argument
// checks of this package.
func errRV(rv ck.RV, format string, args ...any) error { return ck.Errorf(rv, format, args...) }

func argsBad(format string, args ...any) error {
	return ck.Errorf(ck.CKR_ARGUMENTS_BAD, format, args...)
}

//export go_C_Initialize
func go_C_Initialize(pInitArgs C.CK_VOID_PTR) (rv C.CK_RV) {
	defer recoverRV("C_Initialize", &rv)
	if r := checkInitArgs((*C.CK_C_INITIALIZE_ARGS)(pInitArgs)); r != C.CKR_OK {
		return r
	}
	module.mu.Lock()
	defer module.mu.Unlock()
	if module.lib != nil {
		return C.CKR_CRYPTOKI_ALREADY_INITIALIZED
	}
	log, f, err := openLog()
	if err != nil {
		// Nowhere to report it but the return value: the host's stderr
		// is not ours.
		return C.CKR_FUNCTION_FAILED
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv(), Logger: log})
	if err != nil {
		log.Error().Err(err).Msg("C_Initialize failed")
		if f != nil {
			f.Close()
		}
		return rvOf("C_Initialize", err)
	}
	module.lib, module.log, module.logFile = lib, log, f
	log.Info().Int("slots", len(lib.GetSlotList())).Msg("libpkcshsm initialized")
	return C.CKR_OK
}

// checkInitArgs validates CK_C_INITIALIZE_ARGS (PKCS#11 v2.40 §5.4):
// pReserved must be NULL and the four mutex functions all set or all NULL.
// With CKF_OS_LOCKING_OK the library locks natively (what every consumer
// measured sends); callbacks without CKF_OS_LOCKING_OK demand that the
// library uses them, which a Go module cannot: CKR_CANT_LOCK.
// CKF_LIBRARY_CANT_CREATE_OS_THREADS is accepted: the Go runtime's threads
// already exist when the library is loaded, and refusing breaks p11-kit.
func checkInitArgs(a *C.CK_C_INITIALIZE_ARGS) C.CK_RV {
	if a == nil {
		return C.CKR_OK
	}
	if a.pReserved != nil {
		return C.CKR_ARGUMENTS_BAD
	}
	set := 0
	for _, p := range []unsafe.Pointer{unsafe.Pointer(a.CreateMutex), unsafe.Pointer(a.DestroyMutex),
		unsafe.Pointer(a.LockMutex), unsafe.Pointer(a.UnlockMutex)} {
		if p != nil {
			set++
		}
	}
	if set != 0 && set != 4 {
		return C.CKR_ARGUMENTS_BAD
	}
	if set == 4 && a.flags&C.CKF_OS_LOCKING_OK == 0 {
		return C.CKR_CANT_LOCK
	}
	return C.CKR_OK
}

// openLog opens the log file named by PKCSHSM_LOG. Without it the module
// logs nothing: a PKCS#11 module must never write to its host's stdout or
// stderr.
func openLog() (zerolog.Logger, *os.File, error) {
	path := os.Getenv(EnvLog)
	if path == "" {
		return zerolog.Nop(), nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return zerolog.Nop(), nil, err
	}
	level := zerolog.InfoLevel
	if s := os.Getenv(EnvLogLevel); s != "" {
		if l, err := zerolog.ParseLevel(strings.ToLower(s)); err == nil && l != zerolog.NoLevel {
			level = l
		}
	}
	log := zerolog.New(f).Level(level).With().Timestamp().Str("module", "libpkcshsm").Int("pid", os.Getpid()).Logger()
	return log, f, nil
}

//export go_C_Finalize
func go_C_Finalize(pReserved C.CK_VOID_PTR) (rv C.CK_RV) {
	defer recoverRV("C_Finalize", &rv)
	if pReserved != nil {
		return C.CKR_ARGUMENTS_BAD
	}
	module.mu.Lock()
	defer module.mu.Unlock()
	if module.lib == nil {
		return C.CKR_CRYPTOKI_NOT_INITIALIZED
	}
	err := module.lib.Close()
	if err != nil {
		module.log.Warn().Err(err).Msg("C_Finalize: closing the token library")
	}
	module.log.Info().Msg("libpkcshsm finalized")
	if module.logFile != nil {
		module.logFile.Close()
	}
	module.lib, module.log, module.logFile = nil, zerolog.Nop(), nil
	finalizeHooks.Do(func() {
		for _, f := range finalizeHooks.fns {
			f()
		}
	})
	return C.CKR_OK
}

// finalizeHooks run once, at the first successful C_Finalize.
var finalizeHooks struct {
	sync.Once
	fns []func()
}

// OnFinalize registers f to run at the first successful C_Finalize (the
// module's main package stops its CPU profile there). Call it from an
// init function, before the module's first C_Initialize.
func OnFinalize(f func()) {
	finalizeHooks.fns = append(finalizeHooks.fns, f)
}
