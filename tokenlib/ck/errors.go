package ck

import (
	"context"
	"errors"
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// RVError is implemented by errors that know the exact CK_RV a C caller
// should see. [RVFromError] honours it before anything else.
type RVError interface {
	error
	CKRV() RV
}

// rvError is an error with an explicit CK_RV and an errclass class.
type rvError struct {
	rv  RV
	err error // classified; may wrap causes
}

func (e *rvError) Error() string { return e.err.Error() }
func (e *rvError) Unwrap() error { return e.err }
func (e *rvError) CKRV() RV      { return e.rv }

// Errorf returns an error that converts to rv at the API edge and whose
// errclass class is [ClassOf](rv). The format may use %w to wrap causes.
//
//	return ck.Errorf(ck.CKR_PIN_INCORRECT, "token %q: wrong USER PIN", name)
func Errorf(rv RV, format string, args ...any) error {
	return &rvError{rv: rv, err: errclass.New(ClassOf(rv), format, args...)}
}

// WithRV returns err annotated with the CK_RV the caller should see, keeping
// its message, class and hint. A nil err stays nil.
func WithRV(rv RV, err error) error {
	if err == nil {
		return nil
	}
	return &rvError{rv: rv, err: err}
}

// classRV maps each errclass class to the CK_RV reported when nothing more
// specific is known. Classes without a natural PKCS#11 counterpart report
// CKR_FUNCTION_FAILED: PKCS#11 callers treat that as "this call failed,
// the library is still usable", which is true for all of them.
var classRV = map[errclass.Class]RV{
	errclass.Unknown:            CKR_FUNCTION_FAILED,
	errclass.InvalidArgument:    CKR_ARGUMENTS_BAD,
	errclass.NotFound:           CKR_FUNCTION_FAILED, // object/slot/session misses carry their own CKR_*_INVALID
	errclass.FailedPrecondition: CKR_FUNCTION_FAILED,
	errclass.Conflict:           CKR_FUNCTION_FAILED,
	errclass.Unavailable:        CKR_DEVICE_ERROR,    // the HSM (an APQN, the simulator) cannot be reached
	errclass.PermissionDenied:   CKR_FUNCTION_FAILED, // a wrong PIN carries CKR_PIN_INCORRECT itself
	errclass.DataLoss:           CKR_FUNCTION_FAILED,
	errclass.Aborted:            CKR_FUNCTION_CANCELED,
	errclass.DeadlineExceeded:   CKR_FUNCTION_FAILED,
	errclass.Internal:           CKR_GENERAL_ERROR,
}

// hsmRV maps the hsm backend's sentinels to the codes the upstream tokens
// return for the same situations. An engine that knows better (C_Decrypt
// reporting CKR_ENCRYPTED_DATA_INVALID for bad input) wraps with [WithRV].
var hsmRV = []struct {
	err error
	rv  RV
}{
	{hsm.ErrSignature, CKR_SIGNATURE_INVALID},
	{hsm.ErrMechanism, CKR_MECHANISM_INVALID},
	{hsm.ErrBadData, CKR_DATA_INVALID},
	{hsm.ErrBadBlob, CKR_KEY_HANDLE_INVALID},
	{hsm.ErrWrongMode, CKR_KEY_TYPE_INCONSISTENT},
	{hsm.ErrWrongMK, CKR_DEVICE_ERROR},
	{hsm.ErrRegisterState, CKR_DEVICE_ERROR},
	{hsm.ErrNoSuchAPQN, CKR_DEVICE_ERROR},
	{hsm.ErrOffline, CKR_DEVICE_ERROR},
	// An EP11 session-bound key used where its session is not available:
	// the adapters' own return code for it.
	{hsm.ErrSessionBound, CKR_SESSION_CLOSED},
	{hsm.ErrSessionLimit, CKR_SESSION_COUNT},
	{hsm.ErrBadPIN, CKR_PIN_INVALID},
}

// RVFromError returns the CK_RV a C caller sees for err:
//
//  1. nil is CKR_OK;
//  2. the outermost error in the chain implementing CKRV() RV (see
//     [Errorf], [WithRV]) decides;
//  3. an hsm backend sentinel (hsm.ErrSignature → CKR_SIGNATURE_INVALID,
//     hsm.ErrOffline → CKR_DEVICE_ERROR, ...);
//  4. context.Canceled is CKR_FUNCTION_CANCELED;
//  5. otherwise the errclass class (InvalidArgument → CKR_ARGUMENTS_BAD,
//     Unavailable → CKR_DEVICE_ERROR, Aborted → CKR_FUNCTION_CANCELED,
//     Internal → CKR_GENERAL_ERROR), with CKR_FUNCTION_FAILED for the rest.
//
// It never returns CKR_OK for a non-nil error.
func RVFromError(err error) RV {
	if err == nil {
		return CKR_OK
	}
	var re interface{ CKRV() RV }
	if errors.As(err, &re) {
		if rv := re.CKRV(); rv != CKR_OK {
			return rv
		}
		return CKR_FUNCTION_FAILED
	}
	for _, m := range hsmRV {
		if errors.Is(err, m.err) {
			return m.rv
		}
	}
	if errors.Is(err, context.Canceled) {
		return CKR_FUNCTION_CANCELED
	}
	if rv, ok := classRV[errclass.Of(err)]; ok {
		return rv
	}
	return CKR_FUNCTION_FAILED
}

// ClassOf returns the errclass class of a CK_RV, so an error carrying a
// CK_RV (from [Errorf], or from a foreign PKCS#11 library) still answers
// errors.Is(err, errclass.X) sensibly at the CLI and daemon edges.
func ClassOf(rv RV) errclass.Class {
	switch rv {
	case CKR_OK:
		return errclass.Unknown
	case CKR_ARGUMENTS_BAD, CKR_ATTRIBUTE_TYPE_INVALID, CKR_ATTRIBUTE_VALUE_INVALID,
		CKR_ATTRIBUTE_READ_ONLY, CKR_DATA_INVALID, CKR_DATA_LEN_RANGE,
		CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_MECHANISM_INVALID,
		CKR_MECHANISM_PARAM_INVALID, CKR_TEMPLATE_INCOMPLETE, CKR_TEMPLATE_INCONSISTENT,
		CKR_KEY_TYPE_INCONSISTENT, CKR_KEY_SIZE_RANGE, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE,
		CKR_SIGNATURE_INVALID, CKR_SIGNATURE_LEN_RANGE, CKR_WRAPPED_KEY_INVALID,
		CKR_WRAPPED_KEY_LEN_RANGE, CKR_UNWRAPPING_KEY_HANDLE_INVALID, CKR_BUFFER_TOO_SMALL,
		CKR_DOMAIN_PARAMS_INVALID, CKR_CURVE_NOT_SUPPORTED, CKR_KEY_FUNCTION_NOT_PERMITTED,
		CKR_KEY_UNEXTRACTABLE, CKR_KEY_NOT_WRAPPABLE, CKR_USER_TYPE_INVALID:
		return errclass.InvalidArgument
	case CKR_SLOT_ID_INVALID, CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID,
		CKR_SESSION_HANDLE_INVALID, CKR_TOKEN_NOT_PRESENT, CKR_WRAPPING_KEY_HANDLE_INVALID:
		return errclass.NotFound
	case CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_PIN_EXPIRED, CKR_USER_NOT_LOGGED_IN,
		CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED, CKR_ACTION_PROHIBITED:
		return errclass.PermissionDenied
	case CKR_USER_ALREADY_LOGGED_IN, CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_OPERATION_ACTIVE,
		CKR_SESSION_EXISTS, CKR_SESSION_READ_WRITE_SO_EXISTS, CKR_SESSION_READ_ONLY_EXISTS:
		return errclass.Conflict
	case CKR_CRYPTOKI_NOT_INITIALIZED, CKR_CRYPTOKI_ALREADY_INITIALIZED,
		CKR_OPERATION_NOT_INITIALIZED, CKR_USER_PIN_NOT_INITIALIZED, CKR_TOKEN_NOT_RECOGNIZED,
		CKR_FUNCTION_NOT_SUPPORTED, CKR_SESSION_PARALLEL_NOT_SUPPORTED:
		return errclass.FailedPrecondition
	case CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_DEVICE_MEMORY, CKR_SESSION_CLOSED:
		return errclass.Unavailable
	case CKR_FUNCTION_CANCELED, CKR_CANCEL:
		return errclass.Aborted
	case CKR_GENERAL_ERROR, CKR_HOST_MEMORY:
		return errclass.Internal
	}
	return errclass.Internal
}

// Describe returns "CKR_NAME (0x000000A0)" for messages meant for people.
func Describe(rv RV) string { return fmt.Sprintf("%s (0x%08X)", RVName(rv), uint(rv)) }
