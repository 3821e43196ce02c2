package state

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
)

// File names inside the operation directory besides the operation files.
const (
	lockName    = ".lock"
	historyName = "history.jsonl"
	brokenDir   = ".broken"
	tmpPrefix   = ".tmp-"
	// copySuffix names the copy kept beside every operation file.
	copySuffix = ".copy"
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
	// Waiting, if set, is called once per lock wait that lasts longer
	// than a second, with a message naming the lock and its holders, so
	// a person sees why the command does not go on.
	Waiting func(msg string)

	// hook is called at named points of the write path and the locking;
	// tests kill the process or hold it there.
	hook func(point string)
	// fsyncDir replaces the directory fsync, so tests see which
	// directories were synced.
	fsyncDir func(path string) error
	// fs is the write path's file system (default osFS); the power-cut
	// tests record through it.
	fs fileSystem
}

// Dir is the operation directory. Methods are safe for concurrent use by
// goroutines (a mutex) and processes (flock on the lock file).
type Dir struct {
	path string
	opts Options
	fs   fileSystem
	log  zerolog.Logger
	mu   sync.Mutex // serialises this process's users of the lock file
}

// Open opens (and, unless read-only, creates) the operation directory.
// Symlinks are refused for the directory and everything in it. Creating
// the directory fsyncs its parent, so the directory survives a crash.
func Open(path string, opts Options) (*Dir, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.hook == nil {
		opts.hook = func(string) {}
	}
	path = filepath.Clean(path)
	if opts.fs == nil {
		opts.fs = osFS{}
	}
	d := &Dir{
		path: path,
		opts: opts,
		fs:   opts.fs,
		log:  opts.Logger.With().Str("component", "state").Logger(),
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, ioErr(err, "create %s", filepath.Dir(path))
		}
		err := os.Mkdir(path, dirMode)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, ioErr(err, "create operation directory %s", path)
		}
		if err == nil {
			if err := d.syncDir(filepath.Dir(path)); err != nil {
				return nil, err
			}
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
	if !opts.ReadOnly {
		// Create the lock file now, so permission problems show at once
		// (without taking the lock: Open never waits).
		f, err := openLockFile(d.lockPath(), true)
		if err != nil {
			return nil, err
		}
		f.Close()
	}
	return d, nil
}

// point marks a durable step of the write path: a named failpoint
// ("cli.state.<point>", see package failpoint; only the CLI writes) and
// the tests' hook.
func (d *Dir) point(name string) {
	failpoint.Hit("cli.state." + name)
	d.opts.hook(name)
}

// Path is the directory.
func (d *Dir) Path() string { return d.path }

// Close releases the Dir. Locks are only held during calls, so there is
// nothing left to release; Close exists for symmetry with Open.
func (d *Dir) Close() error { return nil }

func (d *Dir) lockPath() string { return filepath.Join(d.path, lockName) }

func (d *Dir) mainPath(id ID) string { return filepath.Join(d.path, string(id)) }

func (d *Dir) copyPath(id ID) string { return filepath.Join(d.path, string(id)+copySuffix) }

// Broken describes an operation whose file or copy could not be read.
type Broken struct {
	Name string // the file's name in the directory
	ID   ID     // the operation it belongs to
	// Recovered is true when the operation was read from its other file
	// (and, in a writable Dir, that file was rewritten): the operation is
	// in the list and nothing is lost.
	Recovered bool
	// Quarantined is where the unusable file was moved ("" if it was left
	// in place: always for an unrecoverable operation, and in a read-only
	// Dir).
	Quarantined string
	// Err says what is wrong. For an unrecovered operation it is a
	// *DamagedError (errors.As) with the operation's id.
	Err error
}

// List returns every operation, sorted by creation time, and the files that
// could not be read. An operation whose file or copy is damaged is read
// from the other one; a writable Dir then moves the damaged file to
// .broken/ and rewrites it. An operation whose file and copy are both
// unusable is reported with a *DamagedError and left in place: it is never
// treated as ended, and it never hides the other operations.
func (d *Dir) List(ctx context.Context) ([]*Op, []Broken, error) {
	var ops []*Op
	var broken []Broken
	var repairs bool
	err := d.withLock(ctx, false, func() error {
		var err error
		ops, broken, repairs, err = d.scan()
		return err
	})
	if err != nil || !repairs || d.opts.ReadOnly {
		return ops, broken, err
	}
	// Repairs need the exclusive lock; re-scan under it, since the files
	// may have been repaired or removed in between.
	err = d.withLock(ctx, true, func() error {
		var err error
		ops, broken, _, err = d.scan()
		if err != nil {
			return err
		}
		for _, op := range ops {
			r, err := d.repair(op.ID)
			if err != nil {
				return err
			}
			for i := range broken {
				if broken[i].ID == op.ID && r[broken[i].Name] != "" {
					broken[i].Quarantined = r[broken[i].Name]
				}
			}
		}
		return nil
	})
	return ops, broken, err
}

// scan reads every operation. The caller holds the lock. repairs says
// whether some operation's file or copy needs rewriting.
func (d *Dir) scan() (ops []*Op, broken []Broken, repairs bool, err error) {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return nil, nil, false, ioErr(err, "read operation directory %s", d.path)
	}
	ids := map[ID]bool{}
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), copySuffix)
		if id, err := ParseID(name); err == nil {
			ids[id] = true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		r := d.read(id)
		switch {
		case r.op != nil:
			ops = append(ops, r.op)
			repairs = repairs || r.needsRepair()
			for _, p := range r.problems() {
				broken = append(broken, Broken{Name: p.name, ID: id, Recovered: true, Err: p.err})
			}
			// Writes create the file before the copy and removals drop the
			// copy first, so a copy without its file means someone removed
			// the file: say so rather than restore it silently.
			if r.main.absent {
				broken = append(broken, Broken{Name: string(id), ID: id, Recovered: true,
					Err: errclass.Newh(errclass.DataLoss, "end an operation with finalize or cancel, never by removing its file",
						"%s is missing; operation read from its copy", d.mainPath(id))})
			}
		case r.err != nil && errclass.Of(r.err) != errclass.NotFound:
			broken = append(broken, Broken{Name: string(id), ID: id, Err: r.err})
		}
	}
	slices.SortFunc(ops, func(a, b *Op) int {
		if c := a.Created().Compare(b.Created()); c != 0 {
			return c
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	return ops, broken, repairs, nil
}

// fileRead is the outcome of reading one of an operation's two files.
type fileRead struct {
	name   string // base name
	op     *Op
	err    error // nil if op is set
	absent bool
}

// opRead is the outcome of reading an operation: the op (from whichever
// file is valid and newest) or the error, and what each file held.
type opRead struct {
	op         *Op
	err        error
	main, copy fileRead
}

// problems lists the files that are present but unusable.
func (r opRead) problems() []fileRead {
	var out []fileRead
	for _, f := range []fileRead{r.main, r.copy} {
		if f.err != nil && !f.absent {
			out = append(out, f)
		}
	}
	return out
}

// needsRepair says whether a file is missing, unusable or older than the
// other.
func (r opRead) needsRepair() bool {
	return r.op != nil && (r.main.op == nil || r.copy.op == nil || r.main.op.Gen != r.copy.op.Gen)
}

// read reads an operation from its file and its copy. The caller holds
// the lock. The valid one with the higher generation wins: a write
// replaces the file, then the copy, so the two differ only between those
// renames, and then the file is the newer.
func (d *Dir) read(id ID) opRead {
	r := opRead{main: d.readOne(id, d.mainPath(id)), copy: d.readOne(id, d.copyPath(id))}
	switch m, c := r.main.op, r.copy.op; {
	case m != nil && c != nil && c.Gen > m.Gen:
		r.op = c
	case m != nil:
		r.op = m
	case c != nil:
		r.op = c
	case r.main.absent && r.copy.absent:
		r.err = errclass.Newh(errclass.NotFound, "'pkcshsm_mk_change list' shows the active operations",
			"HSM master key change operation '%s' not found", id)
	default:
		var errs []error
		for _, f := range r.problems() {
			errs = append(errs, f.err)
		}
		if r.copy.absent {
			errs = append(errs, fmt.Errorf("%s: missing", d.copyPath(id)))
		}
		if r.main.absent {
			errs = append(errs, fmt.Errorf("%s: missing", d.mainPath(id)))
		}
		r.err = errclass.WithHint(&DamagedError{ID: id, Problems: errs}, damagedHint(d.path, id))
	}
	if r.op != nil && len(r.problems()) > 0 {
		for _, p := range r.problems() {
			d.log.Warn().Err(p.err).Str("op", string(id)).Msg("operation file unusable; read its other copy")
		}
	}
	return r
}

func (d *Dir) readOne(id ID, name string) fileRead {
	f := fileRead{name: filepath.Base(name)}
	raw, err := readRegular(name)
	if err != nil {
		f.err, f.absent = err, errclass.Of(err) == errclass.NotFound
		return f
	}
	op, err := Decode(raw)
	if err != nil {
		f.err = fmt.Errorf("%s: %w", name, err)
		return f
	}
	if op.ID != id {
		f.err = errclass.New(errclass.DataLoss, "%s: holds operation %q under another name", name, op.ID)
		return f
	}
	f.op = op
	return f
}

// readOp returns the operation or the error of read.
func (d *Dir) readOp(id ID) (*Op, error) {
	r := d.read(id)
	return r.op, r.err
}

// repair makes an operation's file and copy both hold its newest valid
// generation: an unusable file is moved to .broken/ first (never
// deleted), then the missing or stale ones are rewritten. It returns where
// each quarantined file went. The caller holds the exclusive lock.
func (d *Dir) repair(id ID) (map[string]string, error) {
	r := d.read(id)
	if r.op == nil || !r.needsRepair() {
		return nil, nil
	}
	moved := map[string]string{}
	for _, p := range r.problems() {
		q, err := d.quarantine(p.name)
		if err != nil {
			return nil, err
		}
		moved[p.name] = q
		d.log.Error().Err(p.err).Str("file", p.name).Str("moved_to", q).Msg("damaged operation file quarantined and rewritten from its copy")
	}
	raw, err := Encode(r.op)
	if err != nil {
		return nil, err
	}
	d.cleanTemps()
	if r.main.op == nil || r.main.op.Gen != r.op.Gen {
		if err := d.writeFile(d.mainPath(id), raw, "repair"); err != nil {
			return nil, err
		}
	}
	if r.copy.op == nil || r.copy.op.Gen != r.op.Gen {
		if err := d.writeFile(d.copyPath(id), raw, "repair"); err != nil {
			return nil, err
		}
	}
	return moved, nil
}

// quarantine moves a file of the directory to .broken/ with a timestamp.
// Both directories are fsynced: the entry leaves one and enters the other,
// and a crash must not lose the file from both.
func (d *Dir) quarantine(name string) (string, error) {
	qdir := filepath.Join(d.path, brokenDir)
	err := d.fs.Mkdir(qdir, dirMode)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return "", ioErr(err, "create %s", qdir)
	}
	if err == nil {
		if err := d.syncDir(d.path); err != nil {
			return "", err
		}
	}
	base := filepath.Join(qdir, fmt.Sprintf("%s.%s", name, d.opts.Now().UTC().Format("20060102T150405.000000000")))
	to := base
	// Never overwrite an earlier quarantined file (the caller holds the
	// exclusive lock, so nobody else picks a name meanwhile).
	for i := 1; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			break
		}
		to = fmt.Sprintf("%s-%d", base, i)
	}
	if err := d.fs.Rename(filepath.Join(d.path, name), to); err != nil {
		return "", ioErr(err, "quarantine %s", name)
	}
	d.point("quarantine-before-dirsync")
	if err := d.syncDir(qdir); err != nil {
		return "", err
	}
	return to, d.syncDir(d.path)
}

// Load reads one operation. A damaged file is read from its copy (and
// left for a writer to repair); if both are unusable, the error is a
// *DamagedError.
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
// An unreadable existing operation counts as a conflict of unknown extent:
// creation is refused.
func (d *Dir) Create(ctx context.Context, op *Op) (*Op, error) {
	out, c, err := d.CreateClaimed(ctx, op, "")
	c.Release()
	return out, err
}

// CreateClaimed is [Dir.Create] that also takes the new operation's claim
// for command before the operation becomes visible, so no other command
// can start on it in between.
func (d *Dir) CreateClaimed(ctx context.Context, op *Op, command string) (*Op, *Claim, error) {
	return d.CreateClaimedChecked(ctx, op, command, nil)
}

// CreateClaimedChecked is CreateClaimed with a last check: verify (if not
// nil) runs under the same exclusive lock, after the conflict check and
// before the file is written, so what it re-verifies (e.g. the adapters'
// registers) still holds when the operation appears. An error from verify
// creates nothing.
func (d *Dir) CreateClaimedChecked(ctx context.Context, op *Op, command string, verify func() error) (*Op, *Claim, error) {
	op = op.Clone()
	op.State = Initial
	op.Transitions = nil
	op.Gen = 0
	if op.UID == 0 {
		op.UID = os.Getuid()
	}
	var out *Op
	var claim *Claim
	err := d.withLock(ctx, true, func() error {
		existing, broken, _, err := d.scan()
		if err != nil {
			return err
		}
		var errs []error
		for _, b := range broken {
			if !b.Recovered {
				errs = append(errs, b.Err)
			}
		}
		if len(errs) > 0 {
			return errclass.Newh(errclass.DataLoss,
				"repair the unreadable operation first (pkcshsm_mk_change list shows how)",
				"refusing to start an operation next to an unreadable one: %w", errors.Join(errs...))
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
		d.point("create-checked")
		for range maxIDTry {
			id, err := NewID()
			if err != nil {
				return err
			}
			if _, err := os.Lstat(d.mainPath(id)); err == nil {
				continue
			}
			if _, err := os.Lstat(d.copyPath(id)); err == nil {
				continue
			}
			op.ID = id
			if err := op.Move(Initial, d.opts.Now()); err != nil {
				return err
			}
			if command != "" {
				if claim, err = d.Claim(ctx, id, command); err != nil {
					return err
				}
			}
			if err := d.write(op); err != nil {
				claim.Release()
				claim = nil
				return err
			}
			out = op
			return nil
		}
		return errclass.New(errclass.Internal, "could not find a free operation id")
	})
	return out, claim, err
}

// Update applies fn to the stored operation and saves the result, all under
// the exclusive lock (read-modify-write). fn may change anything but the id;
// state changes must follow the state machine. An operation that no longer
// exists is an error of class NotFound.
func (d *Dir) Update(ctx context.Context, id ID, fn func(*Op) error) (*Op, error) {
	if _, err := ParseID(string(id)); err != nil {
		return nil, err
	}
	var out *Op
	err := d.withLock(ctx, true, func() error {
		r := d.read(id)
		if r.err != nil {
			return r.err
		}
		cur := r.op
		for _, p := range r.problems() {
			if _, err := d.quarantine(p.name); err != nil {
				return err
			}
		}
		next := cur.Clone()
		if err := fn(next); err != nil {
			return err
		}
		if next.ID != cur.ID {
			return errclass.New(errclass.Internal, "operation id changed from %s to %s", cur.ID, next.ID)
		}
		if !cur.CanMove(next.State) {
			return errclass.New(errclass.FailedPrecondition,
				"operation %s cannot move from %s to %s", id, cur.State, next.State)
		}
		next.Gen = cur.Gen + 1
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
// history (durably), then removes the copy, then the operation file. A
// crash in between leaves the file, so the ending can be repeated; the
// history may then hold the entry twice, which readers tolerate. The copy
// goes first: a copy alone would bring an ended operation back.
func (d *Dir) Remove(ctx context.Context, id ID, outcome Outcome) error {
	if _, err := ParseID(string(id)); err != nil {
		return err
	}
	return d.withLock(ctx, true, func() error {
		r := d.read(id)
		if r.err != nil {
			return r.err
		}
		for _, p := range r.problems() {
			if _, err := d.quarantine(p.name); err != nil {
				return err
			}
		}
		if err := d.appendHistory(HistoryEntry{At: d.opts.Now().UTC(), Outcome: outcome, UID: os.Getuid(), Op: r.op}); err != nil {
			return err
		}
		d.point("remove-after-history")
		if err := d.fs.Remove(d.copyPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ioErr(err, "remove operation file copy %s", d.copyPath(id))
		}
		if err := d.syncDir(d.path); err != nil {
			return err
		}
		d.point("remove-after-copy")
		if err := d.fs.Remove(d.mainPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return ioErr(err, "remove operation file %s", id)
		}
		// The claim file goes last; its holder (if any) keeps its flock on
		// the removed inode until it exits.
		os.Remove(d.claimPath(id))
		return d.syncDir(d.path)
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
		r := d.read(id)
		if r.err != nil {
			return r.err
		}
		if r.op.State != Initial {
			return errclass.New(errclass.FailedPrecondition, "operation %s is %s, not INITIAL: it must be completed, not discarded", id, r.op.State)
		}
		for _, p := range []string{d.copyPath(id), d.mainPath(id)} {
			if err := d.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return ioErr(err, "remove operation file %s", p)
			}
		}
		os.Remove(d.claimPath(id))
		return d.syncDir(d.path)
	})
}

func (d *Dir) appendHistory(e HistoryEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return errclass.New(errclass.Internal, "failed to encode history entry: %w", err)
	}
	name := filepath.Join(d.path, historyName)
	f, err := d.fs.OpenAppend(name, fileMode)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return notRegular(name, fs.ModeSymlink)
		}
		return ioErr(err, "open history %s", name)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		if err != nil {
			return ioErr(err, "stat %s", name)
		}
		return notRegular(name, fi.Mode())
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return ioErr(err, "append to history %s", name)
	}
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync history %s", name)
	}
	return nil
}

// History returns the ended operations, oldest first. Lines that do not
// parse (a torn last line after a crash) are skipped and counted. The
// history is read whole; a history larger than 64 MiB is refused.
func (d *Dir) History(ctx context.Context) (entries []HistoryEntry, skipped int, err error) {
	err = d.withLock(ctx, false, func() error {
		raw, err := readHistory(filepath.Join(d.path, historyName))
		if errclass.Of(err) == errclass.NotFound {
			return nil
		}
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(raw))
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

// readHistory reads the history like readRegular reads an operation file
// (never blocking, never following a link), with a larger bound.
func readHistory(name string) ([]byte, error) {
	fi, err := os.Lstat(name)
	if err != nil {
		return nil, ioErr(err, "stat %s", name)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(name, fi.Mode())
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, ioErr(err, "open %s", name)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		if err != nil {
			return nil, ioErr(err, "stat %s", name)
		}
		return nil, notRegular(name, fi.Mode())
	}
	const maxHistory = 64 << 20
	if fi.Size() > maxHistory {
		return nil, errclass.New(errclass.DataLoss, "%s has %d bytes, more than %d", name, fi.Size(), maxHistory)
	}
	buf := make([]byte, fi.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && n != len(buf) {
		return nil, ioErr(err, "read %s", name)
	}
	return buf[:n], nil
}

// write stores op atomically and durably, first as the operation file,
// then as its copy, each by temp file, fsync, rename and fsync of the
// directory. The caller holds the exclusive lock. After a crash at any
// point each file holds exactly its old or its new content, and at least
// one holds the new content once the first rename is done; a leftover temp
// file is ignored by readers and removed by the next write.
func (d *Dir) write(op *Op) error {
	if op.Gen == 0 {
		op.Gen = 1
	}
	raw, err := Encode(op)
	if err != nil {
		return err
	}
	d.cleanTemps()
	if err := d.writeFile(d.mainPath(op.ID), raw, "write"); err != nil {
		return err
	}
	return d.writeFile(d.copyPath(op.ID), raw, "copy")
}
