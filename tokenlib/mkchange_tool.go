package tokenlib

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// This file is what pkcshsm_mk_change uses of a Library: the master key
// change view of a slot and the token-object pass. Both work from the
// token's configuration and store, not from the token's HSM check, so the
// tool can finalize even while the APQNs hold a mix of old and new master
// keys (which fails that check by design).

// Backend returns the HSM backend the Library uses.
func (l *Library) Backend() hsm.Backend { return l.backend }

// MKChangeToken describes slot id for the master key change: its type, the
// APQNs it uses (its allowlist, or every APQN of its mode for APQN_ANY) and
// the patterns it expects (configured, or learned at token start).
func (l *Library) MKChangeToken(ctx context.Context, id SlotID) (mkchange.Token, error) {
	t, err := l.token(id)
	if err != nil {
		return mkchange.Token{}, err
	}
	mt := mkchange.Token{
		Slot:    uint(id),
		Type:    config.TypeCCA,
		APQNAny: t.conf.apqnAny,
	}
	if t.conf.typ == TokenEP11 {
		mt.Type = config.TypeEP11
	}
	t.hsmMu.Lock() // guards conf.expected and pool
	mt.Expected = maps.Clone(t.conf.expected)
	if mt.Expected == nil {
		mt.Expected = map[mkvp.Type]mkvp.Pattern{}
	}
	if t.pool != nil {
		for typ, p := range t.pool.expected {
			if _, ok := mt.Expected[typ]; !ok {
				mt.Expected[typ] = p
			}
		}
	}
	t.hsmMu.Unlock()
	if !t.conf.apqnAny {
		mt.APQNs = append([]apqn.ID(nil), t.conf.apqns...)
		return mt, nil
	}
	qs, err := l.backend.Queues(ctx)
	if err != nil {
		return mkchange.Token{}, wrapRV(ck.CKR_DEVICE_ERROR, err, "slot %d: list APQNs", id)
	}
	for _, q := range qs {
		if q.Mode == t.conf.typ.mode() {
			mt.APQNs = append(mt.APQNs, q.ID)
		}
	}
	return mt, nil
}

// MKChangePass applies action a of op to every token object of slot id in
// the token's store. The USER must be logged in on the slot (private
// objects are sealed under the data key the USER login unlocks).
func (l *Library) MKChangePass(ctx context.Context, id SlotID, op *state.Op, a state.Action, progress func(done, total int)) (int, error) {
	t, err := l.token(id)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	dk := t.readKey()
	t.mu.Unlock()
	if dk == nil {
		return 0, newErrh(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied,
			"log in as USER first", "slot %d: the USER is not logged in", id)
	}
	mt, err := l.MKChangeToken(ctx, id)
	if err != nil {
		return 0, err
	}
	n, err := mt.Pass(ctx, t.db.st, dk, l.backend, op, a, progress)
	t.mu.Lock()
	t.invalidateCache()
	t.mu.Unlock()
	return n, err
}

// MKChangeCensus counts, without a PIN, the token objects of slot id that
// have no blob under the patterns in newp (the answer of
// `pkcshsm_mk_change verify`), and the keys under master keys no APQN of
// the token has in any register. It reports whether activating newp on
// apqns concerns the token at all.
func (l *Library) MKChangeCensus(ctx context.Context, id SlotID, apqns apqn.List, newp map[mkvp.Type]mkvp.Pattern) (mkchange.CensusResult, bool, error) {
	t, err := l.token(id)
	if err != nil {
		return mkchange.CensusResult{}, false, err
	}
	mt, err := l.MKChangeToken(ctx, id)
	if err != nil {
		return mkchange.CensusResult{}, false, err
	}
	if !mt.Affected(&state.Op{APQNs: apqns, New: newp}) {
		return mkchange.CensusResult{}, false, nil
	}
	// The patterns some register of the token's APQNs holds: a key under
	// none of them can no longer be used by any adapter.
	known := map[mkvp.Type][]mkvp.Pattern{}
	for _, q := range mt.APQNs {
		info, err := l.backend.Queue(ctx, q)
		if err != nil {
			return mkchange.CensusResult{}, true, wrapRV(ck.CKR_DEVICE_ERROR, err, "slot %d: query APQN %s", id, q)
		}
		for typ, regs := range info.MK {
			for _, r := range []hsm.Register{regs.Current, regs.New, regs.Old} {
				if !r.Pattern.IsZero() {
					known[typ] = append(known[typ], r.Pattern)
				}
			}
		}
	}
	isKnown := func(typ mkvp.Type, p mkvp.Pattern) bool {
		for _, k := range known[typ] {
			if k == p {
				return true
			}
		}
		return false
	}
	if len(mt.APQNs) == 0 {
		isKnown = nil
	}
	r, err := mt.Census(ctx, t.db.st, newp, isKnown)
	return r, true, err
}

// sessionCensus answers a census event: per token the request concerns,
// how many session keys of this process it concerns (Objects) and how many
// of them have no blob under the new pattern (ObjectsFailed).
func (l *Library) sessionCensus(ev event.Event) event.Reply {
	reply := event.Reply{EventID: ev.ID}
	var req state.CensusRequest
	reqErr := json.Unmarshal(ev.Payload, &req)
	for _, tok := range (agentHandler{l}).Tokens() {
		tr := event.TokenResult{Slot: tok.Slot, Serial: tok.Serial, Result: event.NotAffected}
		t := l.slots[SlotID(tok.Slot)]
		view, err := t.mkView(context.Background())
		switch {
		case reqErr != nil:
			tr.Result, tr.Error, tr.Class = event.Failed, "census request: "+reqErr.Error(), errclass.InvalidArgument
		case err != nil:
			tr.Result, tr.Error, tr.Class = event.Failed, err.Error(), errclass.Of(err)
		case view.Affected(&state.Op{APQNs: req.APQNs, New: req.New}):
			tr.Result = event.Affected
			var after ObjectHandle
			for {
				page := t.sessionPageAfter(after, sessionPage)
				if len(page) == 0 {
					break
				}
				for _, o := range page {
					concerned, missing := view.SessionCensus(blobAttrs(o.attrs), req.New)
					if concerned {
						tr.Objects++
					}
					if missing {
						tr.ObjectsFailed++
					}
				}
				after = page[len(page)-1].handle
			}
		}
		reply.Tokens = append(reply.Tokens, tr)
	}
	return reply
}

// MKChangeUncovered is what `pkcshsm slots` reports of a token a master
// key change of another host concerns: the APQNs of the token with a
// loaded NEW register for a type the token uses, those patterns, how many
// token keys have no blob under them, and whether an active operation of
// this host covers the token. Keys under master keys no register of the
// token's APQNs holds are counted in Lost whatever is loaded.
type MKChangeUncovered struct {
	APQNs      apqn.List
	New        map[mkvp.Type]mkvp.Pattern
	MissingNew int
	Lost       int
	Covered    bool
}

// MKChangeForeign checks slot id against its adapters' NEW registers and
// this host's operations (read-only, no PIN).
func (l *Library) MKChangeForeign(ctx context.Context, id SlotID) (MKChangeUncovered, error) {
	var u MKChangeUncovered
	mt, err := l.MKChangeToken(ctx, id)
	if err != nil {
		return u, err
	}
	u.New = map[mkvp.Type]mkvp.Pattern{}
	cur := map[mkvp.Type]mkvp.Pattern{}
	uses := mkchange.TypesFor(mt.Type)
	for _, q := range mt.APQNs {
		info, err := l.backend.Queue(ctx, q)
		if err != nil {
			return u, wrapRV(ck.CKR_DEVICE_ERROR, err, "slot %d: query APQN %s", id, q)
		}
		for _, typ := range uses {
			if c := info.MK[typ].Current.Pattern; !c.IsZero() {
				cur[typ] = c
			}
			if r := info.MK[typ].New; r.State != apqn.StateEmpty && !r.Pattern.IsZero() {
				u.New[typ] = r.Pattern
				if !u.APQNs.Contains(q) {
					u.APQNs = append(u.APQNs, q)
				}
			}
		}
	}
	all := apqn.List(mt.APQNs)
	if len(u.New) == 0 {
		// Nothing loaded: only keys already lost to an activation.
		r, _, err := l.MKChangeCensus(ctx, id, all, cur)
		u.Lost = r.Lost
		return u, err
	}
	r, _, err := l.MKChangeCensus(ctx, id, all, u.New)
	if err != nil {
		return u, err
	}
	u.MissingNew, u.Lost = r.MissingNew, r.Lost
	d, err := state.Open(l.layout.MKChangeDir(), state.Options{ReadOnly: true, Logger: l.log})
	if errclass.Of(err) == errclass.NotFound {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	defer d.Close()
	ops, _, err := d.List(ctx)
	if err != nil {
		return u, err
	}
	for _, op := range ops {
		for _, s := range op.Slots {
			if s.ID != uint(id) {
				continue
			}
			for typ, p := range u.New {
				if op.New[typ] == p {
					u.Covered = true
				}
			}
		}
	}
	return u, nil
}

// MKChangeLastPass reads slot id's journal: the master key change pass
// that last touched its token objects (no PIN needed).
func (l *Library) MKChangeLastPass(ctx context.Context, id SlotID) (store.Journal, bool, error) {
	t, err := l.token(id)
	if err != nil {
		return store.Journal{}, false, err
	}
	return t.db.st.LastPass(ctx)
}

// MKChangeCheck checks slot id before a master key change records
// anything: its store (integrity, schema version, and the data key of the
// USER logged in on it) and the blobs of its key objects, all of which
// are read and unsealed (store.ListBlobs); it returns the first max keys op cannot re-encipher
// ([mkchange.LostKey]) and how many there are. current holds the token's
// current patterns (from the query). A damaged store is an error of class
// DataLoss that names the way out.
func (l *Library) MKChangeCheck(ctx context.Context, id SlotID, op *state.Op, current map[mkvp.Type]mkvp.Pattern, max int) ([]mkchange.LostKey, int, error) {
	t, err := l.token(id)
	if err != nil {
		return nil, 0, err
	}
	t.mu.Lock()
	dk := t.readKey()
	t.mu.Unlock()
	if dk == nil {
		return nil, 0, newErrh(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied,
			"log in as USER first", "slot %d: the USER is not logged in", id)
	}
	if err := t.db.st.Check(ctx, dk); err != nil {
		return nil, 0, errclass.WithHint(err, storeRestoreHint(id))
	}
	mt, err := l.MKChangeToken(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	lost, n, err := mt.FindLost(ctx, t.db.st, dk, op, current, max)
	if err != nil && errclass.Of(err) == errclass.DataLoss {
		err = errclass.WithHint(err, storeRestoreHint(id))
	}
	for i := range lost {
		lost[i].UnderOld = l.underOld(ctx, mt.APQNs, lost[i].MKType, lost[i].Pattern)
	}
	return lost, n, err
}

// underOld reports whether p is the valid OLD master key of type typ on
// every one of qs (CCA keeps one; EP11 has none).
func (l *Library) underOld(ctx context.Context, qs []apqn.ID, typ mkvp.Type, p mkvp.Pattern) bool {
	if typ == mkvp.EP11WK || len(qs) == 0 {
		return false
	}
	for _, q := range qs {
		qi, err := l.backend.Queue(ctx, q)
		if err != nil {
			return false
		}
		old := qi.MK[typ].Old
		if old.State != apqn.StateValid || old.Pattern != p {
			return false
		}
	}
	return true
}

// CheckStore checks slot id's store without a login: SQLite's integrity
// check, the schema version, the token record and the USER PIN's wrap of
// the data key (and the data key itself if a USER is logged in).
func (l *Library) CheckStore(ctx context.Context, id SlotID) error {
	t, err := l.token(id)
	if err != nil {
		return err
	}
	t.mu.Lock()
	dk := t.readKey()
	t.mu.Unlock()
	if err := t.db.st.Check(ctx, dk); err != nil {
		return errclass.WithHint(err, storeRestoreHint(id))
	}
	return nil
}

// BackupStore writes a consistent copy of slot id's store to dest (see
// [store.Store.Backup]); applications go on using the token meanwhile.
func (l *Library) BackupStore(ctx context.Context, id SlotID, dest string) error {
	t, err := l.token(id)
	if err != nil {
		return err
	}
	if err := t.db.st.Backup(ctx, dest); err != nil {
		return fmt.Errorf("slot %d: %w", id, err)
	}
	return nil
}

// StorePath returns the database file of slot id's token.
func (l *Library) StorePath(id SlotID) (string, error) {
	t, err := l.token(id)
	if err != nil {
		return "", err
	}
	return t.db.st.Path(), nil
}

func storeRestoreHint(id SlotID) string {
	return fmt.Sprintf("restore the token from its last backup: stop the applications using it, then run 'pkcshsm token restore --slot %d FILE' (a backup is made with 'pkcshsm token backup --slot %d FILE')", id, id)
}
