package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The journal of master key change passes.
//
// An operation file can be restored from an older backup, or otherwise
// disagree with the keys. So that the keys have the last word, every
// page a master key change pass commits records, in the same transaction,
// which operation and which action (reencipher, finalize, cancel) last
// touched the token, and a completed pass says so ([Store.JournalDone]).
// One row: the last pass is what a cross-check needs.

// Journal is the last master key change pass that touched the token.
type Journal struct {
	Op, Action string
	// Done: that pass completed. Pages counts the pages it (and earlier
	// passes of the same operation and action) committed.
	Done    bool
	Pages   int
	Updated time.Time
}

// Journal records, inside the transaction, that a page of action of
// operation op is committed: the pass is not done yet.
func (t *Tx) Journal(op, action string) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO journal (id, op, action, done, pages, updated) VALUES (1, ?, ?, 0, 1, ?)
	ON CONFLICT (id) DO UPDATE SET
		pages = CASE WHEN op = excluded.op AND action = excluded.action THEN pages + 1 ELSE 1 END,
		op = excluded.op, action = excluded.action, done = 0, updated = excluded.updated`,
		op, action, time.Now().Unix())
	if err != nil {
		return classifyDB(fmt.Errorf("record the master key change pass: %w", err))
	}
	return nil
}

// JournalDone records that the pass of action of operation op completed.
func (s *Store) JournalDone(ctx context.Context, op, action string) error {
	return s.writeTx(ctx, func(r *runner) error {
		_, err := r.ExecContext(ctx, `INSERT INTO journal (id, op, action, done, pages, updated) VALUES (1, ?, ?, 1, 0, ?)
		ON CONFLICT (id) DO UPDATE SET
			pages = CASE WHEN op = excluded.op AND action = excluded.action THEN pages ELSE 0 END,
			op = excluded.op, action = excluded.action, done = 1, updated = excluded.updated`,
			op, action, time.Now().Unix())
		if err != nil {
			return classifyDB(fmt.Errorf("record the end of the master key change pass: %w", err))
		}
		return nil
	})
}

// LastPass returns the journal; ok is false when no pass ever touched
// the token.
func (s *Store) LastPass(ctx context.Context) (j Journal, ok bool, err error) {
	var done, pages, updated int64
	err = s.rdb.QueryRowContext(ctx, `SELECT op, action, done, pages, updated FROM journal WHERE id = 1`).
		Scan(&j.Op, &j.Action, &done, &pages, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Journal{}, false, nil
	}
	if err != nil {
		return Journal{}, false, classifyDB(fmt.Errorf("read the master key change journal of %s: %w", s.path, err))
	}
	j.Done, j.Pages, j.Updated = done != 0, int(pages), time.Unix(updated, 0)
	return j, true, nil
}
