package tokenlib

import (
	"context"
	"encoding/json"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"maps"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/mkchange"
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
