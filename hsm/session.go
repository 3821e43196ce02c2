package hsm

import (
	"context"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// EP11 sessions.
//
// An EP11 session is state on an EP11 adapter domain, created by a login
// with a PIN and a nonce and destroyed by a logout. The login returns a
// pin blob: the 32-byte session field (derived by the adapter from its
// wrapping key, the PIN and the nonce, so APQNs with the same wrapping key
// return equal pin blobs), a 16-byte salt and a 32-byte MAC. A key made
// while a pin blob is passed (see [WithBinder]) is session-bound: its
// blob's first 32 bytes are the session field, and the adapter accepts it
// only while that session is logged in on it. Unbound keys carry zeros.
//
// Sessions are not PKCS#11 sessions: the token decides which PKCS#11
// sessions and objects use which EP11 session (STRICT_MODE, VHSM_MODE).

// Sizes of the EP11 session data (XCP_PINBLOB_BYTES, XCP_MIN/MAX_PINBYTES).
const (
	PinBlobSize    = 80
	SessionIDSize  = 32
	MinPINBytes    = 8
	MaxPINBytes    = 16
	MaxNonceBytes  = 32
	pinBlobSaltLen = 16
)

// Session errors.
var (
	// ErrSessionBound is returned when a key is bound to an EP11 session
	// the caller may not use: not logged in on the APQN used, or (from the
	// token) bound to another PKCS#11 session or another token.
	ErrSessionBound = errclass.New(errclass.PermissionDenied, "the key is bound to an EP11 session that is not available here")
	// ErrSessionLimit is returned by Login when the APQN holds as many EP11
	// sessions as it can.
	ErrSessionLimit = errclass.New(errclass.Unavailable, "no EP11 session left on the adapter")
	// ErrNoSession is returned by Logout for a pin blob of no logged-in
	// session.
	ErrNoSession = errclass.New(errclass.NotFound, "no such EP11 session")
	// ErrBadPIN is returned by Login for a PIN the adapter refuses (length
	// or characters).
	ErrBadPIN = errclass.New(errclass.InvalidArgument, "PIN refused by the adapter")
)

// SessionStatus is the EP11 session capacity of one APQN.
type SessionStatus struct {
	Max, Used int
}

// Sessions is implemented by backends with EP11 sessions.
type Sessions interface {
	// Login logs an EP11 session in on q: pin is MinPINBytes..MaxPINBytes
	// bytes (trailing zero bytes are padding), nonce 1..MaxNonceBytes. It
	// returns the session's pin blob under q's CURRENT wrapping key.
	// Logging in a session that is already logged in on q returns its pin
	// blob and changes nothing. ErrSessionLimit when q is full.
	Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error)
	// Logout ends the session of pinBlob (any pin blob q issued for it)
	// on q; keys bound to it stop working there. ErrNoSession when it is
	// not logged in on q.
	Logout(ctx context.Context, q apqn.ID, pinBlob []byte) error
	// SessionStatus reports how many sessions q holds and can hold.
	SessionStatus(ctx context.Context, q apqn.ID) (SessionStatus, error)
}

// Binder supplies the pin blob that binds keys made on an APQN.
type Binder interface {
	// PinBlob returns the pin blob to pass on q, whose CURRENT wrapping
	// key has pattern wk; it may log the session in on q first.
	PinBlob(ctx context.Context, q apqn.ID, wk mkvp.Pattern) ([]byte, error)
}

type binderKey struct{}

// WithBinder returns a context under which key-making backend calls
// (GenerateKey, GenerateKeyPair, ImportKey, UnwrapKey) on EP11 APQNs bind
// the new key to the EP11 session b supplies. A nil b makes unbound keys.
func WithBinder(ctx context.Context, b Binder) context.Context {
	return context.WithValue(ctx, binderKey{}, b)
}

// BinderFrom returns the Binder of ctx, or nil.
func BinderFrom(ctx context.Context) Binder {
	b, _ := ctx.Value(binderKey{}).(Binder)
	return b
}

// SessionField returns the session field of a pin blob (its first 32
// bytes), which session-bound key blobs carry.
func SessionField(pinBlob []byte) ([SessionIDSize]byte, error) {
	var f [SessionIDSize]byte
	if len(pinBlob) != PinBlobSize {
		return f, errclass.New(errclass.InvalidArgument, "pin blob has %d bytes, want %d", len(pinBlob), PinBlobSize)
	}
	copy(f[:], pinBlob)
	return f, nil
}
