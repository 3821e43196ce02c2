package store

import (
	"bytes"
	"context"
	"crypto/cipher"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// UserType is a PKCS#11 user type; the values are CKU_SO and CKU_USER.
type UserType uint

const (
	SO   UserType = 0 // CKU_SO, the security officer
	User UserType = 1 // CKU_USER, the normal user
)

func (u UserType) String() string {
	switch u {
	case SO:
		return "SO"
	case User:
		return "USER"
	}
	return fmt.Sprintf("user(%d)", uint(u))
}

func (u UserType) valid() bool { return u == SO || u == User }

// Token flags as in CK_TOKEN_INFO.flags. [TokenInfo.Flags] sets only these;
// the engine adds the token-type flags (CKF_RNG, CKF_LOGIN_REQUIRED, ...).
const (
	FlagUserPINInitialized = 0x00000008 // CKF_USER_PIN_INITIALIZED
	FlagTokenInitialized   = 0x00000400 // CKF_TOKEN_INITIALIZED
	FlagUserPINCountLow    = 0x00010000 // CKF_USER_PIN_COUNT_LOW
	FlagUserPINFinalTry    = 0x00020000 // CKF_USER_PIN_FINAL_TRY
	FlagUserPINLocked      = 0x00040000 // CKF_USER_PIN_LOCKED
	FlagUserPINToBeChanged = 0x00080000 // CKF_USER_PIN_TO_BE_CHANGED
	FlagSOPINCountLow      = 0x00100000 // CKF_SO_PIN_COUNT_LOW
	FlagSOPINFinalTry      = 0x00200000 // CKF_SO_PIN_FINAL_TRY
	FlagSOPINLocked        = 0x00400000 // CKF_SO_PIN_LOCKED
	FlagSOPINToBeChanged   = 0x00800000 // CKF_SO_PIN_TO_BE_CHANGED; never set: the SO chooses the SO PIN at InitToken
)

// LabelLen is the size of CK_TOKEN_INFO.label.
const LabelLen = 32

// Sentinel errors; test with errors.Is. The returned errors also carry a
// class and a hint.
var (
	// ErrPINIncorrect: the PIN did not match (class PermissionDenied;
	// CKR_PIN_INCORRECT). The failure was counted.
	ErrPINIncorrect = errors.New("PIN incorrect")
	// ErrPINLocked: too many wrong PINs (class PermissionDenied;
	// CKR_PIN_LOCKED). Refused even with the right PIN.
	ErrPINLocked = errors.New("PIN locked")
	// ErrPINLen: the PIN is shorter or longer than allowed (class
	// InvalidArgument; CKR_PIN_LEN_RANGE).
	ErrPINLen = errors.New("PIN length out of range")
	// ErrTokenNotInitialized: InitToken was never run (class
	// FailedPrecondition; CKR_TOKEN_NOT_RECOGNIZED in the engine's mapping).
	ErrTokenNotInitialized = errors.New("token not initialized")
	// ErrUserPINNotInitialized: the SO has not set a USER PIN (class
	// FailedPrecondition; CKR_USER_PIN_NOT_INITIALIZED).
	ErrUserPINNotInitialized = errors.New("user PIN not initialized")
	// ErrStaleDataKey: the token was re-initialized since this data key was
	// obtained (class FailedPrecondition; CKR_USER_NOT_LOGGED_IN). Log in
	// again.
	ErrStaleDataKey = errors.New("data key is stale")
	// ErrLoginRequired: a private object needs a data key (class
	// PermissionDenied; CKR_USER_NOT_LOGGED_IN).
	ErrLoginRequired = errors.New("login required for private objects")
)

// TokenInfo is the token record and PIN state.
type TokenInfo struct {
	Label       string // without the blank padding of CK_TOKEN_INFO
	Serial      string // 16 upper-case hex digits, fixed when the database is created
	Initialized bool
	// Flags holds the Flag* bits derived from the state below.
	Flags uint64
	// Failures counts consecutive wrong PINs per user since the last
	// success; MaxPINAttempts of them lock the PIN.
	SOFailures, UserFailures int
	MaxPINAttempts           int
	// SOKDF and UserKDF are the derivations the current PIN wraps use
	// (zero when the PIN is not set).
	SOKDF, UserKDF KDF
	// Generation is the value [Store.Generation] returned in the same
	// snapshot.
	Generation uint64
}

// DataKey is the token data key that seals private attributes, unwrapped by
// a successful [Store.Login]. Holding one is what "logged in" means to the
// store. Call Destroy on logout. A DataKey is safe for concurrent use by
// the store's methods; Destroy must come after the last of them returned.
type DataKey struct {
	user    UserType
	id      [16]byte
	tokenID [tokenIDLen]byte
	key     []byte
	aead    cipher.AEAD
	ix      ixKey // digest key of private objects' index columns
}

// User returns who logged in to obtain the key. The store lets an SO key
// read private objects (the SO knows the data key to wrap it for the USER);
// the engine refuses private objects to SO sessions as PKCS#11 demands.
func (k *DataKey) User() UserType { return k.user }

// Destroy zeroes the key bytes and makes k unusable (operations with it fail
// with ErrStaleDataKey). The AES key schedule inside crypto/aes cannot be
// zeroed from outside; it becomes garbage with k.
func (k *DataKey) Destroy() {
	if k == nil {
		return
	}
	zero(k.key)
	zero(k.ix)
	k.key, k.ix = nil, nil
	k.aead = nil
	clear(k.id[:])
}

func newDataKey(user UserType, id, tokenID, key []byte) *DataKey {
	k := &DataKey{user: user, key: key, aead: newGCM(key), ix: privateIxKey(key)}
	copy(k.id[:], id)
	copy(k.tokenID[:], tokenID)
	return k
}

// tokenState is one consistent read of the token record and PIN rows.
type tokenState struct {
	label       string
	serial      string
	initialized bool
	dkID        []byte
	generation  uint64
	pins        [2]*pinRow
}

type pinRow struct {
	kdf         KDF
	salt        []byte
	wrapped     []byte
	failures    int
	toBeChanged bool
}

func (p *pinRow) sameWrap(q *pinRow) bool {
	return p != nil && q != nil && bytes.Equal(p.salt, q.salt) && bytes.Equal(p.wrapped, q.wrapped)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) readState(ctx context.Context, q querier) (*tokenState, error) {
	st := &tokenState{}
	var gen int64
	var init int
	if err := q.QueryRowContext(ctx, `SELECT label, serial, initialized, dk_id, generation FROM token WHERE id = 1`).
		Scan(&st.label, &st.serial, &init, &st.dkID, &gen); err != nil {
		return nil, classifyDB(fmt.Errorf("read token record: %w", err))
	}
	st.initialized, st.generation = init != 0, uint64(gen)
	rows, err := q.QueryContext(ctx, `SELECT user, kdf, kdf_time, kdf_memory, kdf_threads, salt, wrapped, failures, to_be_changed FROM pin`)
	if err != nil {
		return nil, classifyDB(fmt.Errorf("read PIN records: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var u, tbc int
		var p pinRow
		if err := rows.Scan(&u, &p.kdf.Algorithm, &p.kdf.Time, &p.kdf.MemoryKiB, &p.kdf.Threads, &p.salt, &p.wrapped, &p.failures, &tbc); err != nil {
			return nil, classifyDB(fmt.Errorf("read PIN record: %w", err))
		}
		if u != int(SO) && u != int(User) {
			return nil, errclass.New(errclass.DataLoss, "PIN record for unknown user %d", u)
		}
		p.toBeChanged = tbc != 0
		st.pins[u] = &p
	}
	if err := rows.Err(); err != nil {
		return nil, classifyDB(fmt.Errorf("read PIN records: %w", err))
	}
	return st, nil
}

// Info returns the token record and PIN state.
func (s *Store) Info(ctx context.Context) (TokenInfo, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return TokenInfo{}, classifyDB(fmt.Errorf("token info: %w", err))
	}
	defer tx.Rollback()
	st, err := s.readState(ctx, tx)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("token info: %w", err)
	}
	ti := TokenInfo{Label: st.label, Serial: st.serial, Initialized: st.initialized,
		MaxPINAttempts: s.opts.MaxPINAttempts, Generation: st.generation}
	// No object count here: C_GetTokenInfo calls this, and counting a
	// million objects is a scan; Count does it when asked.
	if st.initialized {
		ti.Flags |= FlagTokenInitialized
	}
	max := s.opts.MaxPINAttempts
	pinFlags := func(p *pinRow, low, final, locked, change uint64) uint64 {
		var f uint64
		switch {
		case p.failures >= max:
			f |= locked
		case p.failures == max-1:
			f |= final | low
		case p.failures > 0:
			f |= low
		}
		if p.toBeChanged {
			f |= change
		}
		return f
	}
	if p := st.pins[SO]; p != nil {
		ti.SOFailures, ti.SOKDF = p.failures, p.kdf
		ti.Flags |= pinFlags(p, FlagSOPINCountLow, FlagSOPINFinalTry, FlagSOPINLocked, FlagSOPINToBeChanged)
	}
	if p := st.pins[User]; p != nil {
		ti.UserFailures, ti.UserKDF = p.failures, p.kdf
		ti.Flags |= FlagUserPINInitialized
		ti.Flags |= pinFlags(p, FlagUserPINCountLow, FlagUserPINFinalTry, FlagUserPINLocked, FlagUserPINToBeChanged)
	}
	return ti, nil
}

func (s *Store) checkPINLen(what string, pin []byte) error {
	if len(pin) < s.opts.MinPINLen || len(pin) > s.opts.MaxPINLen {
		return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("use a PIN of %d to %d characters", s.opts.MinPINLen, s.opts.MaxPINLen),
			"%s has %d characters: %w", what, len(pin), ErrPINLen)
	}
	return nil
}

// checkLabel validates a token label: at most 32 bytes of UTF-8 without
// control characters. Trailing blanks are dropped (CK_TOKEN_INFO pads).
func checkLabel(label string) (string, error) {
	label = strings.TrimRight(label, " ")
	if len(label) > LabelLen {
		return "", errclass.Newh(errclass.InvalidArgument, "shorten the label to 32 bytes", "token label %q has %d bytes, more than %d", label, len(label), LabelLen)
	}
	if !utf8.ValidString(label) {
		return "", errclass.Newh(errclass.InvalidArgument, "use a UTF-8 label", "token label is not valid UTF-8")
	}
	for _, r := range label {
		if r < 0x20 || r == 0x7f {
			return "", errclass.Newh(errclass.InvalidArgument, "use printable characters only", "token label %q contains a control character", label)
		}
	}
	return label, nil
}

// testFailpoint, if set (by tests only), runs at named points between a
// read and the write transaction that depends on it, to make races
// deterministic.
var testFailpoint func(name string)

func failpoint(name string) {
	if testFailpoint != nil {
		testFailpoint(name)
	}
}

// errRetry makes a PIN operation start over because another process changed
// the PIN record between our read and our write transaction.
var errRetry = errors.New("PIN record changed concurrently")

const pinRetries = 8

func errLocked(user UserType) error {
	hint := "the SO can set a new USER PIN with InitPIN"
	if user == SO {
		hint = "the SO PIN cannot be unlocked; the token must be re-created by removing its directory"
	}
	return errclass.Newh(errclass.PermissionDenied, hint, "%s PIN: %w", user, ErrPINLocked)
}

func errIncorrect(user UserType) error {
	return errclass.Newh(errclass.PermissionDenied, "check the PIN; wrong PINs are counted and lock the PIN", "%s PIN: %w", user, ErrPINIncorrect)
}

// verifyPIN checks pin against user's wrap. A failure is counted in a write
// transaction (all processes see it); a success after failures resets the
// count. On success it returns the unwrapped key (caller zeroes or keeps it)
// and the state snapshot it was checked against.
func (s *Store) verifyPIN(ctx context.Context, user UserType, pin []byte) ([]byte, *tokenState, error) {
	if !user.valid() {
		return nil, nil, errclass.New(errclass.InvalidArgument, "user type %d is neither SO (0) nor USER (1)", uint(user))
	}
	for range pinRetries {
		st, err := s.readState(ctx, s.reader())
		if err != nil {
			return nil, nil, err
		}
		if !st.initialized {
			return nil, nil, errclass.Newh(errclass.FailedPrecondition, "initialize the token first (C_InitToken / pkcshsm init-token)", "%w", ErrTokenNotInitialized)
		}
		p := st.pins[user]
		if p == nil {
			if user == User {
				return nil, nil, errclass.Newh(errclass.FailedPrecondition, "the SO must set the USER PIN first (C_InitPIN)", "%w", ErrUserPINNotInitialized)
			}
			return nil, nil, errclass.New(errclass.DataLoss, "initialized token has no SO PIN record")
		}
		if p.failures >= s.opts.MaxPINAttempts {
			return nil, nil, errLocked(user)
		}
		if err := p.kdf.validate(); err != nil {
			return nil, nil, errclass.As(errclass.DataLoss, fmt.Errorf("stored %s PIN parameters: %w", user, err))
		}
		kek := p.kdf.derive(pin, p.salt)
		key, ok := unwrapKey(kek, p.wrapped, wrapAAD(s.tokenID[:], user, st.dkID, p.kdf, p.salt))
		zero(kek)
		if ok && p.failures == 0 {
			return key, st, nil
		}
		failpoint("pin-before-write")
		var result error
		err = s.writeTx(ctx, func(tx *runner) error {
			cur, err := s.readState(ctx, tx)
			if err != nil {
				return err
			}
			if !p.sameWrap(cur.pins[user]) || !bytes.Equal(cur.dkID, st.dkID) {
				return errRetry
			}
			if cur.pins[user].failures >= s.opts.MaxPINAttempts {
				return errLocked(user)
			}
			if ok {
				_, err = tx.ExecContext(ctx, `UPDATE pin SET failures = 0 WHERE user = ?`, int(user))
				return classifyDB(err)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE pin SET failures = failures + 1 WHERE user = ?`, int(user)); err != nil {
				return classifyDB(err)
			}
			result = errIncorrect(user)
			if cur.pins[user].failures+1 >= s.opts.MaxPINAttempts {
				s.log.Warn().Stringer("user", user).Msg("PIN locked after too many wrong attempts")
			} else {
				s.log.Info().Stringer("user", user).Int("failures", cur.pins[user].failures+1).Msg("wrong PIN")
			}
			return nil
		})
		if errors.Is(err, errRetry) {
			zero(key)
			continue
		}
		if err != nil {
			zero(key)
			return nil, nil, fmt.Errorf("%s login: %w", user, err)
		}
		if result != nil {
			return nil, nil, result
		}
		return key, st, nil
	}
	return nil, nil, errclass.Newh(errclass.Unavailable, "retry; another process keeps changing the PIN", "%s PIN record changed %d times while checking it", user, pinRetries)
}

// Login checks user's PIN and returns the token data key. A wrong PIN is
// counted (errclass.PermissionDenied wrapping ErrPINIncorrect); after
// MaxPINAttempts consecutive failures the PIN is locked and every Login
// fails with ErrPINLocked, even with the right PIN. A success resets the
// count.
func (s *Store) Login(ctx context.Context, user UserType, pin []byte) (*DataKey, error) {
	key, st, err := s.verifyPIN(ctx, user, pin)
	if err != nil {
		return nil, err
	}
	s.log.Debug().Stringer("user", user).Msg("login")
	return newDataKey(user, st.dkID, s.tokenID[:], key), nil
}

// InitToken initializes the token: a fresh data key wrapped under soPIN,
// the label set, every object destroyed and the USER PIN cleared. If the
// token is already initialized, soPIN must be the current SO PIN (a wrong
// one is counted like a failed SO login) — re-initialization never changes
// the SO PIN; use SetPIN for that. Data keys obtained before become stale.
func (s *Store) InitToken(ctx context.Context, soPIN []byte, label string) error {
	label, err := checkLabel(label)
	if err != nil {
		return fmt.Errorf("init token: %w", err)
	}
	if err := s.checkPINLen("SO PIN", soPIN); err != nil {
		return fmt.Errorf("init token: %w", err)
	}
	for range pinRetries {
		st, err := s.readState(ctx, s.reader())
		if err != nil {
			return fmt.Errorf("init token: %w", err)
		}
		var old *pinRow
		if st.initialized {
			key, vst, err := s.verifyPIN(ctx, SO, soPIN)
			if err != nil {
				return fmt.Errorf("re-init token: %w", err)
			}
			zero(key)
			st, old = vst, vst.pins[SO]
		}
		dk, dkID, salt := randomBytes(keyLen), randomBytes(16), randomBytes(saltLen)
		k := s.opts.KDF
		kek := k.derive(soPIN, salt)
		wrapped := wrapKey(kek, dk, wrapAAD(s.tokenID[:], SO, dkID, k, salt))
		zero(kek)
		zero(dk)
		failpoint("init-before-write")
		var n int64
		err = s.writeTx(ctx, func(tx *runner) error {
			cur, err := s.readState(ctx, tx)
			if err != nil {
				return err
			}
			if cur.initialized != st.initialized || (old != nil && !old.sameWrap(cur.pins[SO])) {
				return errRetry
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM object`)
			if err != nil {
				return classifyDB(fmt.Errorf("destroy objects: %w", err))
			}
			n, _ = res.RowsAffected()
			if _, err := tx.ExecContext(ctx, `DELETE FROM pin`); err != nil {
				return classifyDB(err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO pin (user, kdf, kdf_time, kdf_memory, kdf_threads, salt, wrapped) VALUES (?, ?, ?, ?, ?, ?, ?)`,
				int(SO), k.Algorithm, k.Time, k.MemoryKiB, k.Threads, salt, wrapped); err != nil {
				return classifyDB(err)
			}
			_, err = tx.ExecContext(ctx, `UPDATE token SET label = ?, initialized = 1, dk_id = ? WHERE id = 1`, label, dkID)
			return classifyDB(err)
		})
		if errors.Is(err, errRetry) {
			continue
		}
		if err != nil {
			return fmt.Errorf("init token: %w", err)
		}
		s.log.Info().Str("label", label).Bool("reinit", st.initialized).Int64("objects_destroyed", n).Msg("token initialized")
		return nil
	}
	return errclass.Newh(errclass.Unavailable, "retry; another process keeps initializing the token", "init token: token record changed %d times meanwhile", pinRetries)
}

// checkKey verifies inside a write transaction that dk belongs to this
// token's current initialization.
func (s *Store) checkKey(ctx context.Context, q querier, dk *DataKey) error {
	if dk == nil {
		return errclass.Newh(errclass.PermissionDenied, "log in as USER first", "%w", ErrLoginRequired)
	}
	if dk.aead == nil || dk.tokenID != s.tokenID {
		return errclass.Newh(errclass.FailedPrecondition, "log in again", "%w (destroyed, or from another token)", ErrStaleDataKey)
	}
	var cur []byte
	if err := q.QueryRowContext(ctx, `SELECT dk_id FROM token WHERE id = 1`).Scan(&cur); err != nil {
		return classifyDB(fmt.Errorf("read data key id: %w", err))
	}
	if !bytes.Equal(cur, dk.id[:]) {
		return errclass.Newh(errclass.FailedPrecondition, "log in again", "%w: the token was re-initialized", ErrStaleDataKey)
	}
	return nil
}

// InitUserPIN sets the USER PIN (C_InitPIN). dk must come from an SO login.
// It also unlocks a locked USER PIN and resets its failure count. The new
// PIN is marked to be changed (CKF_USER_PIN_TO_BE_CHANGED), since the SO
// knows it; SetPIN by the user clears the mark. Logins are not refused
// while it is set.
func (s *Store) InitUserPIN(ctx context.Context, dk *DataKey, pin []byte) error {
	if dk != nil && dk.user != SO {
		return errclass.Newh(errclass.PermissionDenied, "log in as SO to set the USER PIN", "init USER PIN: data key is from a %s login", dk.user)
	}
	if err := s.checkPINLen("USER PIN", pin); err != nil {
		return fmt.Errorf("init USER PIN: %w", err)
	}
	if dk == nil || dk.aead == nil {
		return fmt.Errorf("init USER PIN: %w", s.checkKey(ctx, s.reader(), dk))
	}
	k := s.opts.KDF
	salt := randomBytes(saltLen)
	kek := k.derive(pin, salt)
	wrapped := wrapKey(kek, dk.key, wrapAAD(s.tokenID[:], User, dk.id[:], k, salt))
	zero(kek)
	err := s.writeTx(ctx, func(tx *runner) error {
		if err := s.checkKey(ctx, tx, dk); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO pin (user, kdf, kdf_time, kdf_memory, kdf_threads, salt, wrapped, failures, to_be_changed) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 1)`,
			int(User), k.Algorithm, k.Time, k.MemoryKiB, k.Threads, salt, wrapped)
		return classifyDB(err)
	})
	if err != nil {
		return fmt.Errorf("init USER PIN: %w", err)
	}
	s.log.Info().Msg("USER PIN set by SO")
	return nil
}

// SetPIN changes user's PIN from old to new (C_SetPIN). A wrong old PIN is
// counted like a failed login. The data key stays the same, so data keys
// held by logged-in processes remain valid. The new wrap uses the store's
// current KDF parameters (this is how raised defaults reach existing
// tokens).
func (s *Store) SetPIN(ctx context.Context, user UserType, oldPIN, newPIN []byte) error {
	if err := s.checkPINLen("new "+user.String()+" PIN", newPIN); err != nil {
		return fmt.Errorf("set PIN: %w", err)
	}
	key, st, err := s.verifyPIN(ctx, user, oldPIN)
	if err != nil {
		return fmt.Errorf("set PIN: %w", err)
	}
	defer zero(key)
	k := s.opts.KDF
	salt := randomBytes(saltLen)
	kek := k.derive(newPIN, salt)
	wrapped := wrapKey(kek, key, wrapAAD(s.tokenID[:], user, st.dkID, k, salt))
	zero(kek)
	err = s.writeTx(ctx, func(tx *runner) error {
		cur, err := s.readState(ctx, tx)
		if err != nil {
			return err
		}
		if !st.pins[user].sameWrap(cur.pins[user]) || !bytes.Equal(cur.dkID, st.dkID) {
			return errclass.Newh(errclass.Conflict, "retry with the current PIN", "%s PIN was changed by another process meanwhile", user)
		}
		_, err = tx.ExecContext(ctx, `UPDATE pin SET kdf = ?, kdf_time = ?, kdf_memory = ?, kdf_threads = ?, salt = ?, wrapped = ?, failures = 0, to_be_changed = 0 WHERE user = ?`,
			k.Algorithm, k.Time, k.MemoryKiB, k.Threads, salt, wrapped, int(user))
		return classifyDB(err)
	})
	if err != nil {
		return fmt.Errorf("set %s PIN: %w", user, err)
	}
	s.log.Info().Stringer("user", user).Msg("PIN changed")
	return nil
}
