package state

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// File names inside the operation directory besides the operation files.
const (
	lockName    = ".lock"
	historyName = "history.jsonl"
	brokenDir   = ".broken"
	tmpPrefix   = ".tmp-"
)

// Modes. The directory and files are readable by the token group, so every
// application's runtime agent can follow the operations, and writable only
// by their owner (the administrator running pkcshsm_mk_change).
const (
	dirMode  fs.FileMode = 0o750
	fileMode fs.FileMode = 0o640
)

// Options configure a Dir.
type Options struct {
	Logger zerolog.Logger
	// LockTimeout bounds every wait for the directory lock (default 30 s).
	LockTimeout time.Duration
	// ReadOnly opens an existing directory for reading only (runtime
	// agents); it is never created and nothing is written or quarantined.
	ReadOnly bool
	// Now returns the time for transitions (default time.Now).
	Now func() time.Time

	// crash is called at named points of the write path; tests kill the
	// process there.
	crash func(point string)
}

// Dir is the operation directory. Methods are safe for concurrent use by
// goroutines (a mutex) and processes (flock on the lock file).
type Dir struct {
	path string
	opts Options
	log  zerolog.Logger
	mu   sync.Mutex // serialises this process's users of lk
	lk   *flock.Flock
}

// Open opens (and, unless read-only, creates) the operation directory.
// Symlinks are refused for the directory and everything in it.
func Open(path string, opts Options) (*Dir, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.crash == nil {
		opts.crash = func(string) {}
	}
	path = filepath.Clean(path)
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, ioErr(err, "create %s", filepath.Dir(path))
		}
		if err := os.Mkdir(path, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, ioErr(err, "create operation directory %s", path)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, ioErr(err, "open operation directory %s", path)
	}
	if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return nil, errclass.Newh(errclass.PermissionDenied, "remove the link and let pkcshsm_mk_change create the directory",
			"refusing operation directory %s: not a plain directory (symlink?)", path)
	}
	lockPath := filepath.Join(path, lockName)
	flag := os.O_CREATE | os.O_RDWR | syscall.O_NOFOLLOW
	if opts.ReadOnly {
		flag = os.O_RDONLY | syscall.O_NOFOLLOW
	}
	d := &Dir{
		path: path,
		opts: opts,
		log:  opts.Logger.With().Str("component", "state").Logger(),
		lk:   flock.New(lockPath, flock.SetFlag(flag), flock.SetPermissions(fileMode)),
	}
	if !opts.ReadOnly {
		// Create the lock file now, so permission problems show at once.
		if err := d.withLock(context.Background(), true, func() error { return nil }); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// Close releases the lock file.
func (d *Dir) Close() error { return d.lk.Close() }

// withLock runs fn under the directory lock: exclusive for writers, shared
// for readers. A read-only Dir whose lock file does not exist yet reads
// without it: writes are atomic renames, so a reader still sees whole files.
func (d *Dir) withLock(ctx context.Context, exclusive bool, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, d.opts.LockTimeout)
	defer cancel()
	try := d.lk.TryRLockContext
	if exclusive {
		if d.opts.ReadOnly {
			return errclass.New(errclass.Internal, "write to a read-only operation directory")
		}
		try = d.lk.TryLockContext
	}
	ok, err := try(ctx, 20*time.Millisecond)
	switch {
	case err != nil && d.opts.ReadOnly && errors.Is(err, fs.ErrNotExist):
		return fn()
	case err != nil && errors.Is(err, syscall.ELOOP):
		return errclass.New(errclass.PermissionDenied, "refusing lock file %s: it is a symlink", d.lk.Path())
	case errors.Is(err, context.DeadlineExceeded) || (err == nil && !ok):
		return errclass.Newh(errclass.DeadlineExceeded,
			"another pkcshsm_mk_change may be running; try again when it is done",
			"timed out after %s waiting for the lock on %s", d.opts.LockTimeout, d.lk.Path())
	case err != nil:
		return ioErr(err, "lock %s", d.lk.Path())
	}
	defer func() {
		if err := d.lk.Unlock(); err != nil {
			d.log.Error().Err(err).Msg("failed to release the operation directory lock")
		}
	}()
	return fn()
}

// Broken describes a file that could not be read as an operation and was
// moved aside.
type Broken struct {
	Name        string // the original name
	Quarantined string // where it is now ("" in a read-only Dir)
	Err         error
}

// List returns every operation, sorted by creation time, and the files that
// could not be read. Unreadable files are moved to .broken/ (never deleted)
// and reported; they never hide the other operations.
func (d *Dir) List(ctx context.Context) ([]*Op, []Broken, error) {
	var ops []*Op
	var broken []Broken
	err := d.withLock(ctx, false, func() error {
		var err error
		ops, broken, err = d.scan()
		return err
	})
	if err != nil || len(broken) == 0 || d.opts.ReadOnly {
		return ops, broken, err
	}
	// Quarantine needs the exclusive lock; re-scan under it, since the
	// files may have been repaired or removed in between.
	err = d.withLock(ctx, true, func() error {
		var err error
		ops, broken, err = d.scan()
		if err != nil {
			return err
		}
		for i := range broken {
			broken[i].Quarantined, err = d.quarantine(broken[i].Name)
			if err != nil {
				return err
			}
			d.log.Error().Err(broken[i].Err).Str("file", broken[i].Name).
				Str("moved_to", broken[i].Quarantined).Msg("unreadable operation file quarantined")
		}
		return nil
	})
	return ops, broken, err
}

// scan reads every operation file. The caller holds the lock.
func (d *Dir) scan() ([]*Op, []Broken, error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, nil, ioErr(err, "read operation directory %s", d.path)
	}
	var ops []*Op
	var broken []Broken
	for _, e := range ents {
		name := e.Name()
		if _, err := ParseID(name); err != nil {
			continue // lock, history, temp and quarantined files
		}
		op, err := d.readOp(ID(name))
		if err != nil {
			broken = append(broken, Broken{Name: name, Err: err})
			continue
		}
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b *Op) int {
		if c := a.Created().Compare(b.Created()); c != 0 {
			return c
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	return ops, broken, nil
}

func (d *Dir) readOp(id ID) (*Op, error) {
	name := filepath.Join(d.path, string(id))
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, errclass.New(errclass.DataLoss, "operation file %s is a symlink", name)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errclass.Newh(errclass.NotFound, "'pkcshsm_mk_change list' shows the active operations",
				"HSM master key change operation '%s' not found", id)
		}
		return nil, ioErr(err, "open %s", name)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, ioErr(err, "stat %s", name)
	}
	if !fi.Mode().IsRegular() || fi.Size() > 1<<20 {
		return nil, errclass.New(errclass.DataLoss, "operation file %s is not a regular file of at most 1 MiB", name)
	}
	raw := make([]byte, fi.Size())
	if _, err := f.ReadAt(raw, 0); err != nil && fi.Size() > 0 {
		return nil, ioErr(err, "read %s", name)
	}
	op, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if op.ID != id {
		return nil, errclass.New(errclass.DataLoss, "%s: holds operation %q under another name", name, op.ID)
	}
	return op, nil
}

func (d *Dir) quarantine(name string) (string, error) {
	qdir := filepath.Join(d.path, brokenDir)
	if err := os.Mkdir(qdir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", ioErr(err, "create %s", qdir)
	}
	to := filepath.Join(qdir, fmt.Sprintf("%s.%s", name, d.opts.Now().UTC().Format("20060102T150405.000000000")))
	if err := os.Rename(filepath.Join(d.path, name), to); err != nil {
		return "", ioErr(err, "quarantine %s", name)
	}
	return to, syncDir(d.path)
}

// Load reads one operation.
func (d *Dir) Load(ctx context.Context, id ID) (*Op, error) {
	if _, err := ParseID(string(id)); err != nil {
		return nil, err
	}
	var op *Op
	err := d.withLock(ctx, false, func() error {
		var err error
		op, err = d.readOp(id)
		return err
	})
	return op, err
}

// Create stores a new operation in state INITIAL under a fresh id. The
// conflict check against every existing operation and the creation happen
// under one exclusive lock, so two concurrent creators cannot both pass.
// An unreadable existing file counts as a conflict of unknown extent: it is
// quarantined and reported, and creation is refused.
func (d *Dir) Create(ctx context.Context, op *Op) (*Op, error) {
	return d.CreateChecked(ctx, op, nil)
}

// CreateChecked is Create with a last check: verify (if not nil) runs under
// the same exclusive lock, after the conflict check and before the file is
// written, so what it re-verifies (e.g. the adapters' registers) still
// holds when the operation appears. An error from verify creates nothing.
func (d *Dir) CreateChecked(ctx context.Context, op *Op, verify func() error) (*Op, error) {
	op = op.Clone()
	op.State = Initial
	op.Transitions = nil
	if op.UID == 0 {
		op.UID = os.Getuid()
	}
	var out *Op
	err := d.withLock(ctx, true, func() error {
		existing, broken, err := d.scan()
		if err != nil {
			return err
		}
		if len(broken) > 0 {
			var errs []error
			for _, b := range broken {
				q, qerr := d.quarantine(b.Name)
				if qerr != nil {
					return qerr
				}
				errs = append(errs, fmt.Errorf("%w (moved to %s)", b.Err, q))
			}
			return errclass.Newh(errclass.DataLoss,
				"inspect the quarantined files; if they belonged to an unfinished operation, its keys may need 'pkcshsm keys restore-old'",
				"refusing to start an operation next to unreadable ones: %w", errors.Join(errs...))
		}
		var conflicts []Conflict
		for _, other := range existing {
			conflicts = append(conflicts, op.Conflicts(other)...)
		}
		if len(conflicts) > 0 {
			return &ConflictError{Conflicts: conflicts}
		}
		if verify != nil {
			if err := verify(); err != nil {
				return err
			}
		}
		for range maxIDTry {
			id, err := NewID()
			if err != nil {
				return err
			}
			if _, err := os.Lstat(filepath.Join(d.path, string(id))); err == nil {
				continue
			}
			op.ID = id
			if err := op.Move(Initial, d.opts.Now()); err != nil {
				return err
			}
			if err := d.write(op); err != nil {
				return err
			}
			out = op
			return nil
		}
		return errclass.New(errclass.Internal, "could not find a free operation id")
	})
	return out, err
}

// Update applies fn to the stored operation and saves the result, all under
// the exclusive lock (read-modify-write). fn may change anything but the id;
// state changes must follow the state machine.
func (d *Dir) Update(ctx context.Context, id ID, fn func(*Op) error) (*Op, error) {
	if _, err := ParseID(string(id)); err != nil {
		return nil, err
	}
	var out *Op
	err := d.withLock(ctx, true, func() error {
		cur, err := d.readOp(id)
		if err != nil {
			return err
		}
		next := cur.Clone()
		if err := fn(next); err != nil {
			return err
		}
		if next.ID != cur.ID {
			return errclass.New(errclass.Internal, "operation id changed from %s to %s", cur.ID, next.ID)
		}
		if !CanMove(cur.State, next.State) {
			return errclass.New(errclass.FailedPrecondition,
				"operation %s cannot move from %s to %s", id, cur.State, next.State)
		}
		if err := d.write(next); err != nil {
			return err
		}
		out = next
		return nil
	})
	return out, err
}

// Outcome is how an operation ended, as recorded in the history.
type Outcome string

// Outcomes.
const (
	Finalized  Outcome = "finalized"
	Canceled   Outcome = "canceled"
	RolledBack Outcome = "rolled-back" // a failed reencipher, undone
)

// HistoryEntry is one line of the append-only history.
type HistoryEntry struct {
	At      time.Time `json:"at"`
	Outcome Outcome   `json:"outcome"`
	UID     int       `json:"uid"`
	Op      *Op       `json:"op"`
}

// Remove ends an operation: it appends the operation and its outcome to the
// history (durably), then removes the operation file. A crash in between
// leaves the file, so the ending can be repeated; the history may then hold
// the entry twice, which readers tolerate.
func (d *Dir) Remove(ctx context.Context, id ID, outcome Outcome) error {
	if _, err := ParseID(string(id)); err != nil {
		return err
	}
	return d.withLock(ctx, true, func() error {
		op, err := d.readOp(id)
		if err != nil {
			return err
		}
		if err := d.appendHistory(HistoryEntry{At: d.opts.Now().UTC(), Outcome: outcome, UID: os.Getuid(), Op: op}); err != nil {
			return err
		}
		d.opts.crash("remove-after-history")
		if err := os.Remove(filepath.Join(d.path, string(id))); err != nil {
			return ioErr(err, "remove operation file %s", id)
		}
		return syncDir(d.path)
	})
}

// Discard removes an operation that never touched a key object (still
// INITIAL): nothing happened that the history must record. Any other state
// is refused; such an operation ends with Remove.
func (d *Dir) Discard(ctx context.Context, id ID) error {
	if _, err := ParseID(string(id)); err != nil {
		return err
	}
	return d.withLock(ctx, true, func() error {
		op, err := d.readOp(id)
		if err != nil {
			return err
		}
		if op.State != Initial {
			return errclass.New(errclass.FailedPrecondition, "operation %s is %s, not INITIAL: it must be completed, not discarded", id, op.State)
		}
		if err := os.Remove(filepath.Join(d.path, string(id))); err != nil {
			return ioErr(err, "remove operation file %s", id)
		}
		return syncDir(d.path)
	})
}

func (d *Dir) appendHistory(e HistoryEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return errclass.New(errclass.Internal, "failed to encode history entry: %w", err)
	}
	name := filepath.Join(d.path, historyName)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, fileMode)
	if err != nil {
		return ioErr(err, "open history %s", name)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		return ioErr(err, "append to history %s", name)
	}
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync history %s", name)
	}
	return nil
}

// History returns the ended operations, oldest first. Lines that do not
// parse (a torn last line after a crash) are skipped and counted.
func (d *Dir) History(ctx context.Context) (entries []HistoryEntry, skipped int, err error) {
	err = d.withLock(ctx, false, func() error {
		f, err := os.OpenFile(filepath.Join(d.path, historyName), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return ioErr(err, "open history")
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			var e HistoryEntry
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.Op == nil {
				skipped++
				continue
			}
			entries = append(entries, e)
		}
		if err := sc.Err(); err != nil {
			return ioErr(err, "read history")
		}
		return nil
	})
	return entries, skipped, err
}

// write stores op atomically and durably: temp file, fsync, rename, fsync
// of the directory. The caller holds the exclusive lock. After a crash at
// any point the file holds the old or the new content; a leftover temp file
// is ignored by readers and removed by the next write.
func (d *Dir) write(op *Op) error {
	raw, err := Encode(op)
	if err != nil {
		return err
	}
	d.cleanTemps()
	f, err := os.CreateTemp(d.path, tmpPrefix+string(op.ID)+"-")
	if err != nil {
		return ioErr(err, "create temporary file in %s", d.path)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(fileMode); err != nil {
		return ioErr(err, "chmod %s", tmp)
	}
	if _, err := f.Write(raw); err != nil {
		return ioErr(err, "write %s", tmp)
	}
	d.opts.crash("write-before-fsync")
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync %s", tmp)
	}
	if err := f.Close(); err != nil {
		return ioErr(err, "close %s", tmp)
	}
	d.opts.crash("write-before-rename")
	if err := os.Rename(tmp, filepath.Join(d.path, string(op.ID))); err != nil {
		return ioErr(err, "rename %s", tmp)
	}
	ok = true
	d.opts.crash("write-before-dirsync")
	return syncDir(d.path)
}

// cleanTemps removes temp files left by a crashed writer. The caller holds
// the exclusive lock, so no live writer owns them.
func (d *Dir) cleanTemps() {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(d.path, e.Name())); err == nil {
				d.log.Warn().Str("file", e.Name()).Msg("removed temporary file left by an interrupted write")
			}
		}
	}
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return ioErr(err, "open directory %s", path)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync directory %s", path)
	}
	return nil
}

// ioErr classifies a failed file-system call; a refused one gets a hint.
func ioErr(err error, format string, args ...any) error {
	err = errclass.FS(err, format, args...)
	if errclass.Of(err) == errclass.PermissionDenied {
		return errclass.WithHint(err, "run as the administrator who owns the state directory")
	}
	return err
}
