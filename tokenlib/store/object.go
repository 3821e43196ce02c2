package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Object is one token object as stored.
//
// Class and Private are the store's own columns: Class is indexed for
// [Filter], Private decides whether the attributes are sealed. The engine
// keeps them consistent with CKA_CLASS / CKA_PRIVATE in Attrs; the store
// does not look inside Attrs except to filter.
type Object struct {
	// Handle is the row id: assigned by Create, stable for the object's
	// life, never reused (not even after InitToken).
	Handle uint64
	// UniqueID is CKA_UNIQUE_ID: 32 random hex digits assigned by Create.
	UniqueID string
	Class    uint
	Private  bool
	// Attrs maps attribute types (CKA_*) to their encoded values.
	Attrs map[uint32][]byte
	// Version is 1 after Create and grows by one with every Update. Update
	// succeeds only if it still matches the stored version.
	Version uint64

	// sealed remembers, for an object read with a data key, each value as
	// read and its sealed form, so that Update re-seals only the values
	// that changed (an MK change touches one or two attributes per key).
	sealed map[uint32]sealedValue
	// ix remembers the index columns as stored (indexedAttrs order), so
	// that an Update that leaves them alone does not rewrite the indexes.
	ix [2][]byte
	// partial is set for an object read with [Filter.Only]: Attrs holds
	// only the types in only, keep the other values as stored (sealed or
	// clear), which Update writes back unchanged.
	partial     bool
	readPrivate bool
	only        []uint32
	keep        []rawAttr // sorted by type; values alias a private copy of the stored bytes

	// What the store holds for the object, as last read or written (see
	// blobs.go, attrsUnchanged): an Update that changed only blob
	// attributes rewrites the narrow blob row alone.
	fromStore bool
	legacy    bool // blob attributes still inside the attribute list
	blobsOnly bool // read by ListBlobs: only the blob row is known
	readClass uint
	stored    []byte   // public: the attribute list as stored
	nbTypes   []uint32 // private: the types of the attribute list as stored
}

type sealedValue struct {
	plain  []byte // a private copy, never handed out
	sealed []byte
}

// Filter selects objects for List. The zero Filter matches every object the
// caller may see.
type Filter struct {
	// Classes, if not empty, keeps objects whose Class is one of them.
	Classes []uint
	// ExcludeClasses drops objects whose Class is one of them (from the
	// column, no decoding).
	ExcludeClasses []uint
	// UniqueID, if set, keeps only that object.
	UniqueID string
	// Attrs keeps objects that have every listed attribute with exactly the
	// given value (a nil or empty value matches an empty value).
	Attrs map[uint32][]byte
	// Private, if set, keeps only private (*Private true) or only public
	// objects (the store's own column, no decoding).
	Private *bool
	// Only, if not empty, makes List decode just these attribute types of
	// each match (and unseal only them); the other values stay as stored
	// and an Update of the object writes them back unchanged. The set of
	// attribute types is still authenticated. A master key change pass
	// needs a key's blobs, not its two dozen other attributes.
	Only []uint32
	// After and Limit page through large tokens: only handles greater than
	// After are considered, and at most Limit objects (0: no limit) are
	// returned. Pass the last handle of one page as After of the next.
	After uint64
	Limit int
}

func newUniqueID() string { return hex.EncodeToString(randomBytes(16)) }

func checkObject(o *Object, dk *DataKey) error {
	if o == nil {
		return errclass.New(errclass.InvalidArgument, "object is nil")
	}
	if uint64(o.Class) > math.MaxInt64 {
		return errclass.New(errclass.InvalidArgument, "object class %#x is out of range", o.Class)
	}
	if len(o.Attrs) > MaxAttrs {
		return errclass.Newh(errclass.InvalidArgument, "split the data over several objects", "object has %d attributes, more than %d", len(o.Attrs), MaxAttrs)
	}
	total := 0
	for t, v := range o.Attrs {
		if len(v) > MaxValueLen {
			return errclass.Newh(errclass.InvalidArgument, "store large data outside the token", "attribute %#x has %d bytes, more than %d", t, len(v), MaxValueLen)
		}
		total += len(v) + sealOverhead + 10
	}
	if total > maxBlob-64 {
		return errclass.New(errclass.InvalidArgument, "object attributes total %d bytes, more than %d", total, maxBlob)
	}
	if o.Private && dk == nil {
		return errclass.Newh(errclass.PermissionDenied, "log in as USER to create or change private objects", "private object: %w", ErrLoginRequired)
	}
	return nil
}

// rememberSealed records o's values and sealed forms after a write or read,
// so that a following Update can reuse unchanged sealed values.
func rememberSealed(o *Object, r *rawObject) {
	if !r.sealed {
		o.sealed = nil
		return
	}
	m := make(map[uint32]sealedValue, len(r.attrs))
	for _, a := range r.attrs {
		v, ok := o.Attrs[a.typ]
		if !ok {
			continue // kept as stored (partial object): no plain value
		}
		m[a.typ] = sealedValue{plain: append([]byte{}, v...), sealed: a.val}
	}
	o.sealed = m
}

// decodePartial is decodeObject for Filter.Only: it opens only the types
// in only (sorted) of r (loaded by loadRaw, whose values must not alias a
// driver buffer: the kept ones are written back by Update).
func decodePartial(o *Object, dk *DataKey, r *rawObject, only []uint32) error {
	o.Attrs = make(map[uint32][]byte, len(only))
	o.keep = make([]rawAttr, 0, len(r.attrs))
	o.partial, o.only = true, only
	m := map[uint32]sealedValue{}
	var aad []byte
	for _, a := range r.attrs {
		if _, want := slices.BinarySearch(only, a.typ); !want {
			o.keep = append(o.keep, a)
			continue
		}
		if !r.sealed {
			o.Attrs[a.typ] = append([]byte{}, a.val...)
			continue
		}
		v, buf, err := dk.openAttr(aad, o.UniqueID, a.typ, a.val)
		aad = buf
		if err != nil {
			return err
		}
		o.Attrs[a.typ] = v
		m[a.typ] = sealedValue{plain: append([]byte{}, v...), sealed: a.val}
	}
	if r.sealed {
		o.sealed = m
	}
	return nil
}

// decodeObject turns a stored row, loaded into r by loadRaw (set tags
// checked), into an Object. A private object needs a data key; failures to
// authenticate return errOpen.
func decodeObject(o *Object, dk *DataKey, r *rawObject) error {
	o.Attrs = make(map[uint32][]byte, len(r.attrs))
	if !r.sealed {
		for _, a := range r.attrs {
			o.Attrs[a.typ] = append([]byte{}, a.val...)
		}
		return nil
	}
	var aad []byte
	m := make(map[uint32]sealedValue, len(r.attrs))
	for _, a := range r.attrs {
		v, buf, err := dk.openAttr(aad, o.UniqueID, a.typ, a.val)
		aad = buf
		if err != nil {
			return err
		}
		o.Attrs[a.typ] = v
		// a.val may alias a driver buffer: keep our own copy.
		m[a.typ] = sealedValue{plain: append([]byte{}, v...), sealed: append([]byte{}, a.val...)}
	}
	o.sealed = m
	return nil
}

// loadObject decodes a stored row (attribute list and blob list, nil for
// a legacy row) into o: in full, or only the types in only.
func loadObject(o *Object, attrs, blobs []byte, dk *DataKey, r *rawObject, only []uint32) error {
	if len(only) > 0 {
		// One private copy of the stored bytes (they may alias a driver
		// buffer), which the kept values alias.
		attrs = bytes.Clone(attrs)
		if blobs != nil {
			blobs = bytes.Clone(blobs)
		}
	}
	nb, err := loadRaw(attrs, blobs, o.Private, dk, o.UniqueID, uint64(o.Class), r)
	if err != nil {
		return err
	}
	if len(only) > 0 {
		err = decodePartial(o, dk, r, only)
	} else {
		err = decodeObject(o, dk, r)
	}
	if err != nil {
		return err
	}
	o.remember(blobs == nil, attrs, nb)
	return nil
}

// Store-level object operations run each in its own transaction.

// Create stores o as a new object and sets o.Handle, o.UniqueID and
// o.Version (1). o.UniqueID must be empty: the store assigns it. dk may be
// nil only for a public object.
func (s *Store) Create(ctx context.Context, dk *DataKey, o *Object) error {
	return s.Batch(ctx, dk, func(tx *Tx) error { return tx.Create(o) })
}

// Get returns the object with the given handle: errclass.NotFound if there
// is none, errclass.PermissionDenied (ErrLoginRequired) for a private object
// without a data key, errclass.DataLoss if its stored bytes are corrupt or
// were tampered with.
func (s *Store) Get(ctx context.Context, dk *DataKey, handle uint64) (*Object, error) {
	return s.get(ctx, s.reader(), dk, handle)
}

// Update writes o's Class, Private and Attrs if the stored object still has
// o.Version; then o.Version is incremented. If another process (or
// goroutine) updated the object meanwhile, Update fails with
// errclass.Conflict and changes nothing: re-read and retry. Changing a
// private object (or making an object private) needs a data key.
func (s *Store) Update(ctx context.Context, dk *DataKey, o *Object) error {
	return s.Batch(ctx, dk, func(tx *Tx) error { return tx.Update(o) })
}

// Delete destroys the object with the given handle (errclass.NotFound if
// there is none). The store does not ask for a data key here: the engine
// decides who may destroy which objects.
func (s *Store) Delete(ctx context.Context, handle uint64) error {
	return s.Batch(ctx, nil, func(tx *Tx) error { return tx.Delete(handle) })
}

// List returns the objects matching f, ordered by handle. Without a data key
// only public objects are considered. Filtering on attribute values opens
// only the filtered attributes of private objects; full decoding happens
// for matches only.
//
// Objects whose stored bytes are corrupt do not stop the listing: List
// returns every readable match together with an errclass.DataLoss error
// naming the unreadable handles, so a caller can go on with the rest and
// still report the loss. With any other error the slice is nil.
func (s *Store) List(ctx context.Context, dk *DataKey, f Filter) ([]*Object, error) {
	return s.list(ctx, s.reader(), dk, f)
}

// Version returns the stored version of an object without decoding it, for
// revalidating a cached copy (errclass.NotFound if the object is gone).
func (s *Store) Version(ctx context.Context, handle uint64) (uint64, error) {
	var v int64
	if err := s.reader().QueryRowContext(ctx, `SELECT version FROM blob WHERE handle = ?`, int64(handle)).Scan(&v); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, errNoObject(handle)
		}
		return 0, classifyDB(fmt.Errorf("read version of object %d: %w", handle, err))
	}
	return uint64(v), nil
}

// Count returns how many objects List(ctx, dk, f) would consider, without
// reading or decoding any of them (one indexed query), for progress
// reports over large tokens. It honours f.Classes, f.UniqueID and f.After
// and, with a nil dk, counts public objects only. f.Attrs and f.Limit are
// refused: matching attributes needs decoding, which List does.
func (s *Store) Count(ctx context.Context, dk *DataKey, f Filter) (int, error) {
	if err := s.usable(dk); err != nil {
		return 0, err
	}
	if len(f.Attrs) > 0 || f.Limit != 0 {
		return 0, errclass.Newh(errclass.InvalidArgument, "count with Classes, UniqueID and After only; use List to match attributes",
			"count objects: Attrs and Limit are not supported")
	}
	where, args := []string{"1"}, []any{}
	if dk == nil {
		where = append(where, "private = 0")
	}
	if f.Private != nil {
		where = append(where, fmt.Sprintf("private = %d", boolInt(*f.Private)))
	}
	if len(f.Classes) > 0 {
		ph := make([]string, 0, len(f.Classes))
		for _, c := range f.Classes {
			if uint64(c) > math.MaxInt64 {
				continue // no object can have that class
			}
			ph = append(ph, "?")
			args = append(args, int64(c))
		}
		if len(ph) == 0 {
			return 0, nil
		}
		where = append(where, "class IN ("+strings.Join(ph, ",")+")")
	}
	if f.UniqueID != "" {
		where = append(where, "unique_id = ?")
		args = append(args, f.UniqueID)
	}
	if f.After > 0 {
		if f.After >= math.MaxInt64 {
			return 0, nil
		}
		where = append(where, "handle > ?")
		args = append(args, int64(f.After))
	}
	var n int64
	err := s.reader().QueryRowContext(ctx, `SELECT count(*) FROM object WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	if err != nil {
		return 0, classifyDB(fmt.Errorf("count objects: %w", err))
	}
	return int(n), nil
}

func errNoObject(handle uint64) error {
	return errclass.New(errclass.NotFound, "object %d does not exist", handle)
}

// Tx is one write transaction of [Store.Batch]. Its methods behave like the
// Store methods of the same names but see the transaction's own changes,
// and nothing becomes visible to others before Batch commits. A Tx must not
// be used after fn returns, nor from several goroutines.
type Tx struct {
	s   *Store
	ctx context.Context
	tx  *runner
	dk  *DataKey
	raw rawObject // decode scratch space
	// short is ctx without its cancellation, for statements that take
	// microseconds (an Update's blob row by handle): with a cancellable
	// context the driver starts a watcher goroutine per statement, which
	// cost a pass more CPU than the UPDATE itself. ctx is checked before
	// each such statement instead.
	short context.Context
}

// shortCtx returns t.short, or ctx's error if it has ended.
func (t *Tx) shortCtx() (context.Context, error) {
	if err := t.ctx.Err(); err != nil {
		return nil, err
	}
	if t.short == nil {
		t.short = context.WithoutCancel(t.ctx)
	}
	return t.short, nil
}

// Batch runs fn in one write transaction: everything fn did is committed
// together when it returns nil, and nothing when it returns an error (which
// Batch returns unchanged) or the process dies. The transaction holds the
// token's write lock; other processes' writes wait (reads, Open and most
// logins do not). Keep batches to some thousands of objects: page with
// [Filter.After] and [Filter.Limit]. dk may be nil if fn only touches
// public objects.
//
// Inside fn use only tx. A write method of the Store itself (Create,
// Update, Delete, InitToken, ...) called from fn waits for this very
// transaction and never returns; the Store's read methods work but do not
// see fn's uncommitted changes.
func (s *Store) Batch(ctx context.Context, dk *DataKey, fn func(tx *Tx) error) error {
	return s.batch(ctx, dk, fn, false)
}

func (s *Store) batch(ctx context.Context, dk *DataKey, fn func(tx *Tx) error, low bool) error {
	return s.writeTxPrio(ctx, low, func(stx *runner) error {
		if dk != nil {
			if err := s.checkKey(ctx, stx, dk); err != nil {
				return err
			}
		}
		return fn(&Tx{s: s, ctx: ctx, tx: stx, dk: dk})
	})
}

// Create is [Store.Create] inside the transaction.
func (t *Tx) Create(o *Object) error {
	if err := checkObject(o, t.dk); err != nil {
		return fmt.Errorf("create object: %w", err)
	}
	if o.UniqueID != "" {
		return errclass.Newh(errclass.InvalidArgument, "leave UniqueID empty; the store assigns it", "create object: UniqueID %q is already set", o.UniqueID)
	}
	uid := newUniqueID()
	o.UniqueID = uid
	o.sealed, o.partial, o.keep = nil, false, nil
	attrs, ra := encodePart(o, t.dk, false)
	blobs, rb := encodePart(o, t.dk, true)
	ix := t.s.indexColumns(o, t.dk)
	mk, _ := t.s.summary(o)
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO object (unique_id, class, private, version, attrs, label_ix, id_ix) VALUES (?, ?, ?, 1, ?, ?, ?)`,
		uid, int64(o.Class), boolInt(o.Private), attrs, ix[0], ix[1])
	if err != nil {
		o.UniqueID = ""
		return classifyDB(fmt.Errorf("create object: %w", err))
	}
	id, err := res.LastInsertId()
	if err != nil {
		o.UniqueID = ""
		return classifyDB(fmt.Errorf("create object: %w", err))
	}
	if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO blob (handle, version, blobs, mk) VALUES (?, 1, ?, ?)`, id, blobs, mk); err != nil {
		o.UniqueID = ""
		return classifyDB(fmt.Errorf("create object: %w", err))
	}
	o.Handle, o.Version, o.ix = uint64(id), 1, ix
	o.afterWrite(ra, rb, attrs, false)
	return nil
}

// afterWrite records what an Create or Update stored for o: the sealed
// values for re-use (a partial object is resealed in full next time), and
// the stored attribute list for attrsUnchanged.
func (o *Object) afterWrite(ra, rb *rawObject, attrsPart []byte, wasPartial bool) {
	nb := make([]uint32, len(ra.attrs))
	for i, a := range ra.attrs {
		nb[i] = a.typ
	}
	switch {
	case wasPartial:
		// A pass writes a partial object once; a later Update reseals
		// its few loaded values.
		o.sealed = nil
	case o.Private:
		rememberSealed(o, &rawObject{sealed: true, attrs: append(slices.Clone(ra.attrs), rb.attrs...)})
	default:
		o.sealed = nil
	}
	o.remember(false, attrsPart, nb)
}

// Get is [Store.Get] inside the transaction.
func (t *Tx) Get(handle uint64) (*Object, error) { return t.s.get(t.ctx, t.tx, t.dk, handle) }

// List is [Store.List] inside the transaction.
func (t *Tx) List(f Filter) ([]*Object, error) { return t.s.list(t.ctx, t.tx, t.dk, f) }

// Update is [Store.Update] inside the transaction.
func (t *Tx) Update(o *Object) error {
	if err := checkObject(o, t.dk); err != nil {
		return fmt.Errorf("update object %d: %w", o.Handle, err)
	}
	if o.UniqueID == "" || o.Handle == 0 || o.Handle > math.MaxInt64 {
		return errclass.New(errclass.InvalidArgument, "update object: handle %d / unique id %q do not name a stored object (use an Object from Create, Get or List)", o.Handle, o.UniqueID)
	}
	if o.partial && len(o.keep) > 0 && o.Private != o.readPrivate {
		return errclass.Newh(errclass.InvalidArgument, "read the object in full (List without Only, or Get) to change its private flag",
			"update object %d: it was read partially and its private flag changed", o.Handle)
	}
	if o.fromStore && o.readPrivate && t.dk == nil {
		return errclass.Newh(errclass.PermissionDenied, "log in as USER to change private objects", "update object %d: %w", o.Handle, ErrLoginRequired)
	}
	// Blob attributes go to the narrow blob row, the rest to the object
	// row, which is rewritten only when something in it changed (see
	// blobs.go): a master key change rewrites the blobs of a million
	// keys and should not rewrite a million whole rows. The blob row
	// carries the version: its update is the optimistic check, so a
	// failed Update changes nothing.
	if o.blobsOnly {
		if err := o.checkBlobsOnly(); err != nil {
			return err
		}
	}
	blobs, rb := encodePart(o, t.dk, true)
	wide := !o.blobsOnly && !o.attrsUnchanged()
	var attrs []byte
	var ra *rawObject
	var ix [2][]byte
	if wide {
		attrs, ra = encodePart(o, t.dk, false)
		ix = t.s.indexColumns(o, t.dk)
		// A private object may only be changed with a data key: the
		// WHERE clause enforces that without a separate read. Index
		// columns are written only when they change.
		var res sql.Result
		var err error
		const cond = ` WHERE handle = ? AND unique_id = ? AND (private = 0 OR ?)
			AND coalesce((SELECT b.version FROM blob b WHERE b.handle = object.handle), version) = ?`
		if bytes.Equal(ix[0], o.ix[0]) && bytes.Equal(ix[1], o.ix[1]) {
			res, err = t.tx.ExecContext(t.ctx, `UPDATE object SET class = ?, private = ?, attrs = ?`+cond,
				int64(o.Class), boolInt(o.Private), attrs, int64(o.Handle), o.UniqueID, boolInt(t.dk != nil), int64(o.Version))
		} else {
			res, err = t.tx.ExecContext(t.ctx, `UPDATE object SET class = ?, private = ?, attrs = ?, label_ix = ?, id_ix = ?`+cond,
				int64(o.Class), boolInt(o.Private), attrs, ixArg(ix[0]), ixArg(ix[1]), int64(o.Handle), o.UniqueID, boolInt(t.dk != nil), int64(o.Version))
		}
		if err != nil {
			return classifyDB(fmt.Errorf("update object %d: %w", o.Handle, err))
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return t.updateFailed(o)
		}
	}
	// The master key summary is rewritten with the blobs (census.go).
	mk, setMK := t.s.summary(o)
	ctx, err := t.shortCtx()
	if err != nil {
		return fmt.Errorf("update object %d: %w", o.Handle, err)
	}
	res, err := t.tx.ExecContext(ctx, `UPDATE blob SET version = ?, blobs = ?, mk = CASE WHEN ? THEN ? ELSE mk END WHERE handle = ? AND version = ?`,
		int64(o.Version)+1, blobs, boolInt(setMK), mk, int64(o.Handle), int64(o.Version))
	if err != nil {
		return classifyDB(fmt.Errorf("update object %d: %w", o.Handle, err))
	}
	if n, _ := res.RowsAffected(); n != 1 {
		if wide {
			// Cannot happen: the object row's update checked the same
			// version in this transaction.
			return errclass.New(errclass.Internal, "update object %d: its blob row changed under the transaction", o.Handle)
		}
		return t.updateFailed(o)
	}
	o.Version++
	if wide {
		o.ix = ix
		o.afterWrite(ra, rb, attrs, o.partial)
	} else {
		o.remember(false, o.stored, o.nbTypes)
		if o.partial {
			o.sealed = nil
		}
	}
	return nil
}

// updateFailed explains an Update that matched no row: the object is
// gone, private without a data key, or at another version.
func (t *Tx) updateFailed(o *Object) error {
	var ver int64
	var priv int
	var uid string
	err := t.tx.QueryRowContext(t.ctx, `SELECT coalesce((SELECT b.version FROM blob b WHERE b.handle = object.handle), version), private, unique_id FROM object WHERE handle = ?`, int64(o.Handle)).Scan(&ver, &priv, &uid)
	switch {
	case errors.Is(err, sql.ErrNoRows) || (err == nil && uid != o.UniqueID):
		return errNoObject(o.Handle)
	case err != nil:
		return classifyDB(fmt.Errorf("update object %d: %w", o.Handle, err))
	case priv != 0 && t.dk == nil:
		return errclass.Newh(errclass.PermissionDenied, "log in as USER to change private objects", "update object %d: %w", o.Handle, ErrLoginRequired)
	}
	return errclass.Newh(errclass.Conflict, "read the object again and reapply the change",
		"update object %d: it is at version %d, not %d: changed by someone else meanwhile", o.Handle, ver, o.Version)
}

// Delete is [Store.Delete] inside the transaction.
func (t *Tx) Delete(handle uint64) error {
	if handle > math.MaxInt64 {
		return errNoObject(handle)
	}
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM object WHERE handle = ?`, int64(handle))
	if err != nil {
		return classifyDB(fmt.Errorf("delete object %d: %w", handle, err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errNoObject(handle)
	}
	return nil // the blob row goes with it (trigger object_blob_delete)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// usable reports an unusable (destroyed or foreign) data key; a stale one is
// found by checkKey or, for reads, when opening fails.
func (s *Store) usable(dk *DataKey) error {
	if dk != nil && (dk.aead == nil || dk.tokenID != s.tokenID) {
		return errclass.Newh(errclass.FailedPrecondition, "log in again", "%w (destroyed, or from another token)", ErrStaleDataKey)
	}
	return nil
}

// openFailed explains a failure to authenticate: a data key from before a
// re-initialization (stale) or a corrupted/tampered value (data loss).
func (s *Store) openFailed(ctx context.Context, q querier, dk *DataKey, handle uint64, err error) error {
	if kerr := s.checkKey(ctx, q, dk); kerr != nil {
		return kerr
	}
	return errclass.Newh(errclass.DataLoss, "the token database was modified outside pkcshsm or is damaged; restore it from a backup",
		"object %d: %w", handle, err)
}

func (s *Store) get(ctx context.Context, q querier, dk *DataKey, handle uint64) (*Object, error) {
	if err := s.usable(dk); err != nil {
		return nil, err
	}
	if handle == 0 || handle > math.MaxInt64 {
		return nil, errNoObject(handle)
	}
	o := &Object{Handle: handle}
	var class, ver int64
	var priv int
	var blob, blobs []byte
	err := q.QueryRowContext(ctx, `SELECT unique_id, class, private, `+blobCols+`, attrs, `+ixCols+` FROM object WHERE handle = ?`, int64(handle)).
		Scan(&o.UniqueID, &class, &priv, &ver, &blobs, &blob, &o.ix[0], &o.ix[1])
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoObject(handle)
	}
	if err != nil {
		return nil, classifyDB(fmt.Errorf("read object %d: %w", handle, err))
	}
	o.Class, o.Private, o.Version = uint(class), priv != 0, uint64(ver)
	if o.Private && dk == nil {
		return nil, errclass.Newh(errclass.PermissionDenied, "log in as USER to read private objects", "object %d: %w", handle, ErrLoginRequired)
	}
	var r rawObject
	s.decoded.Add(1)
	if err := loadObject(o, blob, blobs, dk, &r, nil); err != nil {
		if errors.Is(err, errOpen) {
			return nil, s.openFailed(ctx, q, dk, handle, err)
		}
		return nil, errclass.Newh(errclass.DataLoss, "the token database was modified outside pkcshsm or is damaged; restore it from a backup", "object %d: %w", handle, err)
	}
	return o, nil
}

// Stats are counters of one Store, for tests and benchmarks of the
// engine's laziness.
type Stats struct {
	// Decoded counts the objects whose attribute lists were decoded in
	// full (and, if private, unsealed) by Get and List.
	Decoded uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats { return Stats{Decoded: s.decoded.Load()} }

// Find returns the handles of the objects matching f, in handle order, at
// most f.Limit of them (0: all). It reads no more than it must: a filter
// on classes, the unique id, the private flag and handles is answered from
// the table's columns alone; a filter on the label or the id goes through
// their index (see index.go); only attributes the filter names are opened,
// and only for candidates. No object is decoded in full.
//
// An object whose stored bytes cannot be read is returned as a match when
// the filter cannot tell (it is a candidate of the index, or the filter
// names no attribute): the caller then gets the error naming its handle
// when it uses the object, and every other object stays usable.
func (s *Store) Find(ctx context.Context, dk *DataKey, f Filter) ([]uint64, error) {
	var out []uint64
	err := s.scan(ctx, s.reader(), dk, f, false, func(h uint64, _ *Object) { out = append(out, h) })
	return out, err
}

func (s *Store) list(ctx context.Context, q querier, dk *DataKey, f Filter) ([]*Object, error) {
	var out []*Object
	err := s.scan(ctx, q, dk, f, true, func(_ uint64, o *Object) { out = append(out, o) })
	if err != nil && errclass.Of(err) != errclass.DataLoss {
		return nil, err
	}
	return out, err
}

// query is a SELECT over the object table built from a Filter.
type query struct {
	text string
	args []any
	none bool // no object can match
}

// buildQuery turns f into SQL selecting cols. Conditions on the store's
// columns go into SQL; attribute values are compared after decoding,
// except that a label or id in f.Attrs first narrows the rows through its
// index. The result is ordered by handle and can be read row by row: the
// caller stops after f.Limit matches without SQLite sorting everything.
func (s *Store) buildQuery(dk *DataKey, f Filter, cols string) (query, error) {
	var where []string
	var args []any
	if dk == nil {
		where = append(where, "private = 0")
	}
	if f.Private != nil {
		where = append(where, fmt.Sprintf("private = %d", boolInt(*f.Private)))
	}
	if f.Limit < 0 {
		return query{}, errclass.New(errclass.InvalidArgument, "list objects: negative limit %d", f.Limit)
	}
	// The index attribute, if the filter names one.
	ixCol, ixType := "", uint32(0)
	for _, ia := range indexedAttrs {
		if _, ok := f.Attrs[ia.typ]; ok {
			ixCol, ixType = ia.col, ia.typ
			break
		}
	}
	if len(f.Classes) > 0 {
		ph := make([]string, len(f.Classes))
		for i, c := range f.Classes {
			if uint64(c) > math.MaxInt64 {
				return query{none: true}, nil // no object can have that class
			}
			ph[i] = "?"
			args = append(args, int64(c))
		}
		switch {
		case ixCol != "":
			// The index column decides the plan; keep the class index
			// out of it.
			where = append(where, "+class IN ("+strings.Join(ph, ",")+")")
		case len(ph) == 1:
			// One class: its index yields the handles in order.
			where = append(where, "class = ?")
		case f.Limit > 0:
			// A page must be read in handle order straight from the
			// table, stopping after Limit matches; through the class
			// index SQLite would sort every remaining match first,
			// which makes paging through a large token quadratic. The
			// unary + keeps the filter but takes the index out.
			where = append(where, "+class IN ("+strings.Join(ph, ",")+")")
		default:
			where = append(where, "class IN ("+strings.Join(ph, ",")+")")
		}
	}
	if len(f.ExcludeClasses) > 0 {
		ph := make([]string, 0, len(f.ExcludeClasses))
		for _, c := range f.ExcludeClasses {
			if uint64(c) <= math.MaxInt64 {
				ph = append(ph, "?")
				args = append(args, int64(c))
			}
		}
		if len(ph) > 0 {
			where = append(where, "+class NOT IN ("+strings.Join(ph, ",")+")")
		}
	}
	if f.UniqueID != "" {
		where = append(where, "unique_id = ?")
		args = append(args, f.UniqueID)
	}
	if f.After > 0 {
		if f.After >= math.MaxInt64 {
			return query{none: true}, nil
		}
		where = append(where, "handle > ?")
		args = append(args, int64(f.After))
	}
	sel := func(extra string, extraArgs ...any) (string, []any) {
		w := append(append([]string(nil), where...), extra)
		if extra == "" {
			w = w[:len(w)-1]
		}
		q := "SELECT " + cols + " FROM object"
		if ixCol != "" {
			q += " INDEXED BY object_" + strings.TrimSuffix(ixCol, "_ix")
		}
		if len(w) > 0 {
			q += " WHERE " + strings.Join(w, " AND ")
		}
		return q, append(append([]any(nil), args...), extraArgs...)
	}
	if ixCol == "" {
		q, a := sel("")
		return query{text: q + " ORDER BY handle", args: a}, nil
	}
	// One branch per digest key, plus the rows not indexed yet; each
	// branch reads its index in handle order and SQLite merges them.
	v := f.Attrs[ixType]
	var parts []string
	var all []any
	add := func(q string, a []any) { parts = append(parts, q); all = append(all, a...) }
	if f.Private == nil || !*f.Private {
		add(sel(ixCol+" = ? AND private = 0", s.pubIx.digest(ixType, v)))
	}
	if dk != nil && dk.ix != nil && (f.Private == nil || *f.Private) {
		add(sel(ixCol+" = ? AND private = 1", dk.ix.digest(ixType, v)))
	}
	add(sel(ixCol + " IS NULL"))
	return query{text: strings.Join(parts, " UNION ALL ") + " ORDER BY handle", args: all}, nil
}

// scan runs f and calls fn for each match in handle order: with the
// decoded object if full, else with the handle only. Unreadable objects do
// not stop it: it returns an errclass.DataLoss error naming their handles
// after calling fn for every readable match (full), or calls fn for them
// too when the filter cannot tell whether they match (not full; see Find).
func (s *Store) scan(ctx context.Context, q querier, dk *DataKey, f Filter, full bool, fn func(uint64, *Object)) error {
	if err := s.usable(dk); err != nil {
		return err
	}
	cols := "handle, unique_id, class, private, " + blobCols + ", attrs, " + ixCols
	if !full {
		cols = "handle, unique_id, class, private, " + blobCols + ", attrs"
		if len(f.Attrs) == 0 {
			cols = "handle"
		}
	}
	qr, err := s.buildQuery(dk, f, cols)
	if err != nil || qr.none {
		return err
	}
	rows, err := q.QueryContext(ctx, qr.text, qr.args...)
	if err != nil {
		return classifyDB(fmt.Errorf("list objects: %w", err))
	}
	defer rows.Close()
	filterTypes := sortedTypes(f.Attrs)
	only := slices.Clone(f.Only)
	slices.Sort(only)
	only = slices.Compact(only)
	var (
		n          int
		bad        []uint64
		r          rawObject
		aad        []byte
		handle     int64
		uid        string
		class      int64
		priv       int
		ver        int64
		blob       sql.RawBytes
		blobs      sql.RawBytes
		ix         [2][]byte
		openFailed bool // a sealed value did not open: stale key or tampering
	)
	for rows.Next() {
		if f.Limit > 0 && n == f.Limit {
			break
		}
		var err error
		switch {
		case full:
			err = rows.Scan(&handle, &uid, &class, &priv, &ver, &blobs, &blob, &ix[0], &ix[1])
		case len(f.Attrs) == 0:
			err = rows.Scan(&handle)
		default:
			err = rows.Scan(&handle, &uid, &class, &priv, &ver, &blobs, &blob)
		}
		if err != nil {
			return classifyDB(fmt.Errorf("list objects: %w", err))
		}
		if !full && len(f.Attrs) == 0 {
			n++
			fn(uint64(handle), nil)
			continue
		}
		// A NULL column scans as nil: a legacy row (blobs.go).
		var blobsOrNil []byte
		if blobs != nil {
			blobsOrNil = blobs
		}
		if full && len(filterTypes) == 0 {
			// Nothing to match: decode once, below.
		} else if _, err := loadRaw(blob, blobsOrNil, priv != 0, nil, uid, uint64(class), &r); err != nil {
			bad = append(bad, uint64(handle))
			if !full {
				n++
				fn(uint64(handle), nil) // cannot tell: see Find
			}
			continue
		}
		match, failed := true, false
		for _, t := range filterTypes {
			v, ok := r.find(t)
			if !ok {
				match = false
				break
			}
			if r.sealed {
				var plain []byte
				var err error
				plain, aad, err = dk.openAttr(aad, uid, t, v)
				if err != nil {
					failed = true
					break
				}
				v = plain
			}
			if string(v) != string(f.Attrs[t]) {
				match = false
				break
			}
		}
		if failed {
			openFailed = true
			bad = append(bad, uint64(handle))
			if !full {
				n++
				fn(uint64(handle), nil)
			}
			continue
		}
		if !match {
			continue
		}
		if !full {
			n++
			fn(uint64(handle), nil)
			continue
		}
		o := &Object{Handle: uint64(handle), UniqueID: uid, Class: uint(class), Private: priv != 0, Version: uint64(ver),
			ix: [2][]byte{bytes.Clone(ix[0]), bytes.Clone(ix[1])}}
		s.decoded.Add(1)
		if err := loadObject(o, blob, blobsOrNil, dk, &r, only); err != nil {
			if errors.Is(err, errOpen) {
				openFailed = true
			}
			bad = append(bad, uint64(handle))
			continue
		}
		n++
		fn(o.Handle, o)
	}
	if err := rows.Err(); err != nil {
		return classifyDB(fmt.Errorf("list objects: %w", err))
	}
	rows.Close()
	// Only now, with the rows closed, is it safe to run another query: a
	// reader holding one pooled connection while waiting for a second one
	// could starve the pool.
	if openFailed {
		if err := s.checkKey(ctx, q, dk); err != nil {
			return fmt.Errorf("list objects: %w", err)
		}
	}
	if len(bad) > 0 {
		err := s.unreadable("list objects", bad)
		if !full {
			return nil // returned as matches; their use reports them
		}
		return err
	}
	return nil
}

// unreadable logs the handles of objects a read could not decode or
// authenticate and returns the DataLoss error naming them (the first 20).
func (s *Store) unreadable(what string, bad []uint64) error {
	shown, more := bad, ""
	if len(shown) > 20 {
		shown, more = shown[:20], " ..."
	}
	s.log.Error().Int("count", len(bad)).Interface("handles", shown).Msg("token objects are unreadable (corrupt or tampered)")
	return errclass.Newh(errclass.DataLoss, "the token database was modified outside pkcshsm or is damaged; restore it from a backup",
		"%s: %d unreadable objects, handles %v%s", what, len(bad), shown, more)
}

// ixCols reads the index columns for Object.ix. A column not indexed yet
// (NULL) reads as ixUnset, which no computed value equals, so the next
// Update writes it; an empty blob (no such attribute) may read as nil.
const ixCols = "coalesce(label_ix, X'00'), coalesce(id_ix, X'00')"

// ixArg is the SQL value of an index column: ixUnset is NULL.
func ixArg(v []byte) any {
	if bytes.Equal(v, ixUnset) {
		return nil
	}
	return v
}

// ixUnset is how ixCols reads a NULL index column.
var ixUnset = []byte{0}

// indexColumns returns the index column values of o (indexedAttrs order).
// A partial object keeps the stored value of a column whose attribute it
// did not load.
func (s *Store) indexColumns(o *Object, dk *DataKey) [2][]byte {
	k := s.ixKeyFor(o.Private, dk)
	var out [2][]byte
	for i, ia := range indexedAttrs {
		if _, loaded := slices.BinarySearch(o.only, ia.typ); o.partial && !loaded && o.ix[i] != nil {
			out[i] = o.ix[i] // as stored (ixUnset stays NULL)
			continue
		}
		out[i] = k.column(ia.typ, o.Attrs)
	}
	return out
}
