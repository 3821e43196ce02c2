package sim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// EP11 sessions, as an EP11 coprocessor keeps them per domain.
//
// A login derives the session secret from the PIN and the nonce alone;
// the pin blob is field ‖ salt ‖ MAC, each an HMAC-SHA256 under the
// CURRENT wrapping key of the secret (field, salt) or of field ‖ salt
// (MAC). So APQNs with the same wrapping key give equal pin blobs, and
// after a wrapping key change the same session has a new field: a
// re-encipher moves a bound key from the session's field under CURRENT to
// its field under NEW. Sessions are part of the shared state, so they
// survive the process that logged them in.

// Session limits.
const (
	// DefaultMaxSessions is the session limit of an APQN whose limit was
	// not set.
	DefaultMaxSessions = 64
	// MaxSessionLimit is the highest limit an APQN accepts.
	MaxSessionLimit = 4096
	// maxIssued bounds the pin blobs remembered per session (one per
	// wrapping key the session was logged in under).
	maxIssued = 8
)

var _ hsm.Sessions = (*HSM)(nil)

func sessionSecret(pin, nonce []byte) []byte {
	h := sha256.New()
	h.Write([]byte("pkcshsm-sim ep11 session\x00"))
	h.Write([]byte{byte(len(pin))})
	h.Write(pin)
	h.Write(nonce)
	return h.Sum(nil)
}

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// pinBlob is the pin blob of the session with secret under wrapping key wk.
func pinBlob(wk, secret []byte) []byte {
	field := mac(wk, []byte("field"), secret)
	if field[0] == 0x30 { // never mistaken for a DER public key
		field[0] = 0xcc
	}
	if bytes.Equal(field, make([]byte, 32)) {
		field[0] = 1 // zero means "not bound"
	}
	salt := mac(wk, []byte("salt"), secret)[:16]
	out := make([]byte, 0, hsm.PinBlobSize)
	out = append(out, field...)
	out = append(out, salt...)
	return append(out, mac(wk, []byte("mac"), field, salt)...)
}

func fieldOf(pb []byte) [hsm.SessionIDSize]byte {
	var f [hsm.SessionIDSize]byte
	copy(f[:], pb)
	return f
}

// checkPIN applies the adapter's rules: 8..16 bytes of printable ASCII,
// trailing zero bytes being padding. It returns the PIN without padding.
func checkPIN(q apqn.ID, pin, nonce []byte) ([]byte, error) {
	if len(pin) > hsm.MaxPINBytes {
		return nil, errclass.Newh(errclass.InvalidArgument, "use 8 to 16 characters",
			"APQN %s: a PIN of %d bytes is too long: %w", q, len(pin), hsm.ErrBadPIN)
	}
	p := bytes.TrimRight(pin, "\x00")
	if len(p) < hsm.MinPINBytes {
		return nil, errclass.Newh(errclass.InvalidArgument, "use 8 to 16 characters",
			"APQN %s: a PIN of %d bytes is too short: %w", q, len(p), hsm.ErrBadPIN)
	}
	for _, c := range p {
		if c < 0x20 || c > 0x7e {
			return nil, errclass.Newh(errclass.InvalidArgument, "use printable ASCII characters only",
				"APQN %s: the PIN contains a character the adapter refuses: %w", q, hsm.ErrBadPIN)
		}
	}
	if len(nonce) == 0 || len(nonce) > hsm.MaxNonceBytes {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s: a login nonce has 1..%d bytes, not %d",
			q, hsm.MaxNonceBytes, len(nonce))
	}
	return p, nil
}

func (h *HSM) ep11Queue(ctx context.Context, q apqn.ID) (*queueRT, error) {
	rt, err := h.begin(ctx, q)
	if err != nil {
		return nil, err
	}
	if apqn.Mode(rt.q.Mode) != apqn.ModeEP11 {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s is %s; EP11 sessions need an EP11 APQN: %w",
			q, apqn.Mode(rt.q.Mode), hsm.ErrWrongMode)
	}
	if rt.mk[mkvp.EP11WK].cur == nil {
		return nil, regStateErr(q, mkvp.EP11WK, "have the officer load, commit and set a wrapping key",
			"EP11 login needs a CURRENT wrapping key")
	}
	return rt, nil
}

func limitOf(qs *queueState) int {
	if qs.MaxSessions == 0 {
		return DefaultMaxSessions
	}
	return qs.MaxSessions
}

// Login implements [hsm.Sessions].
func (h *HSM) Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error) {
	p, err := checkPIN(q, pin, nonce)
	if err != nil {
		return nil, err
	}
	if _, err := h.ep11Queue(ctx, q); err != nil {
		return nil, err
	}
	secret := sessionSecret(p, nonce)
	var out []byte
	err = h.mutate(ctx, func(st *stateFile) error {
		qs := st.queue(q)
		cur := qs.Registers[mkvp.EP11WK].Current
		if cur.State.st() != apqn.StateValid {
			return regStateErr(q, mkvp.EP11WK, "have the officer set a wrapping key", "EP11 login needs a CURRENT wrapping key")
		}
		out = pinBlob(cur.Key, secret)
		for i := range qs.Sessions {
			se := &qs.Sessions[i]
			if !bytes.Equal(se.Secret, secret) {
				continue
			}
			if slices.ContainsFunc(se.Issued, func(b []byte) bool { return bytes.Equal(b, out) }) {
				return errNoChange
			}
			se.Issued = append(se.Issued, out)
			if len(se.Issued) > maxIssued {
				se.Issued = se.Issued[1:]
			}
			return nil
		}
		if n := limitOf(qs); len(qs.Sessions) >= n {
			return errclass.Newh(errclass.Unavailable,
				"log out sessions left behind with `pkcshsm ep11-session logout`, or raise the limit with `hsmsim fault --max-sessions N "+q.String()+"`",
				"APQN %s holds %d EP11 sessions, its limit: %w", q, n, hsm.ErrSessionLimit)
		}
		qs.Sessions = append(qs.Sessions, sessionState{Secret: secret, Created: time.Now().UTC().Truncate(time.Second), Issued: [][]byte{out}})
		return nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	h.log.Debug().Str("apqn", q.String()).Msg("EP11 session logged in")
	return out, nil
}

// Logout implements [hsm.Sessions].
func (h *HSM) Logout(ctx context.Context, q apqn.ID, pb []byte) error {
	if len(pb) != hsm.PinBlobSize {
		return errclass.New(errclass.InvalidArgument, "APQN %s: a pin blob has %d bytes, not %d", q, hsm.PinBlobSize, len(pb))
	}
	if _, err := h.ep11Queue(ctx, q); err != nil {
		return err
	}
	err := h.mutate(ctx, func(st *stateFile) error {
		qs := st.queue(q)
		for i, se := range qs.Sessions {
			if slices.ContainsFunc(se.Issued, func(b []byte) bool { return bytes.Equal(b, pb) }) {
				qs.Sessions = slices.Delete(qs.Sessions, i, i+1)
				return nil
			}
		}
		return errclass.New(errclass.NotFound, "APQN %s: the session %s… is not logged in: %w",
			q, hex.EncodeToString(pb[:8]), hsm.ErrNoSession)
	})
	if err == nil {
		h.log.Debug().Str("apqn", q.String()).Msg("EP11 session logged out")
	}
	return err
}

// SessionStatus implements [hsm.Sessions].
func (h *HSM) SessionStatus(ctx context.Context, q apqn.ID) (hsm.SessionStatus, error) {
	rt, err := h.ep11Queue(ctx, q)
	if err != nil {
		return hsm.SessionStatus{}, err
	}
	return hsm.SessionStatus{Max: limitOf(rt.q), Used: len(rt.q.Sessions)}, nil
}

// SessionInfo describes one EP11 session of an APQN, for `hsmsim show`.
type SessionInfo struct {
	// Field is the session field under the CURRENT wrapping key: what
	// keys bound to the session carry in their first 32 bytes.
	Field   [hsm.SessionIDSize]byte
	Created time.Time
}

// SessionList lists the EP11 sessions logged in on q, oldest first.
func (h *HSM) SessionList(q apqn.ID) ([]SessionInfo, hsm.SessionStatus, error) {
	s, err := h.view()
	if err != nil {
		return nil, hsm.SessionStatus{}, err
	}
	rt, ok := s.queues[q]
	if !ok {
		return nil, hsm.SessionStatus{}, noSuchAPQN(q)
	}
	var out []SessionInfo
	var wk []byte
	if k := rt.mk[mkvp.EP11WK]; k != nil && k.cur != nil {
		wk = k.cur.key
	}
	for _, se := range rt.q.Sessions {
		si := SessionInfo{Created: se.Created}
		if wk != nil {
			si.Field = fieldOf(pinBlob(wk, se.Secret))
		}
		out = append(out, si)
	}
	return out, hsm.SessionStatus{Max: limitOf(rt.q), Used: len(rt.q.Sessions)}, nil
}

// sessionFields maps the session fields under the CURRENT wrapping key of
// an EP11 APQN to the sessions' secrets; computed once per snapshot.
func sessionFields(q *queueState, cur *mkKey) map[[hsm.SessionIDSize]byte][]byte {
	if cur == nil || len(q.Sessions) == 0 {
		return nil
	}
	m := make(map[[hsm.SessionIDSize]byte][]byte, len(q.Sessions))
	for _, se := range q.Sessions {
		m[fieldOf(pinBlob(cur.key, se.Secret))] = se.Secret
	}
	return m
}

// checkBound refuses a bound blob whose session is not logged in on rt.
func (rt *queueRT) checkBound(b hsm.Blob) error {
	if !b.Bound() {
		return nil
	}
	if _, ok := rt.sessions[b.Session]; ok {
		return nil
	}
	return errclass.Newh(errclass.PermissionDenied,
		"use the key from the PKCS#11 session (STRICT_MODE) or the token (VHSM_MODE) that made it",
		"APQN %s: the key is bound to EP11 session %s…, which is not logged in here: %w",
		rt.q.ID, hex.EncodeToString(b.Session[:8]), hsm.ErrSessionBound)
}

// bindFor runs the context's binder for a key made on q and returns the
// snapshot to make it with and the session field to bind it to (zero
// without a binder, and on CCA APQNs, which have no sessions).
func (h *HSM) bindFor(ctx context.Context, q apqn.ID) (*queueRT, [hsm.SessionIDSize]byte, error) {
	var field [hsm.SessionIDSize]byte
	rt, err := h.begin(ctx, q)
	if err != nil {
		return nil, field, err
	}
	b := hsm.BinderFrom(ctx)
	if b == nil || apqn.Mode(rt.q.Mode) != apqn.ModeEP11 {
		return rt, field, nil
	}
	cur := rt.mk[mkvp.EP11WK].cur
	if cur == nil {
		return rt, field, nil // sealing reports the missing key
	}
	pb, err := b.PinBlob(ctx, q, cur.pattern)
	if err != nil {
		return nil, field, err
	}
	// The binder may have logged in: look again.
	s, err := h.view()
	if err != nil {
		return nil, field, err
	}
	rt = s.queues[q]
	if len(pb) != hsm.PinBlobSize {
		return nil, field, errclass.New(errclass.InvalidArgument, "APQN %s: a pin blob has %d bytes, not %d: %w",
			q, len(pb), hsm.PinBlobSize, hsm.ErrSessionBound)
	}
	field = fieldOf(pb)
	secret, ok := rt.sessions[field]
	if !ok || rt.mk[mkvp.EP11WK].cur == nil || !hmac.Equal(pinBlob(rt.mk[mkvp.EP11WK].cur.key, secret), pb) {
		return nil, field, errclass.New(errclass.PermissionDenied,
			"APQN %s: the pin blob is not of a session logged in here under the CURRENT wrapping key: %w", q, hsm.ErrSessionBound)
	}
	return rt, field, nil
}
