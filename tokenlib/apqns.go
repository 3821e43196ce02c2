package tokenlib

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// apqnPool is the set of APQNs a token uses, checked at token start, and
// the round-robin cursor that spreads work over them.
type apqnPool struct {
	ids      []apqn.ID
	next     atomic.Uint64
	expected map[mkvp.Type]mkvp.Pattern // CURRENT pattern every APQN has
	// pin is the index of the one APQN an EP11 token uses while a master
	// key change is active, so that it does not hop between APQNs holding
	// different wrapping keys while the officer activates them one by one.
	pin atomic.Uint64
}

// mkTypes are the master key types a token type relies on.
func (tt TokenType) mkTypes() []mkvp.Type {
	if tt == TokenEP11 {
		return []mkvp.Type{mkvp.EP11WK}
	}
	return []mkvp.Type{mkvp.CCASYM, mkvp.CCAAES, mkvp.CCAAPKA}
}

func (tt TokenType) mode() apqn.Mode {
	if tt == TokenEP11 {
		return apqn.ModeEP11
	}
	return apqn.ModeCCA
}

// startHSM selects the token's APQNs and checks their master keys:
// configured APQNs (or all, for APQN_ANY) that the backend has online in
// the token's mode; each must have every needed CURRENT register valid and
// equal to the configured expected pattern, or, where none is configured,
// to the first APQN's.
func (t *token) startHSM(ctx context.Context) error {
	pool, err := t.selectAPQNs(ctx)
	t.hsmMu.Lock()
	defer t.hsmMu.Unlock()
	t.pool, t.hsmErr = pool, err
	if err == nil {
		t.learned = maps.Clone(pool.expected)
		ids := make([]string, len(pool.ids))
		for i, id := range pool.ids {
			ids[i] = id.String()
		}
		t.log.Info().Str("apqns", strings.Join(ids, ",")).Msg("token HSM check passed")
	}
	return err
}

func (t *token) selectAPQNs(ctx context.Context) (*apqnPool, error) {
	b := t.lib.backend
	qs, err := b.Queues(ctx)
	if err != nil {
		return nil, wrapRV(ck.CKR_DEVICE_ERROR, err, "slot %d: list APQNs", t.slot)
	}
	mode := t.conf.typ.mode()
	pool := &apqnPool{expected: map[mkvp.Type]mkvp.Pattern{}}
	var skipped []string
	var usable []hsm.QueueInfo
	for _, q := range qs {
		if !t.conf.apqnAny && !apqn.List(t.conf.apqns).Contains(q.ID) {
			continue
		}
		switch {
		case q.Mode != mode:
			skipped = append(skipped, fmt.Sprintf("%s is in %s mode", q.ID, q.Mode))
			continue
		case !q.Online:
			skipped = append(skipped, fmt.Sprintf("%s is offline", q.ID))
			continue
		}
		usable = append(usable, q)
	}
	if len(usable) == 0 {
		what := "the configured APQNs"
		if t.conf.apqnAny {
			what = "any APQN (APQN_ANY)"
		}
		detail := ""
		if len(skipped) > 0 {
			detail = ": " + strings.Join(skipped, "; ")
		}
		return nil, newErrh(ck.CKR_DEVICE_ERROR, errclass.Unavailable,
			"check the APQN selection in the token configuration and that the adapters are online",
			"slot %d: no usable %s adapter among %s%s", t.slot, mode, what, detail)
	}
	// While a master key change is active, an APQN may already hold the
	// new master key: that pattern is accepted too.
	t.hsmMu.Lock()
	expected := maps.Clone(t.conf.expected)
	learned := maps.Clone(t.learned)
	t.hsmMu.Unlock()
	changing := t.newPatterns()
	for _, mt := range t.conf.typ.mkTypes() {
		want, configured := expected[mt]
		newP, isChanging := changing[mt]
		// An earlier check learned what the token's keys are under: expect
		// that again, so a master key changed outside a procedure (and
		// changed back) is refused, not learned, when the check re-runs
		// after failures.
		remembered := false
		if !configured {
			want, remembered = learned[mt]
		}
		if !configured && !remembered && isChanging {
			// Learn the old pattern from an APQN that has not switched.
			for _, q := range usable {
				if p := q.MK[mt].Current.Pattern; p != newP {
					want = p
					break
				}
			}
		}
		for _, q := range usable {
			cur := q.MK[mt].Current
			if cur.State != apqn.StateValid || cur.Pattern.IsZero() {
				return nil, newErrh(ck.CKR_DEVICE_ERROR, errclass.FailedPrecondition,
					"have the security officer load and set the master key",
					"slot %d: APQN %s has no valid CURRENT %s master key", t.slot, q.ID, mt.LongName())
			}
			if isChanging && cur.Pattern == newP {
				continue
			}
			if want.IsZero() {
				want = cur.Pattern
				continue
			}
			if cur.Pattern != want {
				source := "the other APQNs'"
				hint := "all APQNs of a token must have the same master key; fix the APQN selection or the master keys"
				if remembered {
					source = "the token's keys' (learned when the token started)"
					hint = "a master key was changed outside a master key change procedure; have the security officer set it back"
				}
				if configured {
					source = "the expected (configuration)"
					hint = "update the expected pattern in the token configuration, or fix the master key on the APQN"
				}
				err := newErrh(ck.CKR_DEVICE_ERROR, errclass.FailedPrecondition, hint,
					"slot %d: APQN %s has CURRENT %s master key pattern %s, not %s pattern %s",
					t.slot, q.ID, mt.LongName(), cur.Pattern, source, want)
				t.log.Error().Str("apqn", q.ID.String()).Str("mk", mt.LongName()).
					Str("pattern", cur.Pattern.String()).Str("expected", want.String()).Msg("master key pattern mismatch")
				return nil, err
			}
		}
		pool.expected[mt] = want
	}
	for _, q := range usable {
		pool.ids = append(pool.ids, q.ID)
	}
	return pool, nil
}

// hsmPool returns the checked APQN pool, re-running the check if it failed
// before (an adapter may have come online since).
func (t *token) hsmPool(ctx context.Context) (*apqnPool, error) {
	t.hsmMu.Lock()
	p := t.pool
	t.hsmMu.Unlock()
	if p != nil {
		return p, nil
	}
	if err := t.startHSM(ctx); err != nil {
		return nil, err
	}
	t.hsmMu.Lock()
	defer t.hsmMu.Unlock()
	return t.pool, nil
}

// onAPQN runs fn on the token's APQNs, round robin: each call starts at
// the next APQN, and an Unavailable-class failure moves on to the one after.
// Any other error is final.
func (t *token) onAPQN(ctx context.Context, fn func(q apqn.ID) error) error {
	p, err := t.hsmPool(ctx)
	if err != nil {
		return err
	}
	n := uint64(len(p.ids))
	pinned := t.conf.typ == TokenEP11 && len(t.activeOps()) > 0
	start := p.next.Add(1)
	if pinned {
		start = p.pin.Load()
	}
	var errs []error
	for i := range n {
		q := p.ids[(start+i)%n]
		err := fn(q)
		if err == nil || !errors.Is(err, errclass.Unavailable) {
			if pinned && i > 0 {
				p.pin.Store((start + i) % n)
				t.log.Info().Str("apqn", q.String()).Msg("EP11 token now uses a single APQN")
			}
			return err
		}
		t.log.Warn().Str("apqn", q.String()).Err(err).Msg("APQN unavailable, trying the next one")
		errs = append(errs, fmt.Errorf("%s: %w", q, err))
	}
	// Every APQN failed: check the adapters again on the next call, so an
	// APQN that came online since the token started is picked up.
	t.hsmMu.Lock()
	if t.pool == p {
		t.pool, t.hsmErr = nil, nil
	}
	t.hsmMu.Unlock()
	return wrapRV(ck.CKR_DEVICE_ERROR, errors.Join(errs...), "slot %d: no APQN could do the operation", t.slot)
}

// checkNewBlob verifies that a blob the HSM just made is enciphered under
// the master key the token expects.
func (t *token) checkNewBlob(blob []byte) error {
	info, err := hsm.Inspect(blob)
	if err != nil {
		return wrapRV(ck.CKR_DEVICE_ERROR, err, "slot %d: the HSM returned an unreadable secure key", t.slot)
	}
	// The pool and the active operations are read together: a finalize
	// swaps both at once (deactivate), and either view accepts the new key.
	t.hsmMu.Lock()
	p := t.pool
	changing := map[mkvp.Type]mkvp.Pattern{}
	for _, op := range t.mkOps {
		maps.Copy(changing, op.New)
	}
	t.hsmMu.Unlock()
	if p == nil {
		return newErr(ck.CKR_DEVICE_ERROR, errclass.FailedPrecondition, "slot %d: HSM not checked", t.slot)
	}
	want, ok := p.expected[info.MKType]
	if newP, isChanging := changing[info.MKType]; isChanging && info.Pattern == newP {
		return nil // made on an APQN that already has the new master key
	}
	if !ok || info.Pattern != want {
		t.log.Error().Str("mk", info.MKType.LongName()).Str("pattern", info.Pattern.String()).
			Str("expected", want.String()).Msg("new key is not enciphered under the expected master key")
		return newErrh(ck.CKR_DEVICE_ERROR, errclass.FailedPrecondition,
			"a master key was changed outside a master key change procedure; check the APQNs' registers",
			"slot %d: new %s key has master key pattern %s, expected %s %s",
			t.slot, info.KeyType, info.Pattern, info.MKType.LongName(), want)
	}
	return nil
}
