package store

import (
	"context"
	"database/sql"
)

// Prepared statements. Parsing SQL is a third of the cost of a small
// statement in the pure-Go SQLite, so the read pool prepares each query
// text once and reuses it, and a write transaction prepares each text once
// per transaction on its own connection (a batch of thousands of updates
// parses its UPDATE once). Write statements are never prepared on the write
// pool itself: its single connection is busy for the whole transaction, and
// a prepare there would wait for it forever.

// maxCachedStmts bounds the cache: List builds its query from the filter,
// and unusual filters need not stay prepared.
const maxCachedStmts = 64

func (s *Store) cachedStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	s.stmtMu.Lock()
	st, ok := s.stmts[query]
	full := len(s.stmts) >= maxCachedStmts
	s.stmtMu.Unlock()
	if ok || full {
		return st, nil
	}
	// Prepare without holding the mutex: it may wait for a connection.
	st, err := s.rdb.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	if prev, ok := s.stmts[query]; ok {
		st.Close()
		return prev, nil
	}
	s.stmts[query] = st
	return st, nil
}

func (s *Store) closeStmts() {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
}

// runner runs queries on a pool or inside a transaction with prepared
// statements. It satisfies querier.
type runner struct {
	s       *Store
	db      *sql.DB
	tx      *sql.Tx
	txStmts map[string]*sql.Stmt
}

func (s *Store) reader() *runner { return &runner{s: s, db: s.rdb} }

func (s *Store) inTx(tx *sql.Tx) *runner { return &runner{s: s, db: s.wdb, tx: tx} }

// prepared returns a statement for query, or nil to run it unprepared (the
// error, if any, then comes from the unprepared run).
func (r *runner) prepared(ctx context.Context, query string) *sql.Stmt {
	if r.tx == nil {
		st, err := r.s.cachedStmt(ctx, query)
		if err != nil {
			return nil
		}
		return st
	}
	if st, ok := r.txStmts[query]; ok {
		return st
	}
	if len(r.txStmts) >= maxCachedStmts {
		return nil
	}
	st, err := r.tx.PrepareContext(ctx, query) // closed with the transaction
	if err != nil {
		return nil
	}
	if r.txStmts == nil {
		r.txStmts = map[string]*sql.Stmt{}
	}
	r.txStmts[query] = st
	return st
}

func (r *runner) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := r.prepared(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	if r.tx != nil {
		return r.tx.QueryContext(ctx, query, args...)
	}
	return r.db.QueryContext(ctx, query, args...)
}

func (r *runner) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := r.prepared(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	if r.tx != nil {
		return r.tx.QueryRowContext(ctx, query, args...)
	}
	return r.db.QueryRowContext(ctx, query, args...)
}

func (r *runner) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := r.prepared(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	if r.tx != nil {
		return r.tx.ExecContext(ctx, query, args...)
	}
	return r.db.ExecContext(ctx, query, args...)
}
