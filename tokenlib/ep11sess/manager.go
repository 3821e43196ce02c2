package ep11sess

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gofrs/flock"
	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// Vendor constants of the hidden objects (openCryptoki's values).
const (
	CKH_IBM_EP11_SESSION = uint(ck.CKH_IBM_EP11_SESSION)
	CKH_IBM_EP11_VHSMPIN = uint(ck.CKH_IBM_EP11_VHSMPIN)
	// CKA_HIDDEN marks objects the PKCS#11 functions never show.
	CKA_HIDDEN = ck.CKA_HIDDEN
)

// Card PIN limits (XCP_MIN_PINBYTES, XCP_MAX_PINBYTES).
const (
	MinCardPIN = hsm.MinPINBytes
	MaxCardPIN = hsm.MaxPINBytes
)

// strictPIN is the PIN of a strict session without VHSM_MODE.
var strictPIN = []byte("        ")

// Mode is the session modes of a token.
type Mode struct{ Strict, VHSM bool }

// On says whether any mode is on.
func (m Mode) On() bool { return m.Strict || m.VHSM }

func (m Mode) String() string {
	switch {
	case m.Strict && m.VHSM:
		return "STRICT_MODE+VHSM_MODE"
	case m.Strict:
		return "STRICT_MODE"
	case m.VHSM:
		return "VHSM_MODE"
	}
	return "none"
}

// Config configures a Manager.
type Config struct {
	Mode    Mode
	Slot    uint
	Backend hsm.Backend // must implement hsm.Sessions
	// APQNs returns the token's usable APQNs.
	APQNs   func(ctx context.Context) ([]apqn.ID, error)
	Store   *store.Store
	Program string
	Logger  zerolog.Logger
}

// Manager runs the session modes of one token in one process. It is safe
// for concurrent use.
type Manager struct {
	cfg  Config
	sess hsm.Sessions
	lock string
	pid  int

	mu       sync.Mutex
	sessions map[uint]*session // by PKCS#11 session handle
	vhsm     *login            // the slot's VHSM session, while any session uses it
}

// session is the EP11 side of one PKCS#11 user session.
type session struct {
	handle uint
	strict *login // STRICT_MODE
	rec    Record
}

// New makes a Manager. It fails when the backend has no EP11 sessions.
func New(cfg Config) (*Manager, error) {
	s, ok := cfg.Backend.(hsm.Sessions)
	if !ok {
		return nil, errclass.New(errclass.FailedPrecondition,
			"slot %d: %s needs EP11 sessions, which the HSM backend does not have", cfg.Slot, cfg.Mode)
	}
	return &Manager{cfg: cfg, sess: s, pid: os.Getpid(), sessions: map[uint]*session{},
		lock: filepath.Join(filepath.Dir(cfg.Store.Path()), "ep11-sessions.lock")}, nil
}

// Mode returns the token's modes.
func (m *Manager) Mode() Mode { return m.cfg.Mode }

// login is one EP11 session as this process knows it: the login inputs and
// the pin blobs each APQN returned, by wrapping key.
type login struct {
	m     *Manager
	what  string // "strict session" / "VHSM session", for messages
	pin   []byte
	nonce []byte

	mu     sync.Mutex
	blobs  map[apqn.ID]map[mkvp.Pattern][]byte
	byWK   map[mkvp.Pattern][]byte // first pin blob seen per wrapping key
	fields map[[hsm.SessionIDSize]byte]bool
}

func (m *Manager) newLogin(what string, pin, nonce []byte) *login {
	return &login{m: m, what: what, pin: pin, nonce: nonce, blobs: map[apqn.ID]map[mkvp.Pattern][]byte{},
		byWK: map[mkvp.Pattern][]byte{}, fields: map[[hsm.SessionIDSize]byte]bool{}}
}

func (l *login) destroy() {
	clear(l.pin)
	clear(l.nonce)
}

// PinBlob implements hsm.Binder: the pin blob of q under wk, logging in on
// q if this process has not done so under wk (an APQN that came online
// later, or a new wrapping key).
func (l *login) PinBlob(ctx context.Context, q apqn.ID, wk mkvp.Pattern) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pb := l.blobs[q][wk]; pb != nil {
		return pb, nil
	}
	return l.loginLocked(ctx, q, wk)
}

func (l *login) loginLocked(ctx context.Context, q apqn.ID, wk mkvp.Pattern) ([]byte, error) {
	pb, err := l.m.sess.Login(ctx, q, l.pin, l.nonce)
	if err != nil {
		return nil, err
	}
	if first, ok := l.byWK[wk]; ok && !bytes.Equal(first[:hsm.SessionIDSize], pb[:hsm.SessionIDSize]) {
		// The adapter answers under its CURRENT wrapping key, which the
		// officer may have activated ("set") after the caller looked at
		// q: then the pin blob is the session's under the new key, not a
		// broken one. File it under the key q has now; logging the
		// session out here would break every key bound to it on q.
		if now, ok := l.currentWK(ctx, q); ok && now != wk {
			l.m.cfg.Logger.Info().Str("apqn", q.String()).Str("session", l.what).Str("wk", now.String()).
				Msg("EP11 session logged in under the wrapping key the APQN activated meanwhile")
			wk = now
		}
	}
	if first, ok := l.byWK[wk]; ok && !bytes.Equal(first[:hsm.SessionIDSize], pb[:hsm.SessionIDSize]) {
		l.m.cfg.Logger.Error().Str("apqn", q.String()).Str("session", l.what).
			Msg("pin blob of the adapter is not equal to other adapters for the same session")
		_ = l.m.sess.Logout(ctx, q, pb)
		return nil, ck.WithRV(ck.CKR_DEVICE_ERROR, errclass.Newh(errclass.FailedPrecondition,
			"check the adapters of the token; take the APQN out of the token's APQN_ALLOWLIST until it is fixed",
			"slot %d: APQN %s returned another pin blob for the %s than the other APQNs with wrapping key %s",
			l.m.cfg.Slot, q, l.what, wk))
	}
	if _, ok := l.byWK[wk]; !ok {
		l.byWK[wk] = pb
	}
	if l.blobs[q] == nil {
		l.blobs[q] = map[mkvp.Pattern][]byte{}
	}
	l.blobs[q][wk] = pb
	l.fields[[hsm.SessionIDSize]byte(pb)] = true
	return pb, nil
}

// currentWK returns the pattern of q's CURRENT wrapping key now.
func (l *login) currentWK(ctx context.Context, q apqn.ID) (mkvp.Pattern, bool) {
	info, err := l.m.cfg.Backend.Queue(ctx, q)
	if err != nil {
		return mkvp.Pattern{}, false
	}
	return info.MK[mkvp.EP11WK].Current.Pattern, true
}

// knows says whether a session field is one of this session's.
func (l *login) knows(f [hsm.SessionIDSize]byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fields[f]
}

// loginAll logs in on every APQN the backend has online. Offline APQNs are
// skipped (they are logged in at first use); a full adapter or a refused
// PIN fails the whole login. It returns the APQNs logged in.
func (l *login) loginAll(ctx context.Context, qs []apqn.ID) ([]apqn.ID, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var done []apqn.ID
	var errs []error
	for _, q := range qs {
		info, err := l.m.cfg.Backend.Queue(ctx, q)
		if err == nil && !info.Online {
			err = errclass.New(errclass.Unavailable, "APQN %s is offline", q)
		}
		if err == nil {
			wk := info.MK[mkvp.EP11WK].Current.Pattern
			_, err = l.loginLocked(ctx, q, wk)
		}
		switch {
		case err == nil:
			done = append(done, q)
		case errors.Is(err, hsm.ErrSessionLimit), errors.Is(err, hsm.ErrBadPIN), errclass.Of(err) != errclass.Unavailable:
			l.logoutLocked(ctx, done)
			return nil, fmt.Errorf("slot %d: log in the %s on APQN %s: %w", l.m.cfg.Slot, l.what, q, err)
		default:
			l.m.cfg.Logger.Warn().Str("apqn", q.String()).Err(err).Msg("EP11 session login skipped; done at first use")
			errs = append(errs, err)
		}
	}
	if len(done) == 0 {
		return nil, ck.WithRV(ck.CKR_DEVICE_ERROR, errclass.Newh(errclass.Unavailable,
			"bring an APQN of the token online", "slot %d: no APQN could log in the %s (no pin blob available): %w",
			l.m.cfg.Slot, l.what, errors.Join(errs...)))
	}
	return done, nil
}

// logoutLocked logs out on qs and returns the APQNs where that failed
// (already logged out counts as done).
func (l *login) logoutLocked(ctx context.Context, qs []apqn.ID) []apqn.ID {
	var left []apqn.ID
	for _, q := range qs {
		if err := logoutAny(ctx, l.m.sess, q, l.anyBlob(q)); err != nil {
			l.m.cfg.Logger.Warn().Str("apqn", q.String()).Err(err).Str("session", l.what).Msg("EP11 session logout failed")
			left = append(left, q)
		}
	}
	return left
}

func (l *login) anyBlob(q apqn.ID) [][]byte {
	var out [][]byte
	for _, pb := range l.blobs[q] {
		out = append(out, pb)
	}
	for _, pb := range l.byWK {
		out = append(out, pb)
	}
	return out
}

// logoutAny logs out with the first of blobs q knows. No session is not an
// error.
func logoutAny(ctx context.Context, s hsm.Sessions, q apqn.ID, blobs [][]byte) error {
	var err error
	for _, pb := range blobs {
		err = s.Logout(ctx, q, pb)
		if err == nil || errors.Is(err, hsm.ErrNoSession) {
			return nil
		}
		if !errors.Is(err, hsm.ErrNoSession) && errclass.Of(err) == errclass.Unavailable {
			return err
		}
	}
	if err == nil {
		return nil
	}
	return err
}

// lockTokenSessions takes the token's cross-process session lock.
func (m *Manager) lockTokenSessions() (func(), error) {
	lk := flock.New(m.lock)
	if err := lk.Lock(); err != nil {
		return nil, errclass.New(errclass.Unavailable, "slot %d: lock %s: %w", m.cfg.Slot, m.lock, err)
	}
	return func() { lk.Unlock() }, nil
}

// ulong is a CK_ULONG value as token databases store it: little-endian on
// every host (see tokenlib's byteorder.go; these hidden objects are read
// back only here).
func ulong(v uint) []byte {
	return binary.LittleEndian.AppendUint64(nil, uint64(v))
}

var trueVal = []byte{1}

func hiddenObject(feature uint, id, value []byte) *store.Object {
	return &store.Object{Class: uint(ck.CKO_HW_FEATURE), Private: true, Attrs: map[uint32][]byte{
		uint32(ck.CKA_CLASS):           ulong(uint(ck.CKO_HW_FEATURE)),
		uint32(ck.CKA_HW_FEATURE_TYPE): ulong(feature),
		uint32(ck.CKA_TOKEN):           trueVal,
		uint32(ck.CKA_PRIVATE):         trueVal,
		uint32(CKA_HIDDEN):             trueVal,
		uint32(ck.CKA_ID):              id,
		uint32(ck.CKA_VALUE):           value,
	}}
}

// hidden lists the hidden objects of one feature type.
func hidden(ctx context.Context, st *store.Store, dk *store.DataKey, feature uint) ([]*store.Object, error) {
	objs, err := st.List(ctx, dk, store.Filter{Classes: []uint{uint(ck.CKO_HW_FEATURE)}})
	if err != nil && objs == nil {
		return nil, err
	}
	var out []*store.Object
	for _, o := range objs {
		if bytes.Equal(o.Attrs[uint32(ck.CKA_HW_FEATURE_TYPE)], ulong(feature)) && len(o.Attrs[uint32(CKA_HIDDEN)]) == 1 {
			out = append(out, o)
		}
	}
	return out, nil
}

// IsHidden says whether an object with these attributes is one the
// PKCS#11 functions must not show.
func IsHidden(attrs map[ck.Attribute][]byte) bool {
	v := attrs[CKA_HIDDEN]
	return len(v) == 1 && v[0] != 0
}

// CheckCardPIN applies the adapter's rules to a card PIN: 8 to 16
// printable ASCII characters.
func CheckCardPIN(pin []byte) error {
	switch {
	case len(pin) < MinCardPIN:
		return errclass.Newh(errclass.InvalidArgument, "use 8 to 16 characters",
			"the card PIN has %d characters; it must have at least %d", len(pin), MinCardPIN)
	case len(pin) > MaxCardPIN:
		return errclass.Newh(errclass.InvalidArgument, "use 8 to 16 characters",
			"the card PIN has %d characters; it may have at most %d", len(pin), MaxCardPIN)
	}
	for _, c := range pin {
		if c < 0x20 || c > 0x7e {
			return errclass.Newh(errclass.InvalidArgument, "use printable ASCII characters (letters, digits, punctuation, blanks)",
				"the card PIN contains a character the adapter refuses")
		}
	}
	return nil
}

// cardPIN reads the card PIN object into a 16-byte zero-padded buffer.
func (m *Manager) cardPIN(ctx context.Context, dk *store.DataKey) ([]byte, error) {
	objs, err := hidden(ctx, m.cfg.Store, dk, CKH_IBM_EP11_VHSMPIN)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		m.cfg.Logger.Error().Msg("a VHSM PIN (card PIN) is required for VHSM_MODE")
		return nil, ck.WithRV(ck.CKR_DEVICE_ERROR, errclass.Newh(errclass.FailedPrecondition,
			fmt.Sprintf("set it with `pkcshsm ep11-session vhsmpin --slot %d`", m.cfg.Slot),
			"slot %d: VHSM_MODE is on, but no card PIN (VHSM PIN) is set", m.cfg.Slot))
	}
	v := objs[0].Attrs[uint32(ck.CKA_VALUE)]
	if err := CheckCardPIN(v); err != nil {
		return nil, errclass.New(errclass.DataLoss, "slot %d: the stored card PIN is invalid: %w", m.cfg.Slot, err)
	}
	pin := make([]byte, MaxCardPIN)
	copy(pin, v)
	clear(v)
	return pin, nil
}

func vhsmNonce(slot uint) []byte {
	n := binary.BigEndian.AppendUint32(nil, uint32(slot))
	return append(n, "VHSM-session"...)
}

func (m *Manager) newSessionID(handle uint) [32]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%d\x00%d\x00%d\x00", handle, m.cfg.Slot, time.Now().UnixNano(), m.pid)
	r := make([]byte, 32)
	_, _ = rand.Read(r)
	h.Write(r)
	return [32]byte(h.Sum(nil))
}

// Start logs in the EP11 sessions of PKCS#11 user session handle and
// stores its record. dk is the USER's data key.
func (m *Manager) Start(ctx context.Context, handle uint, dk *store.DataKey) (err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sessions[handle]; ok {
		return nil
	}
	qs, err := m.cfg.APQNs(ctx)
	if err != nil {
		return err
	}
	unlock, err := m.lockTokenSessions()
	if err != nil {
		return err
	}
	defer unlock()
	m.reapDeadLocked(ctx, dk)
	s := &session{handle: handle, rec: Record{PID: m.pid, Created: time.Now().UTC().Truncate(time.Second),
		Slot: uint32(m.cfg.Slot), Program: m.cfg.Program}}
	var pin []byte
	if m.cfg.Mode.VHSM {
		if pin, err = m.cardPIN(ctx, dk); err != nil {
			return err
		}
		defer clear(pin)
	}
	var logged []apqn.ID
	startedVHSM := false
	defer func() {
		if err == nil {
			return
		}
		if s.strict != nil {
			s.strict.mu.Lock()
			s.strict.logoutLocked(ctx, logged)
			s.strict.mu.Unlock()
			s.strict.destroy()
		}
		if startedVHSM {
			m.endVHSMLocked(ctx, dk, 0)
		}
	}()
	if m.cfg.Mode.VHSM {
		if m.vhsm == nil {
			m.vhsm = m.newLogin("VHSM session", bytes.Clone(pin), vhsmNonce(m.cfg.Slot))
			startedVHSM = true
		}
		done, err := m.vhsm.loginAll(ctx, qs)
		if err != nil {
			return err
		}
		logged = done
		s.rec.VHSM = bytes.Clone(m.vhsm.byWKAny())
	}
	if m.cfg.Mode.Strict {
		id := m.newSessionID(handle)
		copy(s.rec.ID[:], id[:PublicIDSize])
		p := bytes.Clone(strictPIN)
		if m.cfg.Mode.VHSM {
			p = bytes.Clone(pin)
		}
		s.strict = m.newLogin("strict session", p, id[:])
		done, err := s.strict.loginAll(ctx, qs)
		if err != nil {
			return err
		}
		logged = done
		s.rec.Strict = bytes.Clone(s.strict.byWKAny())
	} else {
		_, _ = rand.Read(s.rec.ID[:])
	}
	s.rec.APQNs = logged
	o := hiddenObject(CKH_IBM_EP11_SESSION, s.rec.ID[:], s.rec.Encode())
	if err := m.cfg.Store.Create(ctx, dk, o); err != nil {
		return fmt.Errorf("slot %d: store the EP11 session object: %w", m.cfg.Slot, err)
	}
	s.rec.Handle = o.Handle
	m.sessions[handle] = s
	m.cfg.Logger.Info().Uint("session", handle).Str("ep11_session", s.rec.ID.String()).Str("mode", m.cfg.Mode.String()).
		Int("apqns", len(logged)).Msg("EP11 session logged in")
	return nil
}

// reapDeadLocked logs out the stored EP11 sessions of processes that no
// longer exist (killed, or exited without C_Finalize), as `pkcshsm
// ep11-session logout --dead` does, so the adapters' session tables do not
// fill up with the dead. It runs whenever a process starts an EP11 session
// of the token (every USER login of a STRICT_MODE or VHSM_MODE token,
// including the master key change tool's), under the token's session lock.
// A process that still exists (kill(pid, 0) succeeds or is refused) keeps
// its sessions; so all processes sharing a token must share a PID
// namespace, which sharing the token's files implies anyway.
func (m *Manager) reapDeadLocked(ctx context.Context, dk *store.DataKey) {
	a := Admin{Slot: m.cfg.Slot, Store: m.cfg.Store, DK: dk, Backend: m.sess}
	res, err := a.logoutLocked(ctx, Selector{Dead: true}, false)
	if err != nil {
		m.cfg.Logger.Warn().Err(err).Msg("cannot look for EP11 sessions of ended processes")
		return
	}
	for _, r := range res {
		if r.Record.PID == 0 {
			continue // unreadable: only the operator removes it (--id --force)
		}
		ev := m.cfg.Logger.Info()
		msg := "EP11 session of an ended process logged out"
		if !r.Removed {
			ev, msg = m.cfg.Logger.Warn().Err(r.Err), "EP11 session of an ended process not logged out everywhere"
		}
		ev.Str("ep11_session", r.Record.ID.String()).Int("dead_pid", r.Record.PID).Str("program", r.Record.Program).Msg(msg)
	}
}

func (l *login) byWKAny() []byte {
	for _, pb := range l.byWK {
		return pb
	}
	return nil
}

// End logs out the EP11 sessions of PKCS#11 session handle and removes
// its record; what could not be logged out stays in the record for the
// session tool. Sessions Start did not start are ignored.
func (m *Manager) End(ctx context.Context, handle uint, dk *store.DataKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[handle]
	if !ok {
		return
	}
	delete(m.sessions, handle)
	unlock, err := m.lockTokenSessions()
	if err != nil {
		m.cfg.Logger.Error().Err(err).Msg("EP11 session not logged out")
		return
	}
	defer unlock()
	var left []apqn.ID
	if s.strict != nil {
		s.strict.mu.Lock()
		qs := slices.Collect(mapsKeys(s.strict.blobs))
		left = s.strict.logoutLocked(ctx, qs)
		s.strict.mu.Unlock()
		s.strict.destroy()
	}
	if m.cfg.Mode.VHSM && m.vhsm != nil {
		left = append(left, m.endVHSMLocked(ctx, dk, s.rec.Handle)...)
	}
	if len(left) == 0 {
		if err := m.cfg.Store.Delete(ctx, s.rec.Handle); err != nil && errclass.Of(err) != errclass.NotFound {
			m.cfg.Logger.Error().Err(err).Msg("cannot remove the EP11 session object")
		}
	} else {
		slices.SortFunc(left, apqn.ID.Compare)
		s.rec.APQNs = slices.Compact(left)
		m.rewrite(ctx, dk, s.rec)
		m.cfg.Logger.Warn().Str("ep11_session", s.rec.ID.String()).Int("apqns", len(left)).
			Msg("EP11 session not logged out everywhere; clean up with `pkcshsm ep11-session logout`")
	}
	m.cfg.Logger.Info().Uint("session", handle).Str("ep11_session", s.rec.ID.String()).Msg("EP11 session logged out")
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// endVHSMLocked logs the VHSM session out when no record other than skip
// (of any process) uses it any more; the caller holds the token lock.
func (m *Manager) endVHSMLocked(ctx context.Context, dk *store.DataKey, skip uint64) []apqn.ID {
	others := false
	if recs, err := m.records(ctx, dk); err == nil {
		for _, r := range recs {
			others = others || (r.VHSM != nil && r.Handle != skip)
		}
	} else {
		others = true // keep it: better a session too many than keys that stop working
	}
	l := m.vhsm
	if len(m.sessions) > 0 {
		return nil // this process still uses it
	}
	m.vhsm = nil
	defer l.destroy()
	if others {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logoutLocked(ctx, slices.Collect(mapsKeys(l.blobs)))
}

// rewrite stores a changed record.
func (m *Manager) rewrite(ctx context.Context, dk *store.DataKey, r Record) {
	o, err := m.cfg.Store.Get(ctx, dk, r.Handle)
	if err == nil {
		o.Attrs[uint32(ck.CKA_VALUE)] = r.Encode()
		err = m.cfg.Store.Update(ctx, dk, o)
	}
	if err != nil {
		m.cfg.Logger.Error().Err(err).Msg("cannot update the EP11 session object")
	}
}

// records reads every stored session record of the token.
func (m *Manager) records(ctx context.Context, dk *store.DataKey) ([]Record, error) {
	return Records(ctx, m.cfg.Store, dk)
}

// Records reads every stored session record of a token. Unreadable
// records are returned with PID 0 and the error.
func Records(ctx context.Context, st *store.Store, dk *store.DataKey) ([]Record, error) {
	objs, err := hidden(ctx, st, dk, CKH_IBM_EP11_SESSION)
	if err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(objs))
	var errs []error
	for _, o := range objs {
		r, err := DecodeRecord(o.Attrs[uint32(ck.CKA_VALUE)])
		if err != nil {
			errs = append(errs, fmt.Errorf("object %d: %w", o.Handle, err))
			r = Record{}
			copy(r.ID[:], o.Attrs[uint32(ck.CKA_ID)])
		}
		r.Handle = o.Handle
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Binder returns the binder for a key made in PKCS#11 session handle with
// the given CKA_TOKEN and CKA_PRIVATE, or nil for an unbound key.
func (m *Manager) Binder(handle uint, tokenObj, private bool) hsm.Binder {
	l := m.loginFor(handle, tokenObj, private)
	if l == nil {
		return nil
	}
	return l
}

func (m *Manager) loginFor(handle uint, tokenObj, private bool) *login {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[handle]
	switch {
	case s == nil || !private:
		return nil
	case m.cfg.Mode.Strict && !tokenObj:
		return s.strict
	case m.cfg.Mode.VHSM:
		return m.vhsm
	}
	return nil
}

// CheckUse refuses a key bound to an EP11 session that PKCS#11 session
// handle may not use: another PKCS#11 session's (STRICT_MODE), another
// token's or card PIN's (VHSM_MODE), or any for sessions and objects the
// modes do not bind. Unbound keys pass.
func (m *Manager) CheckUse(ctx context.Context, handle uint, blob []byte, tokenObj, private bool) error {
	info, err := hsm.Inspect(blob)
	if err != nil || !info.Bound() {
		return nil // unbound; a malformed blob is the backend's to report
	}
	l := m.loginFor(handle, tokenObj, private)
	if l != nil && l.knows(info.Session) {
		return nil
	}
	if l != nil {
		// A master key change gives the session a new field on APQNs
		// with the new wrapping key: learn it, then look again.
		if qs, err := m.cfg.APQNs(ctx); err == nil {
			if _, err := l.loginAll(ctx, qs); err == nil && l.knows(info.Session) {
				return nil
			}
		}
	}
	what := "this session uses no EP11 session for it"
	if l != nil {
		what = "it belongs to another PKCS#11 session or another token (card PIN)"
	}
	return ck.WithRV(ck.CKR_SESSION_CLOSED, errclass.Newh(errclass.PermissionDenied,
		"use the key from the PKCS#11 session (STRICT_MODE) or the token (VHSM_MODE) that made it",
		"slot %d: the key is bound to EP11 session %x…, but %s: %w", m.cfg.Slot, info.Session[:8], what, hsm.ErrSessionBound))
}

// Relogin logs every EP11 session of this process in on q again (the APQN
// came online, or was reset). It says whether any login succeeded.
func (m *Manager) Relogin(ctx context.Context, q apqn.ID) bool {
	m.mu.Lock()
	ls := []*login{}
	if m.vhsm != nil {
		ls = append(ls, m.vhsm)
	}
	for _, s := range m.sessions {
		if s.strict != nil {
			ls = append(ls, s.strict)
		}
	}
	m.mu.Unlock()
	ok := false
	for _, l := range ls {
		if _, err := l.loginAll(ctx, []apqn.ID{q}); err == nil {
			ok = true
		}
	}
	return ok
}

// Active says whether PKCS#11 session handle has EP11 sessions.
func (m *Manager) Active(handle uint) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[handle] != nil
}
