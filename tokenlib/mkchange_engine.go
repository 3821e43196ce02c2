package tokenlib

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"
)

// This file is the application side of a concurrent master key change.
//
// The operation files are the truth. Every Library reads them when it opens,
// and again whenever the runtime agent sees them change or the daemon
// relays an event; each read is a reconcile:
//
//   - an operation in REENCIPHERING, REENCIPHERED or ERROR that affects a
//     token is active there: the token's session keys get their blob under
//     the new master key (CKA_IBM_OPAQUE_REENC), new keys get one at once,
//     and key use falls back to the REENC blob, or to another APQN, when a
//     blob's master key is not active on an APQN;
//   - FINALIZING finalizes the session keys and ends the operation in the
//     token, which from then on expects the new patterns; CANCELING drops
//     the REENC blobs and ends it;
//   - an active operation whose file is gone (finalized or canceled while
//     this process missed the state) is settled by what the adapters hold:
//     a REENC blob under the CURRENT master key is finalized, any other
//     dropped. Only an ending recorded in the history counts as gone: an
//     operation file that is unreadable (bad checksum, not a regular file),
//     quarantined or removed without an ending never makes the process
//     forget the operation. It keeps acting on the last state it read
//     (REENC blobs for new keys, EP11 APQN pinning, fallback to the REENC
//     blob) and logs an error at every reconcile until the file is readable
//     again or its ending is recorded.
//
// The token objects are the tool's business (pkcshsm_mk_change rewrites
// them in the stores); this process sees the results through the store.
// Reconciles are serialized by Library.mkMu; t.mu is never held across an
// HSM call.

// activeOps returns the operations active in the token.
func (t *token) activeOps() []*state.Op {
	t.hsmMu.Lock()
	defer t.hsmMu.Unlock()
	return slices.Collect(maps.Values(t.mkOps))
}

// newPatterns returns, per master key type, the new patterns of the
// token's active operations.
func (t *token) newPatterns() map[mkvp.Type]mkvp.Pattern {
	out := map[mkvp.Type]mkvp.Pattern{}
	for _, op := range t.activeOps() {
		maps.Copy(out, op.New)
	}
	return out
}

// mkView is the token as package mkchange sees it.
func (t *token) mkView(ctx context.Context) (mkchange.Token, error) {
	return t.lib.MKChangeToken(ctx, t.slot)
}

// reconcileResult is what one reconcile did for one operation in a token.
type reconcileResult struct {
	affected bool
	objects  int
	err      error
}

// reconcile brings every token in line with the operation files. It
// returns, per operation id and slot, what it did.
func (l *Library) reconcile(ctx context.Context) (map[state.ID]map[SlotID]reconcileResult, error) {
	if err := l.lockMK(ctx); err != nil {
		return nil, err
	}
	defer l.mkMu.Unlock()
	stamp := l.opsStamp()
	ops, broken, err := l.listOps(ctx)
	if err != nil {
		return nil, err
	}
	defer l.mkFresh.saw(stamp)
	var ended map[state.ID]bool // read from the history on first need
	out := map[state.ID]map[SlotID]reconcileResult{}
	for _, id := range l.order {
		t := l.slots[id]
		view, err := t.mkView(ctx)
		if err != nil {
			t.log.Error().Err(err).Msg("master key change: cannot describe the token")
			continue
		}
		seen := map[state.ID]bool{}
		for _, op := range ops {
			if !view.Affected(op) {
				continue
			}
			seen[op.ID] = true
			r := t.reconcileOp(ctx, view, op)
			if out[op.ID] == nil {
				out[op.ID] = map[SlotID]reconcileResult{}
			}
			out[op.ID][id] = r
		}
		for _, op := range t.activeOps() {
			if seen[op.ID] {
				continue
			}
			if ended == nil {
				ended = l.endedOps(ctx)
			}
			if !ended[op.ID] {
				t.log.Error().Str("op", string(op.ID)).Stringer("last_known_state", op.State).
					Str("file", filepath.Join(l.layout.MKChangeDir(), string(op.ID))).
					AnErr("file_error", broken[op.ID]).
					Msg("MASTER KEY CHANGE OPERATION FILE UNREADABLE OR MISSING, ITS END IS NOT RECORDED: " +
						"keeping its last known state (REENC blobs for new keys, EP11 APQN pinning); " +
						"repair or restore the file, then run 'pkcshsm_mk_change list'")
				continue
			}
			t.settle(ctx, view, op)
		}
	}
	return out, nil
}

// lockMK takes l.mkMu, waiting at most until ctx ends (an event's
// deadline): a reconcile that does not return never holds up the ones
// after it for longer than their own deadline.
func (l *Library) lockMK(ctx context.Context) error {
	if l.mkMu.TryLock() {
		return nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return errclass.New(errclass.DeadlineExceeded,
				"master key change: an earlier reconcile of this process is still running: %w", ctx.Err())
		case <-tick.C:
			if l.mkMu.TryLock() {
				return nil
			}
		}
	}
}

// listOps reads the operation files; a missing directory means none. It
// also returns, by name, the files that could not be read.
func (l *Library) listOps(ctx context.Context) ([]*state.Op, map[state.ID]error, error) {
	if l.opsDir == nil {
		d, err := state.Open(l.layout.MKChangeDir(), state.Options{ReadOnly: true, Logger: l.log})
		if errclass.Of(err) == errclass.NotFound {
			return nil, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		l.opsDir = d
	}
	ops, broken, err := l.opsDir.List(ctx)
	bad := map[state.ID]error{}
	for _, b := range broken {
		if b.Recovered {
			// Read from its copy: the operation is in ops, nothing lost.
			l.log.Warn().Err(b.Err).Str("file", b.Name).Msg("master key change operation file damaged; read from its copy")
			continue
		}
		if b.ID != "" {
			bad[b.ID] = b.Err
		}
		l.log.Error().Err(b.Err).Str("file", b.Name).
			Msg("UNREADABLE MASTER KEY CHANGE OPERATION FILE: this process cannot follow that operation from it; " +
				"run 'pkcshsm_mk_change list' for the repair")
	}
	if errclass.Of(err) == errclass.NotFound { // the directory went away
		l.opsDir.Close()
		l.opsDir = nil
		return nil, nil, nil
	}
	return ops, bad, err
}

// endedOps returns the operations whose end the history records. A history
// that cannot be read ends nothing.
func (l *Library) endedOps(ctx context.Context) map[state.ID]bool {
	out := map[state.ID]bool{}
	if l.opsDir == nil {
		return out
	}
	entries, skipped, err := l.opsDir.History(ctx)
	if err != nil {
		l.log.Error().Err(err).Msg("cannot read the master key change history: no operation counts as ended")
		return out
	}
	if skipped > 0 {
		l.log.Warn().Int("lines", skipped).Msg("master key change history has lines that do not parse")
	}
	for _, e := range entries {
		out[e.Op.ID] = true
	}
	return out
}

// reconcileOp applies one operation's state to the token.
func (t *token) reconcileOp(ctx context.Context, view mkchange.Token, op *state.Op) reconcileResult {
	r := reconcileResult{affected: true}
	switch op.State {
	case state.Initial:
		r.affected = false // the queries have not passed yet
	case state.Reenciphering, state.Reenciphered, state.Error:
		t.hsmMu.Lock()
		_, was := t.mkOps[op.ID]
		t.mkOps[op.ID] = op
		t.hsmMu.Unlock()
		if !was {
			t.log.Info().Str("op", string(op.ID)).Msg("master key change operation active")
		}
		r.objects, r.err = t.sessionPass(ctx, view, op, state.ActReencipher)
	case state.Finalizing, state.Canceling:
		a := state.ActFinalize
		if op.State == state.Canceling {
			a = state.ActCancel
		}
		r.objects, r.err = t.sessionPass(ctx, view, op, a)
		if r.err == nil {
			t.deactivate(ctx, op, a == state.ActFinalize)
		}
	}
	switch {
	case r.err != nil:
		t.log.Error().Err(r.err).Str("op", string(op.ID)).Stringer("state", op.State).Msg("master key change: session keys")
	case r.affected:
		t.log.Debug().Str("op", string(op.ID)).Stringer("state", op.State).Int("changed", r.objects).
			Msg("master key change: session keys in line with the operation")
	}
	return r
}

// settle ends an operation whose file is gone: each session key keeps the
// blob the adapters can use now.
func (t *token) settle(ctx context.Context, view mkchange.Token, op *state.Op) {
	finalized := true
	for _, q := range view.APQNsFor(op) {
		info, err := t.lib.backend.Queue(ctx, q)
		if err != nil {
			t.log.Error().Err(err).Str("op", string(op.ID)).Msg("master key change: cannot settle")
			return
		}
		for typ, p := range op.New {
			if regs, ok := info.MK[typ]; ok && regs.Current.Pattern != p {
				finalized = false
			}
		}
	}
	a := state.ActCancel
	if finalized {
		a = state.ActFinalize
	}
	if _, err := t.sessionPass(ctx, view, op, a); err != nil {
		t.log.Error().Err(err).Str("op", string(op.ID)).Msg("master key change: cannot settle session keys")
		return
	}
	t.deactivate(ctx, op, finalized)
}

// deactivate ends an operation in the token. After a finalize the token
// expects the new patterns from now on.
func (t *token) deactivate(ctx context.Context, op *state.Op, finalized bool) {
	t.hsmMu.Lock()
	_, was := t.mkOps[op.ID]
	delete(t.mkOps, op.ID)
	if finalized {
		for typ, p := range op.New {
			if _, ok := t.conf.expected[typ]; ok {
				t.conf.expected[typ] = p
			}
		}
		// Keys made before startHSM below learns the patterns anew are
		// under the new master key, and no active operation vouches for
		// it any more: the pool expects it from this moment. The pool is
		// replaced, not changed, as checkNewBlob reads it unlocked.
		if old := t.pool; old != nil {
			np := &apqnPool{ids: old.ids, expected: maps.Clone(old.expected)}
			for typ, p := range op.New {
				if _, ok := np.expected[typ]; ok {
					np.expected[typ] = p
				}
			}
			np.next.Store(old.next.Load())
			t.pool = np
		}
	}
	t.hsmMu.Unlock()
	if was {
		outcome := "canceled"
		if finalized {
			outcome = "finalized"
		}
		t.log.Info().Str("op", string(op.ID)).Str("outcome", outcome).Msg("master key change operation ended")
	}
	// Learn the patterns anew: the adapters hold the new (or, canceled,
	// the old) master keys everywhere now.
	t.hsmMu.Lock()
	t.learned = nil
	t.hsmMu.Unlock()
	if err := t.startHSM(ctx); err != nil {
		t.log.Error().Err(err).Msg("token HSM check after the master key change failed")
	}
}

// sessionPass applies action a to the session keys of the token. Each key
// is transformed outside t.mu and swapped in only if nobody replaced it
// meanwhile. The keys are taken a page at a time, in handle order
// (sessionPageAfter): t.mu is held only to pick a page, and the pass holds
// one page, not a copy of every session object. Keys made during the pass
// get their REENC blob when they are made (withReenc).
func (t *token) sessionPass(ctx context.Context, view mkchange.Token, op *state.Op, a state.Action) (int, error) {
	qs := view.APQNsFor(op)
	if a == state.ActReencipher && len(qs) == 0 {
		return 0, errclass.New(errclass.FailedPrecondition, "slot %d uses no APQN of operation %s", t.slot, op.ID)
	}
	per := 1
	if a == state.ActReencipher {
		var err error
		if per, err = mkchange.InFlight(); err != nil {
			return 0, err
		}
	}
	lim := mkchange.NewLimiter(per)
	var (
		mu              sync.Mutex
		changed, failed int
		errs            []error
		after           ObjectHandle
	)
	i := 0
	for {
		page := t.sessionPageAfter(after, sessionPage)
		if len(page) == 0 {
			break
		}
		// Up to per requests in flight on every APQN, as many as the
		// APQN's window allows (see mkchange.Each): the window adapts to
		// the adapter's free engines and lasts for the whole pass. An
		// object that fails is reported and the pass goes on with the
		// others, as the next run retries it.
		base := i
		i += len(page)
		apqnOf := func(j int) apqn.ID {
			if len(qs) == 0 {
				return apqn.ID{}
			}
			return qs[(base+j)%len(qs)]
		}
		kindOf := func(j int) int { return len(page[j].attrs[ck.CKA_IBM_OPAQUE]) }
		err := mkchange.Each(ctx, len(page), apqnOf, kindOf, lim, func(ctx context.Context, j int) error {
			o := page[j]
			ok, err := t.sessionTransform(ctx, apqnOf(j), o, op, a)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if failed++; len(errs) < 10 {
					errs = append(errs, fmt.Errorf("session object %d: %w", o.handle, err))
				}
			}
			if ok {
				changed++
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
			break
		}
		after = page[len(page)-1].handle
	}
	if failed > len(errs) {
		errs = append(errs, fmt.Errorf("%d more session objects failed", failed-len(errs)))
	}
	return changed, errors.Join(errs...)
}

// sessionPage is how many session objects sessionPass takes at a time.
var sessionPage = 1024

// sessionPageAfter returns up to n session objects with handles above
// after, in handle order. It keeps at most 2n candidates while it looks.
func (t *token) sessionPageAfter(after ObjectHandle, n int) []*object {
	byHandle := func(a, b *object) int { return cmp.Compare(a.handle, b.handle) }
	t.mu.Lock()
	defer t.mu.Unlock()
	page := make([]*object, 0, 2*n)
	for h, o := range t.sessObjs {
		if h <= after {
			continue
		}
		if len(page) == 2*n {
			slices.SortFunc(page, byHandle)
			page = page[:n]
		}
		page = append(page, o)
	}
	slices.SortFunc(page, byHandle)
	if len(page) > n {
		page = page[:n]
	}
	return page
}

// sessionTransform applies action a to one session key and swaps the
// result in. If the application replaced the object meanwhile (a
// C_SetAttributeValue), the replacement is transformed instead, so no key
// misses the pass; a destroyed object is skipped.
func (t *token) sessionTransform(ctx context.Context, q apqn.ID, o *object, op *state.Op, a state.Action) (bool, error) {
	for range 5 {
		blobs := blobAttrs(o.attrs)
		if blobs == nil {
			return false, nil
		}
		ok, err := mkchange.Transform(ctx, t.lib.backend, q, blobs, op, a)
		if err != nil || !ok {
			return false, err
		}
		n := &object{handle: o.handle, attrs: o.attrs.clone(), session: o.session, version: o.version}
		for _, at := range []ck.Attribute{ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD} {
			if v, ok := blobs[uint32(at)]; ok {
				n.attrs[at] = v
			} else {
				delete(n.attrs, at)
			}
		}
		t.mu.Lock()
		cur, alive := t.sessObjs[o.handle]
		if cur == o {
			t.sessObjs[o.handle] = n
		}
		t.mu.Unlock()
		switch {
		case cur == o:
			return true, nil
		case !alive:
			return false, nil
		}
		o = cur // replaced meanwhile: transform the replacement
	}
	return false, errclass.New(errclass.Aborted, "session object %d kept changing during the master key change pass", o.handle)
}

// blobAttrs returns the blob attributes of a key object as package
// mkchange handles them, or nil for objects without a secure key.
func blobAttrs(tm template) map[uint32][]byte {
	if len(tm[ck.CKA_IBM_OPAQUE]) == 0 {
		return nil
	}
	m := map[uint32][]byte{}
	for _, at := range []ck.Attribute{ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD} {
		if v, ok := tm[at]; ok {
			m[uint32(at)] = v
		}
	}
	return m
}

// keyBlobs are the secure keys of a new key object: the key itself and,
// while an operation changes its master key, the same key under the new
// master key.
type keyBlobs struct {
	opaque, reenc []byte
}

// freshness remembers the operations directory's modification time as of
// the last read of the operations, so that making a key can tell with one
// stat whether an operation may have started since.
type freshness struct {
	mu    sync.Mutex
	stamp time.Time
	known bool
}

func (f *freshness) saw(stamp time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stamp, f.known = stamp, true
}

func (f *freshness) changed(stamp time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.known || !stamp.Equal(f.stamp)
}

// opsStamp is the operations directory's modification time (zero if it
// does not exist): every operation file written or removed changes it.
func (l *Library) opsStamp() time.Time {
	fi, err := os.Stat(l.layout.MKChangeDir())
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// learnOps makes sure a key made now sees every operation already active
// on the token, even when this process has not reconciled since the
// operation began (it was stopped, or its agent is behind): if the
// operations directory changed since the last read, it reads the
// operations and adds the active ones that affect the token. Session keys
// are left to the full reconcile it asks the agent for. It takes no lock
// of the token but hsmMu, so callers may hold t.mu; its wait for the
// directory lock is bounded.
func (t *token) learnOps(ctx context.Context) {
	l := t.lib
	stamp := l.opsStamp()
	if !l.mkFresh.changed(stamp) {
		return
	}
	d, err := state.Open(l.layout.MKChangeDir(), state.Options{ReadOnly: true, Logger: l.log, LockTimeout: 2 * time.Second})
	if errclass.Of(err) == errclass.NotFound {
		l.mkFresh.saw(stamp)
		return
	}
	if err != nil {
		t.log.Error().Err(err).Msg("master key change: cannot check the operations before making a key")
		return
	}
	defer d.Close()
	ops, _, err := d.List(ctx)
	if err != nil {
		t.log.Error().Err(err).Msg("master key change: cannot check the operations before making a key")
		return
	}
	view, err := t.mkView(ctx)
	if err != nil {
		return
	}
	learned := false
	for _, op := range ops {
		switch op.State {
		case state.Reenciphering, state.Reenciphered, state.Error:
		default:
			continue
		}
		if !view.Affected(op) {
			continue
		}
		t.hsmMu.Lock()
		if _, ok := t.mkOps[op.ID]; !ok {
			t.mkOps[op.ID] = op
			learned = true
			t.log.Info().Str("op", string(op.ID)).Msg("master key change operation active (learned when making a key)")
		}
		t.hsmMu.Unlock()
	}
	l.mkFresh.saw(stamp)
	if learned && l.agent != nil {
		l.agent.RequestReconcile()
	}
}

// withReenc adds the REENC blob to a key just made on APQN q, if an active
// operation changes its master key. ErrRetryCreate asks the caller to
// make the key again (an EP11 APQN activated the new key in between).
func (t *token) withReenc(ctx context.Context, q apqn.ID, blob []byte) (keyBlobs, error) {
	kb := keyBlobs{opaque: blob}
	t.learnOps(ctx)
	ops := t.activeOps()
	if len(ops) == 0 {
		return kb, nil
	}
	info, err := hsm.Inspect(blob)
	if err != nil {
		return kb, err
	}
	for _, op := range ops {
		want, ok := op.New[info.MKType]
		if !ok {
			continue
		}
		if info.Pattern == want {
			kb.reenc = slices.Clone(blob)
			return kb, nil
		}
		out, err := t.lib.backend.Reencipher(ctx, q, blob, hsm.ToNew)
		// A session-bound EP11 key whose session q lost (reset) meanwhile:
		// log the session in again and retry, as every use of a key does.
		err = t.ep11Retry(ctx, q, err, func() error {
			var e error
			out, e = t.lib.backend.Reencipher(ctx, q, blob, hsm.ToNew)
			return e
		})
		if errors.Is(err, hsm.ErrRegisterState) && info.MKType != mkvp.EP11WK {
			// The APQN activated the new key since: the blob is under
			// its OLD register now (CCA only). If it is not, the APQN
			// has no NEW key to give the blob: another APQN may.
			toNew := err
			out, err = t.lib.backend.Reencipher(ctx, q, blob, hsm.FromOld)
			if errors.Is(err, hsm.ErrWrongMK) {
				return kb, errclass.As(errclass.Unavailable,
					fmt.Errorf("re-encipher the new key for operation %s: %w", op.ID, toNew))
			}
		}
		if errors.Is(err, hsm.ErrRegisterState) {
			return kb, errRetryCreate
		}
		if err != nil {
			return kb, fmt.Errorf("re-encipher the new key for operation %s: %w", op.ID, err)
		}
		kb.reenc = out
		return kb, nil
	}
	return kb, nil
}

var errRetryCreate = errclass.New(errclass.Unavailable, "the APQN activated the new master key while the key was made")

// ---- the runtime agent's handler ----

// agentHandler connects the Library to its runtime agent.
type agentHandler struct{ l *Library }

func (h agentHandler) Tokens() []event.Token {
	var out []event.Token
	for _, id := range h.l.order {
		t := h.l.slots[id]
		info, err := t.db.info()
		if err != nil || info.Flags&uint64(ck.CKF_TOKEN_INITIALIZED) == 0 {
			continue
		}
		typ := event.CCA
		if t.conf.typ == TokenEP11 {
			typ = event.EP11
		}
		out = append(out, event.Token{Slot: uint32(id), Label: info.Label, Serial: info.Serial, Type: typ})
	}
	return out
}

func (h agentHandler) HandleEvent(ctx context.Context, ev event.Event) event.Reply {
	reply := event.Reply{EventID: ev.ID}
	if ev.Type == state.CensusEventType {
		return h.l.sessionCensus(ev)
	}
	if _, err := state.ParseEventType(ev.Type); err != nil {
		return reply // not ours: every token not affected
	}
	res, err := h.l.reconcile(ctx)
	failpoint.Hit("agent.event.after-session-pass")
	for _, tok := range h.Tokens() {
		tr := event.TokenResult{Slot: tok.Slot, Serial: tok.Serial, Result: event.NotAffected}
		if err != nil {
			tr.Result, tr.Error, tr.Class = event.Failed, err.Error(), errclass.Of(err)
		} else if r, ok := res[state.ID(ev.OpID)][SlotID(tok.Slot)]; ok && r.affected {
			tr.Result, tr.Objects = event.Affected, r.objects
			if r.err != nil {
				tr.Result, tr.Error, tr.Class = event.Failed, r.err.Error(), errclass.Of(r.err)
			}
		}
		reply.Tokens = append(reply.Tokens, tr)
	}
	return reply
}

func (h agentHandler) Reconcile(ctx context.Context) error {
	_, err := h.l.reconcile(ctx)
	return err
}
