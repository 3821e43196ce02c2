package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The writers' gate.
//
// SQLite lets one write transaction run at a time; a writer that finds the
// lock taken polls it from its busy handler, sleeping up to 100 ms between
// tries. Against a bulk writer that commits transaction after transaction
// (a master key change pass) such a writer can miss every short gap and
// wait for seconds. The gate gives ordinary writers precedence: every
// write transaction of a Store holds the file <dir>/token.db-gate locked
// SHARED (flock(2)), a low-priority batch ([Store.BatchLow]) holds it
// EXCLUSIVE and then yields for gateYield. So while an application waits
// to write, the pass cannot start its next transaction; and an application
// that arrives during one of the pass's transactions finds the gate free
// within one poll (gatePoll) after it ends. The kernel releases the lock of
// a process that dies; a stopped holder makes others wait up to the busy
// timeout and fail as unavailable, as a held SQLite lock does.
const (
	gateSuffix = "-gate"
	gatePoll   = 200 * time.Microsecond
	gateYield  = 400 * time.Microsecond
)

// openGate opens (creating, mode 0660) the gate file next to the database;
// nil, without error, if the process may neither create nor open it (it
// then writes without the gate).
func openGate(path string) (*os.File, error) {
	p := path + gateSuffix
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		return nil, errclass.Newh(errclass.PermissionDenied, "remove it; pkcshsm re-creates it",
			"writers' gate %s is not a regular file", p)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o660)
	if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// A reader without write access, or a read-only file system:
		// the gate is shared-locked read-only, or not at all.
		f, err = os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	}
	if errors.Is(err, os.ErrPermission) || errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, errclass.New(errclass.Unavailable, "open writers' gate %s: %w", filepath.Base(p), err)
	}
	return f, nil
}

// lockGate takes the gate SHARED or EXCLUSIVE, polling every gatePoll up
// to the busy timeout or the context's end.
func (s *Store) lockGate(ctx context.Context, exclusive bool) error {
	if s.gate == nil {
		return nil
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	deadline := time.Now().Add(s.opts.BusyTimeout)
	for {
		err := unix.Flock(int(s.gate.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EBADF): // the store was closed
			return classifyDB(fmt.Errorf("token store %s: %w", s.path, sql.ErrConnDone))
		case !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR):
			return errclass.New(errclass.Unavailable, "lock writers' gate of %s: %w", s.path, err)
		case ctx.Err() != nil:
			return classifyDB(ctx.Err())
		case time.Now().After(deadline):
			return errclass.Newh(errclass.Unavailable, "another process holds the token's write lock; look for a stopped or hung process using the token",
				"token store %s: waited %s for the writers' gate", s.path, s.opts.BusyTimeout)
		}
		time.Sleep(gatePoll)
	}
}

func (s *Store) unlockGate() {
	if s.gate != nil {
		_ = unix.Flock(int(s.gate.Fd()), unix.LOCK_UN)
	}
}

// BatchLow is [Store.Batch] at low priority, for bulk writers such as a
// master key change pass: it waits until no other writer of any process
// waits or writes, and yields briefly after its transaction, so that
// applications' writes are never queued behind a series of bulk
// transactions (see the writers' gate above).
func (s *Store) BatchLow(ctx context.Context, dk *DataKey, fn func(tx *Tx) error) error {
	return s.batch(ctx, dk, fn, true)
}

// BatchLowBusy is [Store.BatchLow] that also reports whether another
// writer of any process held or waited for the writers' gate when it
// began: a bulk writer sizes its transactions by it.
func (s *Store) BatchLowBusy(ctx context.Context, dk *DataKey, fn func(tx *Tx) error) (bool, error) {
	busy := s.gateBusy()
	return busy, s.batch(ctx, dk, fn, true)
}

// gateBusy reports whether the gate is locked by another open file (a
// writer inside or waiting), with one non-blocking try that is undone at
// once.
func (s *Store) gateBusy() bool {
	if s.gate == nil {
		return false
	}
	err := unix.Flock(int(s.gate.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		_ = unix.Flock(int(s.gate.Fd()), unix.LOCK_UN)
		return false
	}
	return errors.Is(err, unix.EWOULDBLOCK)
}
