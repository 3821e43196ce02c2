package tokenlib

import (
	"context"
	"errors"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

// The hooks through which the engine calls the EP11 session modes
// (STRICT_MODE, VHSM_MODE; package ep11sess). t.ep11 is nil for tokens
// without a mode, and then every hook does nothing.

// newEP11Manager makes the session-mode manager of an EP11 token.
func (l *Library) newEP11Manager(t *token, program string) error {
	if !t.conf.ep11Mode.On() || l.noEP11Sessions {
		return nil
	}
	m, err := ep11sess.New(ep11sess.Config{
		Mode: t.conf.ep11Mode, Slot: uint(t.slot), Backend: l.backend, Store: t.db.st, Program: program,
		Logger: t.log.With().Str("component", "ep11-session").Logger(),
		APQNs: func(ctx context.Context) ([]apqn.ID, error) {
			p, err := t.hsmPool(ctx)
			if err != nil {
				return nil, err
			}
			return p.ids, nil
		},
	})
	if err != nil {
		return err
	}
	t.ep11 = m
	return nil
}

// ep11Start starts the EP11 sessions of s if it is a user session. The
// caller holds t.mu.
func (t *token) ep11Start(s *session) error {
	if t.ep11 == nil || t.login != ck.CKU_USER {
		return nil
	}
	return t.ep11.Start(context.Background(), uint(s.handle), t.dataKey)
}

// ep11End ends the EP11 sessions of s. The caller holds t.mu.
func (t *token) ep11End(s *session) {
	if t.ep11 != nil && t.dataKey != nil {
		t.ep11.End(context.Background(), uint(s.handle), t.dataKey)
	}
}

// ep11StartAll starts the EP11 sessions of every session of the Library
// on the token after a USER login; on failure those started are ended. The
// caller holds t.mu.
func (t *token) ep11StartAll() error {
	if t.ep11 == nil {
		return nil
	}
	var started []*session
	for _, s := range t.sessions {
		if err := t.ep11Start(s); err != nil {
			for _, o := range started {
				t.ep11End(o)
			}
			return err
		}
		started = append(started, s)
	}
	return nil
}

// ep11EndAll ends the EP11 sessions of every session (logout). The caller
// holds t.mu.
func (t *token) ep11EndAll() {
	if t.ep11 == nil {
		return
	}
	for _, s := range t.sessions {
		t.ep11End(s)
	}
}

// ep11Bind returns ctx with the binder for a key that session s makes
// with the template's CKA_TOKEN and CKA_PRIVATE.
func (t *token) ep11Bind(ctx context.Context, s *session, tmpl template) context.Context {
	if t.ep11 == nil {
		return ctx
	}
	b := t.ep11.Binder(uint(s.handle), tmpl.boolOr(ck.CKA_TOKEN, false), tmpl.boolOr(ck.CKA_PRIVATE, true))
	if b == nil {
		return ctx
	}
	return hsm.WithBinder(ctx, b)
}

// ep11CheckUse refuses key o to session s when it is bound to an EP11
// session s may not use (hsm.ErrSessionBound, CKR_SESSION_CLOSED).
func (t *token) ep11CheckUse(ctx context.Context, s *session, o *object) error {
	if t.ep11 == nil || !o.isKey() {
		return nil
	}
	return t.ep11.CheckUse(ctx, uint(s.handle), o.attrs[ck.CKA_IBM_OPAQUE], o.isToken(), o.isPrivate())
}

// ep11CheckCopy refuses a copy (C_CopyObject) whose new CKA_TOKEN or
// CKA_PRIVATE would want the key bound to another EP11 session than the
// one its blob is bound to.
func (t *token) ep11CheckCopy(ctx context.Context, s *session, copied template) error {
	if t.ep11 == nil {
		return nil
	}
	err := t.ep11CheckUse(ctx, s, &object{attrs: copied})
	if err == nil {
		return nil
	}
	return wrapRV(ck.CKR_ATTRIBUTE_VALUE_INVALID, err, "the attribute change would bind the key to another EP11 session")
}

// ep11Retry runs fn again after logging this process's EP11 sessions in on
// q, when q refused a bound key because the session is not logged in
// there (the APQN came online after the session started, or was reset).
func (t *token) ep11Retry(ctx context.Context, q apqn.ID, err error, fn func() error) error {
	if t.ep11 == nil || !errors.Is(err, hsm.ErrSessionBound) || !t.ep11.Relogin(ctx, q) {
		return err
	}
	return fn()
}

// isHidden says whether o is an internal object no PKCS#11 function shows
// (the EP11 session and card PIN objects).
func (o *object) isHidden() bool { return ep11sess.IsHidden(o.attrs) }

// ep11Admin gives the session tool its access to the token of session h:
// the USER must be logged in.
func (l *Library) ep11Admin(h SessionHandle) (ep11sess.Admin, error) {
	s, err := l.session(h)
	if err != nil {
		return ep11sess.Admin{}, err
	}
	defer s.mu.Unlock()
	t := s.tok
	if t.conf.typ != TokenEP11 {
		return ep11sess.Admin{}, newErrh(ck.CKR_FUNCTION_NOT_SUPPORTED, errclass.InvalidArgument,
			"pick the slot of an EP11 token (`pkcshsm slots`)", "slot %d is not an EP11 token", t.slot)
	}
	sess, ok := l.backend.(hsm.Sessions)
	if !ok {
		return ep11sess.Admin{}, newErr(ck.CKR_FUNCTION_NOT_SUPPORTED, errclass.FailedPrecondition,
			"slot %d: the HSM backend has no EP11 sessions", t.slot)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.login != ck.CKU_USER {
		return ep11sess.Admin{}, newErrh(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied,
			"log in as USER first", "slot %d: the EP11 sessions and the card PIN are private to the USER", t.slot)
	}
	return ep11sess.Admin{Slot: uint(t.slot), Store: t.db.st, DK: t.dataKey, Backend: sess}, nil
}

// EP11Sessions lists the EP11 sessions stored in the token of session h
// (USER logged in).
func (l *Library) EP11Sessions(ctx context.Context, h SessionHandle) ([]ep11sess.Record, error) {
	a, err := l.ep11Admin(h)
	if err != nil {
		return nil, err
	}
	return a.Records(ctx)
}

// EP11Logout logs out the selected stored EP11 sessions of the token of
// session h (see ep11sess.Admin.Logout).
func (l *Library) EP11Logout(ctx context.Context, h SessionHandle, sel ep11sess.Selector, force bool) ([]ep11sess.LogoutResult, error) {
	a, err := l.ep11Admin(h)
	if err != nil {
		return nil, err
	}
	return a.Logout(ctx, sel, force)
}

// SetCardPIN sets the card PIN (VHSM PIN) of the token of session h.
func (l *Library) SetCardPIN(ctx context.Context, h SessionHandle, pin []byte) error {
	a, err := l.ep11Admin(h)
	if err != nil {
		return err
	}
	if err := a.SetCardPIN(ctx, pin); err != nil {
		return err
	}
	l.log.Info().Uint("slot", uint(a.Slot)).Msg("card PIN (VHSM PIN) set")
	return nil
}

// EP11Mode returns the session modes of slot id's token.
func (l *Library) EP11Mode(id SlotID) (ep11sess.Mode, error) {
	t, err := l.token(id)
	if err != nil {
		return ep11sess.Mode{}, err
	}
	return t.conf.ep11Mode, nil
}
