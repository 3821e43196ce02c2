package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The plain-SQLite reference of a master key change pass, for the
// benchmarks (docs/bench.md): how fast this driver, with the store's
// connection settings (WAL, synchronous FULL, the same pragmas), can read
// and rewrite rows shaped like the blob table's, paging and committing
// the way a pass does. It has no sealing, no HSM and no objects: the
// limit a pass over the same rows could reach.

// RowShape is the mean size in bytes of the blob table's blobs and mk
// columns, and the number of rows.
type RowShape struct {
	Rows        int
	Blobs, Summ float64
}

// BlobRowShape reports the blob table's row shape now.
func (s *Store) BlobRowShape(ctx context.Context) (RowShape, error) {
	var r RowShape
	var b, m sql.NullFloat64
	err := s.rdb.QueryRowContext(ctx, `SELECT count(*), avg(coalesce(length(blobs), 0)), avg(coalesce(length(mk), 0)) FROM blob`).Scan(&r.Rows, &b, &m)
	if err != nil {
		return r, classifyDB(fmt.Errorf("blob row shape: %w", err))
	}
	r.Blobs, r.Summ = b.Float64, m.Float64
	return r, nil
}

// PlainResult is what PlainRewrite measured: the timed part only (the
// rewrite, not filling the table).
type PlainResult struct {
	Rows int
	Wall time.Duration
	// CPU is the process's user+system time over the rewrite (the
	// caller should run nothing else meanwhile).
	CPU time.Duration
}

// PlainRewrite makes a database in dir (which must not exist) with the
// store's connection settings and one table of shape.Rows rows shaped like
// shape (handle, version, blobs, mk), then rewrites every row once the way
// a pass does, timed: pages of page rows in handle order, each read in
// one read transaction, written in durable write transactions of chunk
// rows each, every row by a prepared UPDATE that checks its version
// (blobs and mk replaced by new values of the same sizes). The caller
// removes dir.
func PlainRewrite(ctx context.Context, dir string, shape RowShape, page, chunk int) (PlainResult, error) {
	if shape.Rows <= 0 || page <= 0 || chunk <= 0 {
		return PlainResult{}, errclass.New(errclass.InvalidArgument, "plain rewrite: rows %d, page %d, chunk %d must be positive", shape.Rows, page, chunk)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return PlainResult{}, fmt.Errorf("plain rewrite: %w", err)
	}
	path := filepath.Join(dir, "plain.db")
	rdb, err := sql.Open("sqlite", dsn(path, 5*time.Second, "deferred"))
	if err != nil {
		return PlainResult{}, err
	}
	defer rdb.Close()
	wdb, err := sql.Open("sqlite", dsn(path, 5*time.Second, "immediate"))
	if err != nil {
		return PlainResult{}, err
	}
	defer wdb.Close()
	wdb.SetMaxOpenConns(1)
	if _, err := wdb.ExecContext(ctx, `CREATE TABLE blob (handle INTEGER PRIMARY KEY, version INTEGER NOT NULL, blobs BLOB, mk BLOB)`); err != nil {
		return PlainResult{}, err
	}
	blobLen, mkLen := int(shape.Blobs+0.5), int(shape.Summ+0.5)
	value := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	for start := 0; start < shape.Rows; start += 5000 {
		tx, err := wdb.BeginTx(ctx, nil)
		if err != nil {
			return PlainResult{}, err
		}
		for h := start + 1; h <= min(shape.Rows, start+5000); h++ {
			if _, err := tx.ExecContext(ctx, `INSERT INTO blob (handle, version, blobs, mk) VALUES (?, 1, ?, ?)`, h, value(blobLen), value(mkLen)); err != nil {
				tx.Rollback()
				return PlainResult{}, err
			}
		}
		if err := tx.Commit(); err != nil {
			return PlainResult{}, err
		}
	}
	sel, err := rdb.PrepareContext(ctx, `SELECT handle, version, blobs FROM blob WHERE handle > ? ORDER BY handle LIMIT ?`)
	if err != nil {
		return PlainResult{}, err
	}
	defer sel.Close()
	upd, err := wdb.PrepareContext(ctx, `UPDATE blob SET version = ?, blobs = ?, mk = ? WHERE handle = ? AND version = ?`)
	if err != nil {
		return PlainResult{}, err
	}
	defer upd.Close()
	type row struct {
		handle, version int64
		blobs           []byte
	}
	newMK := value(mkLen)
	start, cpu := time.Now(), cpuTime()
	var after int64
	n := 0
	for {
		rows, err := sel.QueryContext(ctx, after, page)
		if err != nil {
			return PlainResult{}, err
		}
		var got []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.handle, &r.version, &r.blobs); err != nil {
				rows.Close()
				return PlainResult{}, err
			}
			r.blobs[0]++ // the "transform": a new value of the same size
			got = append(got, r)
		}
		if err := rows.Err(); err != nil {
			return PlainResult{}, err
		}
		rows.Close()
		if len(got) == 0 {
			break
		}
		for c := 0; c < len(got); c += chunk {
			tx, err := wdb.BeginTx(ctx, nil)
			if err != nil {
				return PlainResult{}, err
			}
			st := tx.StmtContext(ctx, upd)
			for _, r := range got[c:min(c+chunk, len(got))] {
				res, err := st.ExecContext(ctx, r.version+1, r.blobs, newMK, r.handle, r.version)
				if err == nil {
					if k, _ := res.RowsAffected(); k != 1 {
						err = fmt.Errorf("row %d: %d rows updated", r.handle, k)
					}
				}
				if err != nil {
					tx.Rollback()
					return PlainResult{}, err
				}
			}
			if err := tx.Commit(); err != nil {
				return PlainResult{}, err
			}
			n += min(chunk, len(got)-c)
		}
		after = got[len(got)-1].handle
	}
	return PlainResult{Rows: n, Wall: time.Since(start), CPU: cpuTime() - cpu}, nil
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
