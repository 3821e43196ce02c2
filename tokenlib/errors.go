package tokenlib

import (
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Error is an error of the token engine. It carries an errclass class, so
// the CLI can turn it into an exit code, and the exact PKCS#11 return value,
// so the C layer can return it unchanged.
type Error struct {
	rv  ck.RV
	err error // an errclass error: message, class and hint
}

func (e *Error) Error() string { return e.err.Error() }
func (e *Error) Unwrap() error { return e.err }

// CKRV returns the PKCS#11 return value (CK_RV) of the error.
func (e *Error) CKRV() ck.RV { return e.rv }

// RV returns the CK_RV of err (see ck.RVFromError): the one it carries
// when it or an error it wraps knows its CK_RV, CKR_OK for nil.
func RV(err error) ck.RV { return ck.RVFromError(err) }

// newErr makes an Error with return value rv and class c.
func newErr(rv ck.RV, c errclass.Class, format string, args ...any) error {
	return &Error{rv: rv, err: errclass.New(c, format, args...)}
}

// newErrh is newErr with a hint that says how to fix the problem.
func newErrh(rv ck.RV, c errclass.Class, hint, format string, args ...any) error {
	return &Error{rv: rv, err: errclass.Newh(c, hint, format, args...)}
}

// wrapRV gives err the return value rv, keeping its class and hint, and
// adds context.
func wrapRV(rv ck.RV, err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &Error{rv: rv, err: fmt.Errorf("%s: %w", msg, err)}
}
