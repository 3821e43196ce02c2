package mkchange

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// BatchSize is how many objects one transaction of a pass reads (and at
// most rewrites).
const BatchSize = 2000

// commitChunk is how many objects one write transaction of a pass holds
// at most (a page is written in several): the token's write lock is held
// for some milliseconds at a time, so applications' writes interleave.
// Benchmarked by BenchmarkPassWriteStall (docs/bench.md).
var commitChunk = 250

// txHold is how long one write transaction of a pass should hold the
// token's write lock (and the writers' gate), its commit included: an
// application's write that arrives meanwhile waits that long at most.
// Benchmarks set it to 0 (transactions of commitChunk, whatever they
// take) to compare.
var txHold = 2 * time.Millisecond

// minChunk is the fewest objects a pass writes per transaction, however
// slow the store: below it the commits' own cost dominates.
const minChunk = 16

// txChunk sizes the pass's write transactions. While no other writer
// shows up, a transaction is commitChunk objects (fewest commits). Once
// the pass found the writers' gate taken (another process wrote, or
// waited to), and for contendedFor after the last time, a transaction holds as many
// objects as fit in txHold at the objects per second the last
// transactions wrote (lock held, commit included), between minChunk and
// commitChunk, smoothed over the last transactions so one slow commit
// does not halve the next.
type txChunk struct {
	n     int       // the size while writers are about
	until time.Time // writers were seen; bound the transactions until then
	now   func() time.Time
}

// contendedFor is how long the pass keeps its transactions short after it
// last waited for another writer.
var contendedFor = time.Second

// writersAbout makes every pass start as if another writer had just been
// seen (tests).
var writersAbout = false

func newTxChunk() *txChunk {
	c := &txChunk{n: commitChunk, now: time.Now}
	if writersAbout {
		c.until = c.now().Add(contendedFor)
	}
	return c
}

// size is the next transaction's object count.
func (c *txChunk) size() int {
	if txHold <= 0 || c.now().After(c.until) {
		return commitChunk
	}
	return c.n
}

// took records a transaction of objs objects that held the lock for d;
// busy says another writer held or waited for the writers' gate when it
// began.
func (c *txChunk) took(objs int, busy bool, d time.Duration) {
	if busy {
		c.until = c.now().Add(contendedFor)
	}
	if objs <= 0 || d <= 0 || txHold <= 0 {
		return
	}
	fit := int(float64(objs) * float64(txHold) / float64(d))
	c.n = max(minChunk, min(commitChunk, (c.n+fit)/2))
}

// pageSize is BatchSize; tests lower it to cross page boundaries with few
// objects.
var pageSize = BatchSize

// Transform applies action a to one key object's attributes, using APQN q
// for re-enciphering. It reports whether attrs changed.
func Transform(ctx context.Context, be hsm.Backend, q apqn.ID, attrs map[uint32][]byte, op *state.Op, a state.Action) (bool, error) {
	switch a {
	case state.ActReencipher:
		return Reencipher(ctx, be, q, attrs, op)
	case state.ActFinalize:
		return Finalize(attrs, op)
	case state.ActCancel:
		return Cancel(attrs, op)
	}
	return false, errclass.New(errclass.InvalidArgument, "unknown action %v", a)
}

// Pass applies action a to every key object of the token's store and
// returns how many objects changed. dk must be the USER's data key so
// private objects are included. Objects deleted meanwhile are skipped;
// objects changed meanwhile by another process are read again and
// transformed anew. Re-enciphering is spread over the token's APQNs of the
// operation. progress, if not nil, is called after every committed batch
// with the objects handled so far and the total (which grows if objects
// are created during the pass).
//
// The pass pages through the key objects by handle, BatchSize at a time,
// and commits each page in one durable transaction. While one page is
// being written (the store's single write connection, mostly SQLite work),
// a second goroutine already reads the next page, only the narrow blob
// rows (store.ListBlobs), and applies the transform to it
// (HSM work): the two overlap on two cores, and memory holds two pages,
// whatever the size of the token. Pages are disjoint, so a page prepared
// early cannot conflict with the commit of the previous one; only another
// writer can make it stale, and that is caught by the optimistic version
// check of Update.
//
// No HSM call runs inside a write transaction: the transaction holds the
// token's write lock, which every other process's writes wait for. An
// object another writer changed after it was read is left out of the
// transaction, read and transformed again after the commit, and written
// in a transaction of its own (retried a few times).
//
// An object that cannot be read or transformed (a damaged database, a
// value that fails to unseal, a blob the HSM refuses) stops the pass with
// an error naming its handle; nothing is skipped silently, and the pages
// committed before stay valid (each transform is idempotent, so the pass
// is simply run again once the object is repaired or removed).
func (t Token) Pass(ctx context.Context, st *store.Store, dk *store.DataKey, be hsm.Backend, op *state.Op, a state.Action, progress func(done, total int)) (int, error) {
	qs := t.APQNsFor(op)
	if a == state.ActReencipher && len(qs) == 0 {
		return 0, errclass.New(errclass.FailedPrecondition, "slot %d uses no APQN of operation %s", t.Slot, op.ID)
	}
	if a == state.ActReencipher {
		// Keys written before the store kept master key summaries get one
		// now, so that verify reads their patterns without the PIN.
		if _, err := st.RecordSummaries(ctx, dk); err != nil {
			return 0, fmt.Errorf("slot %d: %w", t.Slot, err)
		}
	}
	total := 0
	if progress != nil {
		var err error
		if total, err = st.Count(ctx, dk, store.Filter{Classes: keyClasses}); err != nil {
			return 0, fmt.Errorf("slot %d: failed to count key objects: %w", t.Slot, err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	per, err := InFlight()
	if err != nil {
		return 0, err
	}
	pages := make(chan page, 1)
	go t.prepare(ctx, st, dk, be, qs, op, a, NewLimiter(per), pages)
	changed, done := 0, 0
	var failed error
	chunk := newTxChunk()
	for p := range pages {
		if failed != nil {
			continue // drain: the producer stops at its next send
		}
		if p.err != nil {
			failed = fmt.Errorf("slot %d: %s pass: %w", t.Slot, a, p.err)
			cancel()
			continue
		}
		// The page is written in transactions of at most commitChunk
		// objects, and while other processes write, of as many as hold
		// the token's write lock for about txHold (txChunk): an
		// application's write or key creation waits for one of them, not
		// for a whole page. Crash safety is unchanged: every object is
		// written whole by one transaction, and the pass is idempotent.
		var err error
		for start := 0; start < len(p.changed) && err == nil; {
			end := min(start+chunk.size(), len(p.changed))
			var n int
			var busy bool
			var held time.Duration
			n, busy, held, err = t.commit(ctx, st, dk, be, qs, op, a, p.changed[start:end:end])
			chunk.took(end-start, busy, held)
			changed += n
			start = end
		}
		if err != nil {
			failed = fmt.Errorf("slot %d: %s pass: %w", t.Slot, a, err)
			cancel()
			continue
		}
		failpoint.Hit("cli.pass." + a.String() + ".after-batch-commit")
		done += p.listed
		if progress != nil {
			progress(done, max(total, done))
		}
	}
	if failed != nil {
		return changed, failed
	}
	if err := ctx.Err(); err != nil {
		return changed, fmt.Errorf("slot %d: %s pass: %w", t.Slot, a, err)
	}
	if err := st.JournalDone(ctx, string(op.ID), a.String()); err != nil {
		return changed, fmt.Errorf("slot %d: %s pass: %w", t.Slot, a, err)
	}
	if progress != nil && done == 0 {
		progress(0, 0)
	}
	return changed, nil
}

// conflictRetries bounds how often one object is read and transformed
// again because another writer changed it in between.
const conflictRetries = 5

// commit writes the transformed objects of one page: one transaction
// for the page, then, outside any transaction, the objects another writer
// changed meanwhile are read and transformed again and written in a
// transaction of their own, until none is left.
//
// busy says whether another writer held or waited for the writers' gate
// when the first transaction began, held how long that transaction held
// the token's write lock (to its commit, the gate's yield included).
func (t Token) commit(ctx context.Context, st *store.Store, dk *store.DataKey, be hsm.Backend, qs []apqn.ID, op *state.Op, a state.Action, objs []*store.Object) (changed int, busy bool, held time.Duration, err error) {
	for attempt := 0; len(objs) > 0; attempt++ {
		var conflicts []uint64
		n := 0
		var began time.Time
		was, err := st.BatchLowBusy(ctx, dk, func(tx *store.Tx) error {
			began = time.Now()
			conflicts, n = conflicts[:0], 0
			// The keys remember which operation and action touched them
			// last, with the page (store/journal.go).
			if err := tx.Journal(string(op.ID), a.String()); err != nil {
				return err
			}
			for _, o := range objs {
				err := tx.Update(o)
				switch {
				case err == nil:
					n++
				case errclass.Of(err) == errclass.NotFound:
					// destroyed meanwhile
				case errclass.Of(err) == errclass.Conflict:
					conflicts = append(conflicts, o.Handle)
				default:
					return errors.Join(fmt.Errorf("object %d (%s): failed to save", o.Handle, label(o)), err)
				}
			}
			return nil
		})
		if attempt == 0 {
			busy = was
			if !began.IsZero() {
				held = time.Since(began)
			}
		}
		if err != nil {
			return changed, busy, held, err
		}
		changed += n
		if len(conflicts) == 0 {
			return changed, busy, held, nil
		}
		if attempt == conflictRetries {
			return changed, busy, held, errclass.Newh(errclass.Aborted, "run the command again; another process keeps rewriting these keys",
				"objects %v kept changing during the pass (%d attempts)", conflicts, attempt+1)
		}
		objs = objs[:0]
		for _, h := range conflicts {
			fresh, err := st.ListBlobs(ctx, dk, store.Filter{Classes: keyClasses, After: h - 1, Limit: 1})
			if err != nil {
				return changed, busy, held, fmt.Errorf("object %d: failed to read it again: %w", h, err)
			}
			if len(fresh) == 0 || fresh[0].Handle != h {
				continue // destroyed meanwhile
			}
			o := fresh[0]
			ok, err := Transform(ctx, be, apqnFor(qs, o.Handle), o.Attrs, op, a)
			if err != nil {
				return changed, busy, held, fmt.Errorf("object %d (%s): %w", o.Handle, label(o), err)
			}
			if ok {
				objs = append(objs, o) // else the other writer did our work
			}
		}
	}
	return changed, busy, held, nil
}

var keyClasses = []uint{uint(ck.CKO_SECRET_KEY), uint(ck.CKO_PRIVATE_KEY), uint(ck.CKO_PUBLIC_KEY)}

// page is one page of key objects, read and transformed: changed holds
// the objects the transform changed (their Attrs already transformed),
// listed how many objects the page had.
type page struct {
	changed []*store.Object
	listed  int
	err     error
}

// prepare reads the key objects page by page, transforms them and sends
// the pages that are to be written, then closes pages. It stops at the
// first error (sent as the last page) or when ctx ends. The next page is
// read while the HSM works on the current one, so the adapters do not
// wait for the store between pages.
func (t Token) prepare(ctx context.Context, st *store.Store, dk *store.DataKey, be hsm.Backend, qs []apqn.ID, op *state.Op, a state.Action, lim *Limiter, pages chan<- page) {
	defer close(pages)
	pageSize := failpoint.Int("mkchange.page-size", pageSize)
	send := func(p page) bool {
		select {
		case pages <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	type listed struct {
		objs  []*store.Object
		after uint64
		err   error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lists := make(chan listed, 1)
	go func() {
		defer close(lists)
		var after uint64
		for {
			objs, err := st.ListBlobs(ctx, dk, store.Filter{Classes: keyClasses, After: after, Limit: pageSize})
			err = errors.Join(err, failpoint.Err("cli.pass."+a.String()+".list"))
			l := listed{objs: objs, after: after, err: err}
			if len(objs) > 0 {
				// Before the page is handed over: its transform sets
				// the entries it did not change to nil.
				after = objs[len(objs)-1].Handle
			}
			select {
			case lists <- l:
			case <-ctx.Done():
				return
			}
			if err != nil || len(objs) < pageSize {
				return
			}
		}
	}()
	for l := range lists {
		if l.err != nil {
			send(page{err: fmt.Errorf("failed to read key objects after handle %d: %w", l.after, l.err)})
			return
		}
		objs := l.objs
		if len(objs) == 0 {
			return
		}
		p := page{listed: len(objs)}
		if err := transformPage(ctx, be, qs, objs, op, a, lim); err != nil {
			send(page{err: err})
			return
		}
		for _, o := range objs {
			if o != nil {
				p.changed = append(p.changed, o)
			}
		}
		if !send(p) {
			return
		}
	}
}

// transformPage applies action a to every object of a page and sets the
// entries of objs it did not change to nil. Re-enciphering keeps as many
// requests outstanding on each APQN as lim's windows allow (see Each); the
// other actions make no HSM call and run in order. The first object that fails stops the page
// with an error naming it.
func transformPage(ctx context.Context, be hsm.Backend, qs []apqn.ID, objs []*store.Object, op *state.Op, a state.Action, lim *Limiter) error {
	one := func(ctx context.Context, i int) error {
		o := objs[i]
		failpoint.Hit("cli.pass." + a.String() + ".in-flight")
		ok, err := Transform(ctx, be, apqnFor(qs, o.Handle), o.Attrs, op, a)
		if err != nil {
			return fmt.Errorf("object %d (%s): %w", o.Handle, label(o), err)
		}
		if !ok {
			objs[i] = nil
		}
		return nil
	}
	if a != state.ActReencipher {
		for i := range objs {
			if err := one(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	// Requests share a floor by the length of the blob: key type and size.
	kind := func(i int) int { return len(objs[i].Attrs[attrOpaque]) }
	return Each(ctx, len(objs), func(i int) apqn.ID { return apqnFor(qs, objs[i].Handle) }, kind, lim, one)
}

// apqnFor spreads re-enciphering over the APQNs by handle, so that both
// goroutines of a pass pick the same APQN for an object without sharing a
// counter.
func apqnFor(qs []apqn.ID, handle uint64) apqn.ID {
	if len(qs) == 0 {
		return apqn.ID{}
	}
	return qs[handle%uint64(len(qs))]
}

func label(o *store.Object) string {
	if l := o.Attrs[uint32(ck.CKA_LABEL)]; len(l) > 0 {
		return fmt.Sprintf("label %q", l)
	}
	return fmt.Sprintf("unique id %s", o.UniqueID)
}
