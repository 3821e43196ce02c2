package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The master key summary.
//
// Whether a master key can be activated without losing a key depends on
// the blobs of every key object, and a private object's blobs are sealed
// under the USER's data key. The patterns a blob carries are no secret
// (the adapters publish them), so the store keeps, next to each object, a
// summary its owner computes from the blobs ([Options.Summary]) in the
// same statement that writes them: [Store.Census] reads the summaries of
// every object without a PIN, for `pkcshsm_mk_change verify` and `list`.
//
// The summary is NULL (not recorded) for objects written by an older
// release or by a store without Options.Summary; Census then reports the
// object's attribute types, which are stored in the clear even for a
// private object, and for a public object its clear values, so the caller
// can still decide conservatively.

// summary returns the summary column value for o and whether an Update
// must write it (false: keep the stored one, which describes attributes
// the partial object o did not load and does not change).
func (s *Store) summary(o *Object) ([]byte, bool) {
	if s.opts.Summary == nil {
		return nil, true // not recorded: a stale summary must not survive
	}
	if o.partial {
		for _, t := range s.opts.SummaryAttrs {
			if _, loaded := o.Attrs[t]; loaded {
				continue
			}
			if _, kept := findRaw(o.keep, t); kept {
				return nil, false
			}
		}
	}
	return s.opts.Summary(o.Attrs), true
}

// CensusRow is one object as [Store.Census] sees it without a data key.
type CensusRow struct {
	Handle  uint64
	Class   uint
	Private bool
	// Summary is the stored master key summary; nil when not recorded.
	Summary []byte
	// Types lists the object's attribute types (only when Summary is nil);
	// Clear holds its values when the object is public (else nil).
	Types []uint32
	Clear map[uint32][]byte
}

// Census calls fn for every object of one of classes (all objects when
// classes is empty), in handle order, without a data key and without
// opening a sealed value. It reads in one read transaction, so the rows
// are one consistent state of the token.
func (s *Store) Census(ctx context.Context, classes []uint, fn func(CensusRow) error) error {
	q := `SELECT o.handle, o.class, o.private, b.mk, CASE WHEN b.mk IS NULL THEN o.attrs END, CASE WHEN b.mk IS NULL THEN b.blobs END
		FROM object o LEFT JOIN blob b ON b.handle = o.handle`
	var args []any
	if len(classes) > 0 {
		ph := make([]string, 0, len(classes))
		for _, c := range classes {
			if uint64(c) <= math.MaxInt64 {
				ph = append(ph, "?")
				args = append(args, int64(c))
			}
		}
		if len(ph) == 0 {
			return nil
		}
		q += ` WHERE o.class IN (` + strings.Join(ph, ",") + `)`
	}
	q += ` ORDER BY o.handle`
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return classifyDB(fmt.Errorf("census of %s: %w", s.path, err))
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return classifyDB(fmt.Errorf("census of %s: %w", s.path, err))
	}
	defer rows.Close()
	var r rawObject
	for rows.Next() {
		var (
			handle, class int64
			priv          int
			mk, attrs     []byte
			blobs         []byte
		)
		if err := rows.Scan(&handle, &class, &priv, &mk, &attrs, &blobs); err != nil {
			return classifyDB(fmt.Errorf("census of %s: %w", s.path, err))
		}
		row := CensusRow{Handle: uint64(handle), Class: uint(class), Private: priv != 0, Summary: mk}
		if mk == nil {
			if err := decodeRaw(attrs, &r); err != nil {
				return errclass.New(errclass.DataLoss, "census of %s: object %d: %w", s.path, handle, err)
			}
			add := func(r *rawObject) {
				for _, a := range r.attrs {
					row.Types = append(row.Types, a.typ)
					if !r.sealed {
						if row.Clear == nil {
							row.Clear = map[uint32][]byte{}
						}
						row.Clear[a.typ] = slices.Clone(a.val)
					}
				}
			}
			add(&r)
			// A split row keeps its blob attributes in the blob table
			// (blobs.go).
			if blobs != nil {
				if err := decodeRaw(blobs, &r); err != nil {
					return errclass.New(errclass.DataLoss, "census of %s: object %d: blobs: %w", s.path, handle, err)
				}
				add(&r)
				slices.Sort(row.Types)
			}
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return classifyDB(fmt.Errorf("census of %s: %w", s.path, err))
	}
	return nil
}

// RecordSummaries records the summary of every object that has none
// (written by an older release, or by a store without Options.Summary),
// opening private objects with dk (objects it cannot open stay
// unrecorded). It changes no attribute and no version, so it races with
// no writer: a row changed meanwhile keeps the summary its writer wrote.
// It returns how many summaries it recorded.
func (s *Store) RecordSummaries(ctx context.Context, dk *DataKey) (int, error) {
	if s.opts.Summary == nil {
		return 0, nil
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT handle FROM blob WHERE mk IS NULL ORDER BY handle`)
	if err != nil {
		return 0, classifyDB(fmt.Errorf("record summaries in %s: %w", s.path, err))
	}
	var handles []uint64
	for rows.Next() {
		var h int64
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return 0, classifyDB(fmt.Errorf("record summaries in %s: %w", s.path, err))
		}
		handles = append(handles, uint64(h))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, classifyDB(fmt.Errorf("record summaries in %s: %w", s.path, err))
	}
	n := 0
	for len(handles) > 0 {
		page := handles[:min(len(handles), 500)]
		handles = handles[len(page):]
		type rec struct {
			handle, version uint64
			mk              []byte
		}
		var recs []rec
		for _, h := range page {
			o, err := s.Get(ctx, dk, h)
			if err != nil {
				continue // deleted meanwhile, or private without dk: stays unrecorded
			}
			recs = append(recs, rec{h, o.Version, s.opts.Summary(o.Attrs)})
		}
		err := s.writeTx(ctx, func(r *runner) error {
			for _, x := range recs {
				res, err := r.ExecContext(ctx, `UPDATE blob SET mk = ? WHERE handle = ? AND version = ? AND mk IS NULL`,
					x.mk, int64(x.handle), int64(x.version))
				if err != nil {
					return classifyDB(fmt.Errorf("record the summary of object %d: %w", x.handle, err))
				}
				if k, _ := res.RowsAffected(); k == 1 {
					n++
				}
			}
			return nil
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
