package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"modernc.org/sqlite" // pure-Go SQLite driver "sqlite": CGO_ENABLED=0 builds work
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// DBName is the database file inside a token directory.
const DBName = "token.db"

// File modes of the token directory and of the database files. The token
// group shares them; SQLite copies the database file's mode onto its -wal and
// -shm files.
const (
	DirMode  fs.FileMode = 0o770
	FileMode fs.FileMode = 0o660
)

// DefaultMaxPINAttempts is the number of consecutive wrong PINs after which a
// PIN is locked when [Options.MaxPINAttempts] is zero.
const DefaultMaxPINAttempts = 10

// DefaultBusyTimeout is how long a statement waits for another process's
// write transaction when [Options.BusyTimeout] is zero.
const DefaultBusyTimeout = 30 * time.Second

// Options tune a [Store]. The zero value is usable.
type Options struct {
	// Logger receives diagnostics (never PINs, keys or attribute values).
	// The zero value logs nothing.
	Logger zerolog.Logger
	// KDF is the PIN key derivation used for PINs set from now on
	// (InitToken, InitUserPIN, SetPIN). PINs set earlier keep the
	// parameters stored with them until they are set again. The zero value
	// means [DefaultKDF].
	KDF KDF
	// MaxPINAttempts is the number of consecutive wrong PINs that lock a
	// PIN; 0 means [DefaultMaxPINAttempts]. The counters live in the
	// database, so all processes must use the same value.
	MaxPINAttempts int
	// MinPINLen and MaxPINLen bound PIN lengths in bytes; 0 means 4 and 128
	// (the CCA token's range; EP11 tokens should pass 4 and 8).
	MinPINLen, MaxPINLen int
	// BusyTimeout bounds how long a statement waits for a lock held by
	// another process; 0 means [DefaultBusyTimeout].
	BusyTimeout time.Duration
	// Summary, if set, computes the object's master key summary from its
	// attributes (clear values), which the store keeps in a column of its
	// own, readable without a data key ([Store.Census]). It must depend
	// only on the attribute types in SummaryAttrs: an Update of an object
	// read partially ([Filter.Only]) without all of them keeps the stored
	// summary. Without Summary, every write clears the summary (NULL: not
	// recorded), so a stale one never survives a change.
	Summary      func(attrs map[uint32][]byte) []byte
	SummaryAttrs []uint32
}

// Store is one token's object store: an open SQLite database shared with
// every other process that opens the same directory. It is safe for
// concurrent use by many goroutines.
type Store struct {
	dir  string
	path string
	log  zerolog.Logger
	opts Options

	// rdb serves reads (autocommit statements, deferred transactions); wdb
	// serves write transactions, which all begin IMMEDIATE so that a
	// transaction never has to upgrade a read lock (the upgrade cannot wait
	// in WAL mode and would fail with SQLITE_BUSY). wdb has one connection:
	// writers of this process queue in Go instead of polling SQLite's busy
	// handler against each other.
	rdb, wdb *sql.DB

	// gate orders this store's writers against other processes' (see
	// gate.go); wmu serialises this process's writers around it.
	gate *os.File
	wmu  sync.Mutex

	tokenID [tokenIDLen]byte // random, fixed for the life of the database
	pubIx   ixKey            // digest key of public objects' index columns

	decoded atomic.Uint64 // objects decoded, for Stats

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared on rdb; see runner.go

	// damaged is set when the database file is damaged in a way SQLite
	// refuses as a whole (cut short): the store then serves reads of what
	// is left and refuses every write with this error (see salvage).
	damaged error

	closeOnce sync.Once
	closeErr  error
}

const tokenIDLen = 16

// noFollow makes the create of the database file refuse a symlink planted
// between the Lstat check and the open.
const noFollow = syscall.O_NOFOLLOW

// Open creates or opens the store in dir (<dir>/token.db). The directory is
// created with mode 0770 if missing; a symlinked directory or database file
// is refused. The schema is created or migrated to the current version; a
// database written by a newer version of this package is refused with a
// [errclass.FailedPrecondition] error and left untouched.
func Open(dir string, opts Options) (*Store, error) {
	if dir == "" {
		return nil, errclass.Newh(errclass.InvalidArgument, "pass the token directory, e.g. paths.TokenDir(name)", "open token store: empty directory name")
	}
	opts = opts.withDefaults()
	if err := opts.KDF.validate(); err != nil {
		return nil, fmt.Errorf("open token store: %w", err)
	}
	if opts.MinPINLen < 1 || opts.MaxPINLen < opts.MinPINLen || opts.MaxPINLen > maxPINLenLimit {
		return nil, errclass.New(errclass.InvalidArgument, "open token store: PIN length bounds %d..%d are not valid (1 <= min <= max <= %d)", opts.MinPINLen, opts.MaxPINLen, maxPINLenLimit)
	}
	if opts.MaxPINAttempts < 1 || opts.MaxPINAttempts > 1000 {
		return nil, errclass.New(errclass.InvalidArgument, "open token store: MaxPINAttempts %d is not in 1..1000", opts.MaxPINAttempts)
	}
	path := filepath.Join(dir, DBName)
	if err := prepareFiles(dir, path); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, path: path, log: opts.Logger, opts: opts}
	ro, err := readOnlyFS(dir, path)
	if err != nil {
		return nil, err
	}
	mkdsn := dsn
	if ro {
		mkdsn = dsnReadOnly
	}
	if s.gate, err = openGate(path); err != nil {
		return nil, err
	}
	if s.rdb, err = sql.Open("sqlite", mkdsn(path, opts.BusyTimeout, "deferred")); err != nil {
		return nil, errclass.New(errclass.Internal, "open token store %s: %w", path, err)
	}
	if s.wdb, err = sql.Open("sqlite", mkdsn(path, opts.BusyTimeout, "immediate")); err != nil {
		s.rdb.Close()
		return nil, errclass.New(errclass.Internal, "open token store %s: %w", path, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.rdb.SetMaxOpenConns(8)
	s.rdb.SetMaxIdleConns(4)
	s.rdb.SetConnMaxIdleTime(time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), opts.BusyTimeout+5*time.Second)
	defer cancel()
	if err := s.migrate(ctx); err != nil {
		if errclass.Of(err) != errclass.DataLoss {
			s.Close()
			return nil, err
		}
		if serr := s.salvage(ctx, err); serr != nil {
			s.log.Debug().Err(serr).Msg("salvage failed")
			s.Close()
			return nil, err
		}
	}
	if err := s.rdb.QueryRowContext(ctx, `SELECT token_id FROM token WHERE id = 1`).Scan(scanFixed(s.tokenID[:])); err != nil {
		s.Close()
		return nil, classifyDB(fmt.Errorf("open token store %s: read token id: %w", path, err))
	}
	s.pubIx = publicIxKey(s.tokenID[:])
	s.log.Debug().Str("path", path).Msg("token store opened")
	return s, nil
}

const maxPINLenLimit = 256

func (o Options) withDefaults() Options {
	if o.KDF == (KDF{}) {
		o.KDF = DefaultKDF
	}
	if o.MaxPINAttempts == 0 {
		o.MaxPINAttempts = DefaultMaxPINAttempts
	}
	if o.MinPINLen == 0 {
		o.MinPINLen = 4
	}
	if o.MaxPINLen == 0 {
		o.MaxPINLen = 128
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	return o
}

// salvage reopens a database that SQLite refuses as a whole — typically a
// file cut short, whose header names more pages than it has — so that what
// is left stays readable: the connections run with writable_schema (SQLite
// then takes the file's real size) and query_only, and every write of the
// store fails with a DataLoss error. Objects in the lost pages fail with
// errors naming their handles; the others are served. cause is the error
// of the normal open.
func (s *Store) salvage(ctx context.Context, cause error) error {
	s.rdb.Close()
	s.wdb.Close()
	var err error
	u := url.URL{Path: s.path}
	q := url.Values{}
	// Only these: journal_mode and the others re-read the damaged file
	// and fail. The file stays in WAL mode (it is recorded in it).
	q.Add("_pragma", "writable_schema(1)")
	q.Add("_pragma", "query_only(1)")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", s.opts.BusyTimeout.Milliseconds()))
	if s.rdb, err = sql.Open("sqlite", "file:"+u.EscapedPath()+"?"+q.Encode()); err != nil {
		return err
	}
	s.wdb = s.rdb
	var v int
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v != len(migrations) {
		return errclass.New(errclass.DataLoss, "damaged token store has schema version %d", v)
	}
	s.damaged = errclass.Newh(errclass.DataLoss, "restore the token directory from a backup; until then the token is read-only",
		"token store %s is damaged, writes are refused: %w", s.path, cause)
	s.log.Error().Err(cause).Str("path", s.path).Msg("token store is damaged: serving the readable objects read-only")
	return nil
}

// dsn builds the modernc.org/sqlite connection string. The path goes into a
// file: URI, escaped, so that '?' or '#' in a directory name cannot inject
// parameters. Every connection gets the same pragmas.
func dsn(path string, busy time.Duration, txlock string) string {
	u := url.URL{Path: path}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	// Zero deleted cell content where that costs no extra I/O: an
	// overwritten PIN wrap of a re-initialized token does not linger in its
	// page. Best effort; freed pages and old WAL frames are not wiped.
	q.Add("_pragma", "secure_delete(FAST)")
	// Truncate the WAL back to 64 MiB after a checkpoint; a 100,000-object
	// MK change pass would otherwise leave a WAL of hundreds of MiB.
	q.Add("_pragma", "journal_size_limit(67108864)")
	q.Add("_txlock", txlock)
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// readOnlyFS reports whether the token directory is on a read-only file
// system (a snapshot, a rescue mount). The store is then opened read-only
// and immutable: nothing can change the file, so no lock and no WAL index
// are needed, and reading (keys list, a dry run) works; every write fails
// with "read-only file system". A WAL file with content holds committed
// changes the database file does not have yet: reading without it would
// show an older store, so that is refused.
func readOnlyFS(dir, path string) (bool, error) {
	if err := syscall.Access(dir, 2 /* W_OK */); !errors.Is(err, syscall.EROFS) {
		return false, nil
	}
	if fi, err := os.Lstat(path + "-wal"); err == nil && fi.Size() > 0 {
		return false, errclass.Newh(errclass.FailedPrecondition,
			"mount the file system read-write once and open the token (e.g. pkcshsm slots), so the store takes in its log",
			"token store %s is on a read-only file system with changes still in its write-ahead log %s", path, path+"-wal")
	}
	return true, nil
}

// dsnReadOnly is dsn for a store on a read-only file system.
func dsnReadOnly(path string, busy time.Duration, txlock string) string {
	u := url.URL{Path: path}
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("immutable", "1")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_txlock", txlock)
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// prepareFiles creates the directory and an empty database file with the
// shared modes, and refuses symlinks. SQLite opens the file afterwards by
// name, so a process of the token group could still swap it in between; the
// directory's 0770 mode limits that to members of the group, who can read
// the database anyway.
func prepareFiles(dir, path string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, DirMode); err != nil {
			return errclass.Newh(errclass.FailedPrecondition, "check that the parent directory exists and is writable", "create token directory %s: %w", dir, err)
		}
		if err := os.Chmod(dir, DirMode); err != nil { // undo the umask
			return errclass.New(errclass.FailedPrecondition, "set mode of token directory %s: %w", dir, err)
		}
	case err != nil:
		return errclass.New(errclass.FailedPrecondition, "inspect token directory %s: %w", dir, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return errclass.Newh(errclass.FailedPrecondition, "configure the real directory instead of the symlink", "token directory %s is a symlink, which is refused", dir)
	case !fi.IsDir():
		return errclass.Newh(errclass.FailedPrecondition, "remove the file or configure another token directory", "token directory %s is not a directory", dir)
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return errclass.New(errclass.FailedPrecondition, "inspect token database %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			return errclass.Newh(errclass.FailedPrecondition, "remove it; the store creates its files itself", "token database file %s is not a regular file (symlinks are refused)", name)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|noFollow, FileMode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return errclass.New(errclass.FailedPrecondition, "create token database %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Chmod(FileMode); err != nil { // undo the umask
		return errclass.New(errclass.FailedPrecondition, "set mode of token database %s: %w", path, err)
	}
	return nil
}

// Close closes the database. The last process to close it checkpoints the
// write-ahead log into the database file. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.closeStmts()
		if s.wdb != nil && s.wdb != s.rdb {
			errs = append(errs, s.wdb.Close())
		}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		if s.gate != nil {
			errs = append(errs, s.gate.Close())
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = errclass.New(errclass.Internal, "close token store %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// Path returns the database file name.
func (s *Store) Path() string { return s.path }

// Generation returns the store's change counter. Every committed write
// transaction of any process (object create, update, delete, token init,
// PIN change, PIN failure count) increments it by at least one, in the same
// transaction as the change. Hence: if two calls return the same value, no
// change was committed between them, and anything decoded from the store
// before the first call is still current. A cache must call Generation
// before every use of cached objects (it costs one indexed read, no
// decryption) and drop or revalidate them when the value moved; the
// per-object [Object.Version] (see [Store.Version]) tells which ones changed.
func (s *Store) Generation(ctx context.Context) (uint64, error) {
	var g int64
	if err := s.reader().QueryRowContext(ctx, `SELECT generation FROM token WHERE id = 1`).Scan(&g); err != nil {
		return 0, classifyDB(fmt.Errorf("read store generation: %w", err))
	}
	return uint64(g), nil
}

// writeTx runs fn in one IMMEDIATE transaction, bumps the generation and
// commits; fn's error rolls everything back.
func (s *Store) writeTx(ctx context.Context, fn func(*runner) error) error {
	return s.writeTxPrio(ctx, false, fn)
}

// writeTxPrio is writeTx behind the writers' gate: shared for ordinary
// writers, exclusive and followed by a yield for low-priority ones.
func (s *Store) writeTxPrio(ctx context.Context, low bool, fn func(*runner) error) error {
	if s.damaged != nil {
		return s.damaged
	}
	return s.roHint(s.writeTx1(ctx, low, fn))
}

// roHint gives a write error on a token directory that is on a read-only
// file system the hint that fits (not "check the token group").
func (s *Store) roHint(err error) error {
	if err == nil || !errors.Is(syscall.Access(s.dir, 2 /* W_OK */), syscall.EROFS) {
		return err
	}
	return errclass.WithHint(errclass.As(errclass.FailedPrecondition, fmt.Errorf("token directory %s is on a read-only file system: %w", s.dir, err)),
		"remount the file system read-write; nothing was changed")
}

func (s *Store) writeTx1(ctx context.Context, low bool, fn func(*runner) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.lockGate(ctx, low); err != nil {
		return err
	}
	defer func() {
		s.unlockGate()
		if low {
			time.Sleep(gateYield)
		}
	}()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return classifyDB(fmt.Errorf("begin write transaction: %w", err))
	}
	r := s.inTx(tx)
	if err := fn(r); err != nil {
		tx.Rollback()
		return err
	}
	if _, err := r.ExecContext(ctx, `UPDATE token SET generation = generation + 1 WHERE id = 1`); err != nil {
		tx.Rollback()
		return classifyDB(fmt.Errorf("bump store generation: %w", err))
	}
	if err := tx.Commit(); err != nil {
		return classifyDB(fmt.Errorf("commit: %w", err))
	}
	return nil
}

// classifyDB gives database errors a class by SQLite's primary result
// code: a lock that stays busy past the busy timeout is Unavailable, a
// corrupt file DataLoss, a read-only or unopenable file PermissionDenied,
// a cancelled context keeps its own meaning, anything else Internal.
// Errors that already carry a class keep it.
func classifyDB(err error) error {
	if err == nil || errclass.Of(err) != errclass.Unknown {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errclass.As(errclass.DeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return errclass.As(errclass.Aborted, err)
	case errors.Is(err, sql.ErrNoRows):
		return errclass.As(errclass.NotFound, err)
	case errors.Is(err, sql.ErrConnDone) || isDBClosed(err):
		return errclass.WithHint(errclass.As(errclass.FailedPrecondition, err), "the token store was closed; open it again")
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return errclass.As(errclass.Internal, err)
	}
	switch se.Code() & 0xff { // the primary code of an extended one
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return errclass.WithHint(errclass.As(errclass.Unavailable, err), "another process holds the token database locked; retry, or find the process that hangs")
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT:
		return errclass.WithHint(errclass.As(errclass.DataLoss, err), "restore the token directory from a backup")
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH:
		return errclass.WithHint(errclass.As(errclass.PermissionDenied, err), "check that this user is in the token group and the token directory is 0770")
	case sqlite3.SQLITE_FULL:
		return errclass.WithHint(errclass.As(errclass.Unavailable, err), "free space on the file system of the token directory")
	case sqlite3.SQLITE_IOERR:
		if se.Code() == sqlite3.SQLITE_IOERR_SHORT_READ {
			return errclass.WithHint(errclass.As(errclass.DataLoss, err), "the token database is truncated; restore the token directory from a backup")
		}
	}
	return errclass.As(errclass.Internal, err)
}

// isDBClosed recognises database/sql's error for a closed *sql.DB. It is
// not exported, so only its text identifies it; it is not a SQLite error.
func isDBClosed(err error) bool {
	return err.Error() == "sql: database is closed" || strings.HasSuffix(err.Error(), ": sql: database is closed")
}

// scanFixed scans a BLOB of exactly len(dst) bytes into dst.
type fixedScanner []byte

func scanFixed(dst []byte) *fixedScanner { f := fixedScanner(dst); return &f }

func (f *fixedScanner) Scan(v any) error {
	b, ok := v.([]byte)
	if !ok || len(b) != len(*f) {
		return errclass.New(errclass.DataLoss, "stored value has %d bytes, want %d", len(b), len(*f))
	}
	copy(*f, b)
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return b
}

func newSerial() string { return strings.ToUpper(hex.EncodeToString(randomBytes(8))) }
