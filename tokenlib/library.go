package tokenlib

import (
	"context"
	"errors"
	"fmt"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/agent"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/objcache"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// SlotID is a CK_SLOT_ID, the slot number of pkcshsm.conf.
type SlotID uint

// TokenType is the kind of secure-key token in a slot.
type TokenType uint8

// Token types.
const (
	TokenCCA TokenType = iota + 1
	TokenEP11
)

func (t TokenType) String() string {
	switch t {
	case TokenCCA:
		return "cca"
	case TokenEP11:
		return "ep11"
	}
	return "unknown"
}

// Options configure [Open].
type Options struct {
	// Layout locates the token stores and, when ConfigPath is empty, the
	// configuration (Layout.GlobalConf()).
	Layout paths.Layout
	// ConfigPath is the global configuration file (pkcshsm.conf).
	ConfigPath string
	// Backend is the HSM. When nil, the backend named by the configuration
	// is opened (hsm-backend = simulator).
	Backend hsm.Backend
	// Logger receives diagnostics; never PINs, key material or blobs. The
	// zero value logs nothing.
	Logger zerolog.Logger
	// Program names this process in the daemon's accounts (default: the
	// executable's base name).
	Program string
	// NoAgent keeps the Library from connecting to pkcshsmd. Short-lived
	// tools set it; they still follow master key change operations from
	// the operation files at Open.
	NoAgent bool
	// NoEP11Sessions keeps the EP11 session modes (STRICT_MODE,
	// VHSM_MODE) from logging in EP11 sessions: the session tool sets it,
	// so it can set a card PIN and clean up without sessions of its own.
	NoEP11Sessions bool

	// kdf overrides the store's PIN derivation (tests use a cheap one).
	kdf store.KDF
}

// Library is one application's view of the tokens: the PKCS#11 library
// state between C_Initialize and C_Finalize. Logins and session objects
// belong to the Library; token objects are shared with every other process
// through the token stores. A Library is safe for concurrent use.
type Library struct {
	log     zerolog.Logger
	layout  paths.Layout
	kdf     store.KDF
	backend hsm.Backend
	closer  func() error // closes a backend the Library opened itself

	slots map[SlotID]*token
	order []SlotID

	// mkMu serializes master key change reconciles; opsDir is the
	// operation directory (nil until it exists), agent the runtime agent.
	mkMu    sync.Mutex
	mkFresh freshness // when the operations were last read (mkchange_engine.go)
	opsDir  *state.Dir
	agent   *agent.Agent

	noEP11Sessions bool
	program        string

	mu          sync.Mutex // guards sessions and nextSession
	sessions    map[SessionHandle]*session
	nextSession SessionHandle
}

// Open reads the configuration, opens every configured token's store and
// checks each token's APQNs and master key patterns. A token whose HSM
// check fails stays listed; its crypto functions fail with
// CKR_DEVICE_ERROR and the reason, and the check is retried on use.
func Open(opts Options) (*Library, error) {
	if opts.Layout.Root == "" {
		opts.Layout = paths.FromEnv()
	}
	cfgPath := opts.ConfigPath
	if cfgPath == "" {
		cfgPath = opts.Layout.GlobalConf()
	}
	gc, err := loadConfig(cfgPath, opts.Layout)
	if err != nil {
		return nil, err
	}
	l := &Library{
		log:      opts.Logger,
		layout:   opts.Layout,
		kdf:      opts.kdf,
		backend:  opts.Backend,
		slots:    map[SlotID]*token{},
		sessions: map[SessionHandle]*session{},

		noEP11Sessions: opts.NoEP11Sessions,
		program:        opts.Program,
	}
	if l.backend == nil {
		b, closer, err := openBackend(gc, opts.Layout, opts.Logger)
		if err != nil {
			return nil, err
		}
		l.backend, l.closer = b, closer
	}
	for _, sc := range gc.slots {
		t, err := l.openToken(sc)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.slots[sc.id] = t
		l.order = append(l.order, sc.id)
	}
	slices.Sort(l.order)
	// Operations in progress decide which patterns the tokens accept, so
	// they are read before the tokens check their adapters.
	ctx := context.Background()
	if _, err := l.reconcile(ctx); err != nil {
		l.log.Error().Err(err).Msg("cannot read the master key change operations")
	}
	for _, id := range l.order {
		t := l.slots[id]
		if err := t.startHSM(ctx); err != nil {
			t.log.Error().Err(err).Msg("token HSM check failed; crypto functions will fail until it passes")
		}
	}
	if !opts.NoAgent && !gc.disableEvents {
		a, err := agent.New(agent.Options{AppSocket: l.layout.AppSocket(), OpsDir: l.layout.MKChangeDir(),
			Program: opts.Program, Logger: l.log, Handler: agentHandler{l}}) // the agent names its component itself
		if err == nil {
			err = a.Start(ctx)
		}
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("failed to start the runtime agent: %w", err)
		}
		l.agent = a
	}
	return l, nil
}

// closeWait bounds how long Close waits for a master key change reconcile
// in progress (the runtime agent has its own bound of the same length).
var closeWait = 5 * time.Second

// Close closes every session and token store (C_Finalize). It never waits
// longer than closeWait for the runtime agent or a reconcile in progress
// (stuck, say, on a file that blocks): those are left behind and logged,
// so an application's shutdown is bounded.
func (l *Library) Close() error {
	if l.agent != nil {
		if err := l.agent.Close(); err != nil {
			l.log.Error().Err(err).Msg("closing the runtime agent")
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.mkMu.Lock()
		defer l.mkMu.Unlock()
		if l.opsDir != nil {
			l.opsDir.Close()
			l.opsDir = nil
		}
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
		l.log.Error().Dur("waited", closeWait).
			Msg("a master key change reconcile is stuck; closing without waiting for it")
	}
	l.mu.Lock()
	ss := make([]*session, 0, len(l.sessions))
	for _, s := range l.sessions {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	for _, s := range ss {
		s.mu.Lock()
		if !s.closed {
			l.closeLocked(s)
		}
		s.mu.Unlock()
	}
	var errs []error
	for _, t := range l.slots {
		errs = append(errs, t.db.st.Close())
	}
	if l.closer != nil {
		errs = append(errs, l.closer())
	}
	return errors.Join(errs...)
}

func (l *Library) openToken(sc slotConf) (*token, error) {
	minPIN, maxPIN := 4, 128
	if sc.typ == TokenEP11 {
		minPIN, maxPIN = 4, 8
	}
	st, err := store.Open(l.layout.TokenDir(sc.tokname), store.Options{
		Logger: l.log.With().Str("token", sc.tokname).Logger(), MinPINLen: minPIN, MaxPINLen: maxPIN,
		KDF: l.kdf, Summary: mkchange.Summarize, SummaryAttrs: mkchange.SummaryAttrs,
	})
	if err != nil {
		return nil, fmt.Errorf("slot %d (token %s): %w", sc.id, sc.tokname, err)
	}
	t := &token{
		lib: l, slot: sc.id, conf: sc, db: &tokenDB{st: st},
		log:      l.log.With().Uint("slot", uint(sc.id)).Str("token", sc.tokname).Logger(),
		mechs:    mechanismsFor(sc.typ),
		login:    noUser,
		minPIN:   minPIN,
		maxPIN:   maxPIN,
		sessions: map[SessionHandle]*session{},
		sessObjs: map[ObjectHandle]*object{},
		cache:    objcache.New[*object](0),
		mkOps:    map[state.ID]*state.Op{},
	}
	for _, ig := range sc.ignored {
		t.log.Warn().Str("setting", ig).Msg("token configuration setting is not supported and has no effect")
	}
	if err := l.newEP11Manager(t, l.program); err != nil {
		st.Close()
		return nil, err
	}
	return t, nil
}

func (l *Library) token(id SlotID) (*token, error) {
	t, ok := l.slots[id]
	if !ok {
		return nil, newErrh(ck.CKR_SLOT_ID_INVALID, errclass.NotFound,
			"list the slots with `pkcshsm slots`", "slot %d is not configured", id)
	}
	return t, nil
}

// GetSlotList returns the configured slots in ascending order. Every slot
// has a token present.
func (l *Library) GetSlotList() []SlotID { return slices.Clone(l.order) }

// Version is CK_VERSION.
type Version struct{ Major, Minor uint8 }

// SlotInfo is CK_SLOT_INFO; strings are blank padded to their C sizes.
type SlotInfo struct {
	SlotDescription string // 64
	ManufacturerID  string // 32
	Flags           ck.Flags
	HardwareVersion Version
	FirmwareVersion Version
}

// TokenInfo is CK_TOKEN_INFO; strings are blank padded to their C sizes.
// SOPINFailures and UserPINFailures are not part of CK_TOKEN_INFO: they
// count consecutive wrong PINs, for the admin CLI.
type TokenInfo struct {
	Label              string // 32
	ManufacturerID     string // 32
	Model              string // 16
	SerialNumber       string // 16
	Flags              ck.Flags
	MaxSessionCount    uint
	SessionCount       uint
	MaxRwSessionCount  uint
	RwSessionCount     uint
	MaxPinLen          uint
	MinPinLen          uint
	TotalPublicMemory  uint
	FreePublicMemory   uint
	TotalPrivateMemory uint
	FreePrivateMemory  uint
	HardwareVersion    Version
	FirmwareVersion    Version
	UTCTime            string // 16

	SOPINFailures, UserPINFailures, MaxPINAttempts int
	TokenType                                      TokenType
	TokenName                                      string
}

// pad blank-pads (or truncates) s to n bytes, as CK_*_INFO strings are.
func pad(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s + strings.Repeat(" ", n-len(s))
}

const manufacturer = "pkcshsm"

// GetSlotInfo describes a slot.
func (l *Library) GetSlotInfo(id SlotID) (SlotInfo, error) {
	t, err := l.token(id)
	if err != nil {
		return SlotInfo{}, err
	}
	desc := t.conf.description
	if desc == "" {
		desc = fmt.Sprintf("pkcshsm %s token %s", strings.ToUpper(t.conf.typ.String()), t.conf.tokname)
	}
	return SlotInfo{
		SlotDescription: pad(desc, 64),
		ManufacturerID:  pad(manufacturer, 32),
		Flags:           ck.CKF_TOKEN_PRESENT | ck.CKF_HW_SLOT,
		HardwareVersion: Version{1, 0},
		FirmwareVersion: Version{1, 0},
	}, nil
}

// GetTokenInfo describes the token in a slot. The PIN flags and counters
// come from the store, so they reflect every process's logins.
func (l *Library) GetTokenInfo(id SlotID) (TokenInfo, error) {
	t, err := l.token(id)
	if err != nil {
		return TokenInfo{}, err
	}
	si, err := t.db.info()
	if err != nil {
		return TokenInfo{}, err
	}
	model := "CCA"
	if t.conf.typ == TokenEP11 {
		model = "EP11"
	}
	info := TokenInfo{
		Label:              pad(si.Label, 32),
		ManufacturerID:     pad(manufacturer, 32),
		Model:              pad(model, 16),
		SerialNumber:       pad(si.Serial, 16),
		Flags:              ck.CKF_RNG | ck.CKF_LOGIN_REQUIRED | ck.Flags(si.Flags),
		MaxSessionCount:    uint(ck.CK_EFFECTIVELY_INFINITE),
		MaxRwSessionCount:  uint(ck.CK_EFFECTIVELY_INFINITE),
		MaxPinLen:          uint(t.maxPIN),
		MinPinLen:          uint(t.minPIN),
		TotalPublicMemory:  ck.CK_UNAVAILABLE_INFORMATION,
		FreePublicMemory:   ck.CK_UNAVAILABLE_INFORMATION,
		TotalPrivateMemory: ck.CK_UNAVAILABLE_INFORMATION,
		FreePrivateMemory:  ck.CK_UNAVAILABLE_INFORMATION,
		HardwareVersion:    Version{1, 0},
		FirmwareVersion:    Version{1, 0},
		UTCTime:            pad("", 16),
		SOPINFailures:      si.SOFailures,
		UserPINFailures:    si.UserFailures,
		MaxPINAttempts:     si.MaxPINAttempts,
		TokenType:          t.conf.typ,
		TokenName:          t.conf.tokname,
	}
	t.mu.Lock()
	for _, s := range t.sessions {
		info.SessionCount++
		if s.rw {
			info.RwSessionCount++
		}
	}
	t.mu.Unlock()
	return info, nil
}

// GetMechanismList lists the mechanisms of the slot's token.
func (l *Library) GetMechanismList(id SlotID) ([]ck.Mechanism, error) {
	t, err := l.token(id)
	if err != nil {
		return nil, err
	}
	return sortedMechs(t.mechs), nil
}

// GetMechanismInfo returns key size range and flags of a mechanism.
func (l *Library) GetMechanismInfo(id SlotID, m ck.Mechanism) (MechanismInfo, error) {
	t, err := l.token(id)
	if err != nil {
		return MechanismInfo{}, err
	}
	s, ok := t.mechs[m]
	if !ok {
		return MechanismInfo{}, newErr(ck.CKR_MECHANISM_INVALID, errclass.NotFound,
			"mechanism %v is not supported by the %s token", m, t.conf.typ)
	}
	return s.info, nil
}

// InitToken initializes the token in a slot (C_InitToken): on a new token
// soPIN becomes the SO PIN; on an initialized one it must be the SO PIN.
// Every token object is destroyed and the USER PIN is cleared. No session
// of this Library may be open on the token.
func (l *Library) InitToken(id SlotID, soPIN []byte, label string) error {
	t, err := l.token(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.sessions) > 0 {
		return newErrh(ck.CKR_SESSION_EXISTS, errclass.FailedPrecondition,
			"close every session of the token first", "slot %d has open sessions", id)
	}
	if len(label) > 32 {
		return newErrh(ck.CKR_ARGUMENTS_BAD, errclass.InvalidArgument,
			"use at most 32 bytes", "token label %q is longer than 32 bytes", label)
	}
	if err := storeErr(t.db.st.InitToken(context.Background(), soPIN, strings.TrimRight(label, " "))); err != nil {
		return err
	}
	t.invalidateCache()
	t.log.Info().Msg("token initialized")
	return nil
}

// InitPIN sets the USER PIN (C_InitPIN). The security officer must be
// logged in, in a read/write session.
func (l *Library) InitPIN(h SessionHandle, pin []byte) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.login != ck.CKU_SO {
		return newErrh(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied,
			"log in as the security officer first", "only the security officer can set the USER PIN")
	}
	if err := storeErr(t.db.st.InitUserPIN(context.Background(), t.dataKey, pin)); err != nil {
		return err
	}
	t.log.Info().Msg("USER PIN set by the security officer")
	return nil
}

// SetPIN changes a PIN (C_SetPIN): the SO PIN in an SO session, the USER
// PIN otherwise. The session must be read/write.
func (l *Library) SetPIN(h SessionHandle, oldPIN, newPIN []byte) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if !s.rw {
		return errReadOnly()
	}
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	user := ck.CKU_USER
	if t.login == ck.CKU_SO {
		user = ck.CKU_SO
	}
	if err := storeErr(t.db.st.SetPIN(context.Background(), storeUser(user), oldPIN, newPIN)); err != nil {
		return err
	}
	t.log.Info().Str("user", userName(user)).Msg("PIN changed")
	return nil
}

func errReadOnly() error {
	return newErrh(ck.CKR_SESSION_READ_ONLY, errclass.FailedPrecondition,
		"open a read/write session (CKF_RW_SESSION)", "the session is read-only")
}
