package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Problems found by [Store.Check] are at most this many, each listed.
const maxCheckProblems = 5

// Check verifies the database before a master key change records
// anything: SQLite's own structural check (PRAGMA quick_check: every page
// reachable, every b-tree and index in order), the schema version this
// program writes, the token record and the USER PIN's wrap of the data
// key, and, when dk is not nil, that dk is the token's current data key.
// A database cut short or overwritten in the middle fails here instead of
// in the middle of a pass. The error is of class DataLoss and lists what is
// wrong; nothing is written.
func (s *Store) Check(ctx context.Context, dk *DataKey) error {
	if s.damaged != nil {
		return s.damaged
	}
	var problems []string
	rows, err := s.rdb.QueryContext(ctx, fmt.Sprintf(`PRAGMA quick_check(%d)`, maxCheckProblems))
	if err != nil {
		return s.checkFailed(classifyDB(fmt.Errorf("run the integrity check: %w", err)))
	}
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			rows.Close()
			return s.checkFailed(classifyDB(fmt.Errorf("read the integrity check: %w", err)))
		}
		if msg != "ok" {
			problems = append(problems, msg)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return s.checkFailed(classifyDB(fmt.Errorf("run the integrity check: %w", err)))
	}
	var v int
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return s.checkFailed(classifyDB(fmt.Errorf("read the schema version: %w", err)))
	}
	if v != SchemaVersion() {
		problems = append(problems, fmt.Sprintf("schema version %d, this program writes %d", v, SchemaVersion()))
	}
	st, err := s.readState(ctx, s.rdb)
	if err != nil {
		return s.checkFailed(err)
	}
	switch {
	case !st.initialized:
		problems = append(problems, "the token is not initialized")
	case len(st.dkID) == 0:
		problems = append(problems, "the token record names no data key")
	case st.pins[User] == nil || len(st.pins[User].wrapped) == 0:
		problems = append(problems, "no USER PIN wraps the data key")
	}
	if len(problems) > 0 {
		return s.checkFailed(errors.New(strings.Join(problems, "; ")))
	}
	if dk != nil {
		if err := s.checkKey(ctx, s.rdb, dk); err != nil {
			return s.checkFailed(err)
		}
	}
	return nil
}

func (s *Store) checkFailed(err error) error {
	return errclass.Newh(errclass.DataLoss, "restore the token from its last backup ('pkcshsm token restore'), then run the command again",
		"token store %s failed its integrity check: %w", s.path, err)
}

// Backup writes a consistent copy of the database to dest, while other
// processes go on using the token: SQLite's VACUUM INTO reads one snapshot
// (a read transaction: writers are not blocked and their later commits are
// not in the copy) and writes a compact database. The copy goes to a
// temporary file beside dest, which is checked (quick_check), fsynced,
// renamed to dest and its directory fsynced: dest is either absent or the
// complete backup, also after a power cut. dest must not exist; it gets
// mode 0600 (it holds the sealed objects and the PIN wraps). A damaged
// store is refused: its backup would not restore anything better.
func (s *Store) Backup(ctx context.Context, dest string) error {
	if err := s.Check(ctx, nil); err != nil {
		return err
	}
	dest = filepath.Clean(dest)
	if _, err := os.Lstat(dest); err == nil {
		return errclass.Newh(errclass.InvalidArgument, "name a file that does not exist yet", "backup file %s exists", dest)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return errclass.FS(err, "backup file %s", dest)
	}
	dir := filepath.Dir(dest)
	f, err := os.CreateTemp(dir, ".pkcshsm-backup-*")
	if err != nil {
		return errclass.FS(err, "create a temporary file in %s", dir)
	}
	tmp := f.Name()
	f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	// VACUUM INTO refuses an existing non-empty file; an empty one is
	// taken over, so the temp file keeps its name and its mode 0600.
	if _, err := s.rdb.ExecContext(ctx, `VACUUM INTO ?`, tmp); err != nil {
		return classifyDB(fmt.Errorf("back up token store %s to %s: %w", s.path, tmp, err))
	}
	if err := checkFile(ctx, tmp); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return errclass.FS(err, "rename %s to %s", tmp, dest)
	}
	ok = true
	return syncDir(dir)
}

// CheckFile checks a database file that no store has open (a backup):
// quick_check, the schema version and an initialized token record. It
// opens the file read-only and changes nothing.
func CheckFile(ctx context.Context, path string) error { return checkFile(ctx, path) }

func checkFile(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return errclass.FS(err, "backup %s", path)
	}
	if !fi.Mode().IsRegular() {
		return errclass.New(errclass.InvalidArgument, "backup %s is not a regular file", path)
	}
	u := url.URL{Path: path}
	db, err := sql.Open("sqlite", "file:"+u.EscapedPath()+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		return errclass.New(errclass.Internal, "open %s: %w", path, err)
	}
	defer db.Close()
	bad := func(err error) error {
		return errclass.Newh(errclass.DataLoss, "use another backup", "%s is not a usable token backup: %w", path, err)
	}
	var msg string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check(1)`).Scan(&msg); err != nil {
		return bad(err)
	}
	if msg != "ok" {
		return bad(errors.New(msg))
	}
	var v, init int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return bad(err)
	}
	if v < 1 || v > SchemaVersion() {
		return bad(fmt.Errorf("schema version %d, this program knows 1 to %d", v, SchemaVersion()))
	}
	if err := db.QueryRowContext(ctx, `SELECT initialized FROM token WHERE id = 1`).Scan(&init); err != nil {
		return bad(fmt.Errorf("no token record: %w", err))
	}
	if init == 0 {
		return bad(errors.New("the token in it is not initialized"))
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return errclass.FS(err, "open %s", path)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return errclass.FS(err, "sync %s", path)
	}
	return nil
}

func syncDir(path string) error { return syncFile(path) }
