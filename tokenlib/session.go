package tokenlib

import (
	"sync"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// SessionHandle is a CK_SESSION_HANDLE. Handles are unique within a
// Library and never reused while it is open.
type SessionHandle uint

// SessionInfo is CK_SESSION_INFO.
type SessionInfo struct {
	SlotID      SlotID
	State       ck.State
	Flags       ck.Flags
	DeviceError uint
}

// session is one open session. Its mutex serialises the operations of the
// session (PKCS#11 allows one active operation of each kind per session);
// the token mutex is taken inside it, never the other way round.
type session struct {
	mu     sync.Mutex
	handle SessionHandle
	tok    *token
	rw     bool

	find   *findState
	ops    map[opKind]*opState // active crypto operations by kind
	closed bool
}

// state returns the PKCS#11 session state. The caller holds tok.mu.
func (s *session) stateLocked() ck.State {
	switch s.tok.login {
	case ck.CKU_SO:
		return ck.CKS_RW_SO_FUNCTIONS
	case ck.CKU_USER:
		if s.rw {
			return ck.CKS_RW_USER_FUNCTIONS
		}
		return ck.CKS_RO_USER_FUNCTIONS
	}
	if s.rw {
		return ck.CKS_RW_PUBLIC_SESSION
	}
	return ck.CKS_RO_PUBLIC_SESSION
}

// resetOps ends every active operation and search of the session.
func (s *session) resetOps() {
	s.find = nil
	clear(s.ops)
}

func errSessionHandle(h SessionHandle) error {
	return newErrh(ck.CKR_SESSION_HANDLE_INVALID, errclass.NotFound,
		"open a session first", "session handle %d is not valid", h)
}

// session looks up an open session and locks it. The caller must unlock
// s.mu.
func (l *Library) session(h SessionHandle) (*session, error) {
	l.mu.Lock()
	s, ok := l.sessions[h]
	l.mu.Unlock()
	if !ok {
		return nil, errSessionHandle(h)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errSessionHandle(h)
	}
	return s, nil
}

// OpenSession opens a session on the token of slot. flags must contain
// CKF_SERIAL_SESSION and may contain CKF_RW_SESSION.
func (l *Library) OpenSession(slot SlotID, flags ck.Flags) (SessionHandle, error) {
	t, err := l.token(slot)
	if err != nil {
		return 0, err
	}
	if flags&ck.CKF_SERIAL_SESSION == 0 {
		return 0, newErrh(ck.CKR_SESSION_PARALLEL_NOT_SUPPORTED, errclass.InvalidArgument,
			"pass CKF_SERIAL_SESSION", "parallel sessions are not supported")
	}
	rw := flags&ck.CKF_RW_SESSION != 0
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.login == ck.CKU_SO && !rw {
		return 0, newErrh(ck.CKR_SESSION_READ_WRITE_SO_EXISTS, errclass.FailedPrecondition,
			"open a read/write session, or log the SO out first", "the security officer is logged in; read-only sessions cannot be opened")
	}
	l.mu.Lock()
	l.nextSession++
	h := l.nextSession
	s := &session{handle: h, tok: t, rw: rw, ops: map[opKind]*opState{}}
	l.mu.Unlock()
	if err := t.ep11Start(s); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.sessions[h] = s
	l.mu.Unlock()
	t.sessions[h] = s
	l.log.Debug().Uint("slot", uint(slot)).Uint("session", uint(h)).Bool("rw", rw).Msg("session opened")
	return h, nil
}

// CloseSession closes a session. Its session objects are destroyed; when it
// was the last session of the token, the token is logged out.
func (l *Library) CloseSession(h SessionHandle) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	l.closeLocked(s)
	return nil
}

// closeLocked closes s; the caller holds s.mu.
func (l *Library) closeLocked(s *session) {
	s.closed = true
	s.resetOps()
	l.mu.Lock()
	delete(l.sessions, s.handle)
	l.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ep11End(s)
	delete(t.sessions, s.handle)
	for oh, o := range t.sessObjs {
		if o.session == s.handle {
			delete(t.sessObjs, oh)
		}
	}
	if len(t.sessions) == 0 {
		t.logoutLocked()
	}
}

// CloseAllSessions closes every session of the slot's token.
func (l *Library) CloseAllSessions(slot SlotID) error {
	t, err := l.token(slot)
	if err != nil {
		return err
	}
	t.mu.Lock()
	hs := make([]SessionHandle, 0, len(t.sessions))
	for h := range t.sessions {
		hs = append(hs, h)
	}
	t.mu.Unlock()
	for _, h := range hs {
		if err := l.CloseSession(h); err != nil && RV(err) != ck.CKR_SESSION_HANDLE_INVALID {
			return err
		}
	}
	return nil
}

// GetSessionInfo returns the slot, state and flags of a session.
func (l *Library) GetSessionInfo(h SessionHandle) (SessionInfo, error) {
	s, err := l.session(h)
	if err != nil {
		return SessionInfo{}, err
	}
	defer s.mu.Unlock()
	s.tok.mu.Lock()
	defer s.tok.mu.Unlock()
	info := SessionInfo{SlotID: s.tok.slot, State: s.stateLocked(), Flags: ck.CKF_SERIAL_SESSION}
	if s.rw {
		info.Flags |= ck.CKF_RW_SESSION
	}
	return info, nil
}

// Login logs the user (CKU_USER) or the security officer (CKU_SO) into the
// token. The login applies to every session of this Library on the token.
func (l *Library) Login(h SessionHandle, user ck.UserType, pin []byte) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	switch user {
	case ck.CKU_SO, ck.CKU_USER:
	case ck.CKU_CONTEXT_SPECIFIC:
		return newErrh(ck.CKR_OPERATION_NOT_INITIALIZED, errclass.FailedPrecondition,
			"no key of this token requires CKA_ALWAYS_AUTHENTICATE", "context-specific login without an operation that needs it")
	default:
		return newErrh(ck.CKR_USER_TYPE_INVALID, errclass.InvalidArgument,
			"use CKU_USER or CKU_SO", "user type %d is not valid", user)
	}
	if t.login == user {
		return newErr(ck.CKR_USER_ALREADY_LOGGED_IN, errclass.FailedPrecondition, "the %s is already logged in", userName(user))
	}
	if t.login != noUser {
		return newErrh(ck.CKR_USER_ANOTHER_ALREADY_LOGGED_IN, errclass.FailedPrecondition,
			"log out first", "the %s is logged in; the %s cannot log in at the same time", userName(t.login), userName(user))
	}
	if user == ck.CKU_SO {
		for _, o := range t.sessions {
			if !o.rw {
				return newErrh(ck.CKR_SESSION_READ_ONLY_EXISTS, errclass.FailedPrecondition,
					"close the read-only sessions first", "the security officer cannot log in while read-only sessions are open")
			}
		}
	}
	key, err := t.db.login(user, pin)
	if err != nil {
		l.log.Info().Uint("slot", uint(t.slot)).Str("user", userName(user)).Str("rv", RV(err).String()).Msg("login refused")
		return err
	}
	t.login = user
	t.dataKey = key
	if err := t.ep11StartAll(); err != nil {
		t.login, t.dataKey = noUser, nil
		key.Destroy()
		l.log.Error().Uint("slot", uint(t.slot)).Err(err).Msg("login refused: EP11 sessions could not be logged in")
		return err
	}
	t.invalidateCache()
	l.log.Info().Uint("slot", uint(t.slot)).Str("user", userName(user)).Msg("logged in")
	return nil
}

// Logout logs the token out of every session of this Library. Private
// session objects are destroyed; active operations with private keys end
// (their next call fails with CKR_USER_NOT_LOGGED_IN) and active searches
// no longer return private objects.
func (l *Library) Logout(h SessionHandle) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.login == noUser {
		return newErr(ck.CKR_USER_NOT_LOGGED_IN, errclass.FailedPrecondition, "nobody is logged in")
	}
	t.logoutLocked()
	return nil
}

func userName(u ck.UserType) string {
	switch u {
	case ck.CKU_SO:
		return "security officer"
	case ck.CKU_USER:
		return "user"
	}
	return "nobody"
}
