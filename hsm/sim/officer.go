package sim

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Tx is one all-or-nothing change of the simulator: every step runs on a
// private copy of the state, and the copy is written only if the function
// given to [HSM.Do] returns nil. A step that fails leaves the copy as it
// was before that step.
type Tx struct {
	st *stateFile
}

// Do runs fn as one transaction under the simulator's exclusive lock. Other
// processes see all of its changes at their next operation, or none.
func (h *HSM) Do(ctx context.Context, fn func(tx *Tx) error) error {
	if err := ctx.Err(); err != nil {
		return ctxErr(err)
	}
	return h.mutate(ctx, func(st *stateFile) error { return fn(&Tx{st: st}) })
}

// LoadNew implements [hsm.Officer] as a transaction of one step.
func (h *HSM) LoadNew(ctx context.Context, q apqn.ID, t mkvp.Type, key []byte, part hsm.Part) (mkvp.Pattern, error) {
	var p mkvp.Pattern
	err := h.Do(ctx, func(tx *Tx) error {
		var err error
		p, err = tx.LoadNew(q, t, key, part)
		return err
	})
	if err == nil {
		h.log.Debug().Stringer("apqn", q).Stringer("type", t).Int("part", part.Index).Msg("officer: load new master key")
	}
	return p, err
}

// Commit implements [hsm.Officer].
func (h *HSM) Commit(ctx context.Context, q apqn.ID) error {
	return h.Do(ctx, func(tx *Tx) error { return tx.Commit(q) })
}

// Set implements [hsm.Officer].
func (h *HSM) Set(ctx context.Context, q apqn.ID, t mkvp.Type) error {
	return h.Do(ctx, func(tx *Tx) error { return tx.Set(q, t) })
}

// ClearNew implements [hsm.Officer].
func (h *HSM) ClearNew(ctx context.Context, q apqn.ID, t mkvp.Type) error {
	return h.Do(ctx, func(tx *Tx) error { return tx.ClearNew(q, t) })
}

func (tx *Tx) queue(q apqn.ID) (*queueState, error) {
	qs := tx.st.queue(q)
	if qs == nil {
		return nil, noSuchAPQN(q)
	}
	return qs, nil
}

// regs finds the register set of type t on q for an officer step, which
// needs the APQN reachable.
func (tx *Tx) regs(q apqn.ID, t mkvp.Type) (*queueState, *regSet, error) {
	qs, err := tx.queue(q)
	if err != nil {
		return nil, nil, err
	}
	mode := apqn.Mode(qs.Mode)
	if !t.Valid() || (mode == apqn.ModeCCA) != t.IsCCA() {
		return nil, nil, errclass.Newh(errclass.InvalidArgument,
			"CCA APQNs have SYM, ASYM, AES and APKA master keys; EP11 APQNs have WK",
			"APQN %s is %s and has no %s master key: %w", q, mode, t, hsm.ErrWrongMode)
	}
	if err := offlineErr(qs); err != nil {
		return nil, nil, err
	}
	return qs, qs.Registers[t], nil
}

func regStateErr(q apqn.ID, t mkvp.Type, hint, format string, args ...any) error {
	return errclass.Newh(errclass.FailedPrecondition, hint, "APQN %s %s: %s: %w",
		q, t.Keyword(), fmt.Sprintf(format, args...), hsm.ErrRegisterState)
}

// KeySize is the length in bytes of a master key of type t: 24 for SYM and
// ASYM, 32 for AES, APKA and WK.
func KeySize(t mkvp.Type) int { return keySize(t) }

// CheckPart validates a part spec for type t.
func CheckPart(t mkvp.Type, p hsm.Part) error {
	if p == (hsm.Part{}) {
		return nil
	}
	if p.Total < 1 || p.Total > 16 || p.Index < 1 || p.Index > p.Total {
		return errclass.Newh(errclass.InvalidArgument, "write the part as I/N with 1 <= I <= N <= 16, e.g. 1/3",
			"invalid key part %d/%d", p.Index, p.Total)
	}
	if t == mkvp.EP11WK && p.Total > 1 {
		return errclass.Newh(errclass.InvalidArgument, "load the complete wrapping key in one step (omit the part)",
			"EP11 wrapping keys are not loaded in parts here")
	}
	return nil
}

// LoadNew loads key (nil: random) into the NEW register; see [hsm.Officer].
func (tx *Tx) LoadNew(q apqn.ID, t mkvp.Type, key []byte, part hsm.Part) (mkvp.Pattern, error) {
	qs, r, err := tx.regs(q, t)
	if err != nil {
		return mkvp.Pattern{}, err
	}
	if err := CheckPart(t, part); err != nil {
		return mkvp.Pattern{}, err
	}
	if part.Total == 1 {
		part = hsm.Part{}
	}
	if key == nil {
		key = make([]byte, keySize(t))
		if _, err := rand.Read(key); err != nil {
			return mkvp.Pattern{}, errclass.New(errclass.Internal, "random master key: %w", err)
		}
	} else if len(key) != keySize(t) {
		return mkvp.Pattern{}, errclass.Newh(errclass.InvalidArgument,
			"give SYM and ASYM keys as 24 bytes (48 hex digits), AES, APKA and WK keys as 32 bytes (64 hex digits)",
			"%s master key has %d bytes, want %d", t, len(key), keySize(t))
	}
	ns := r.New.State.st()
	if part.Index <= 1 {
		if ns != apqn.StateEmpty {
			return mkvp.Pattern{}, regStateErr(q, t, "clear it with `hsmsim clear-new` or activate it with `hsmsim set` first",
				"NEW register is %s, want empty", ns)
		}
	} else if ns != apqn.StatePartial || r.New.Parts != part.Index-1 || r.New.Total != part.Total {
		have := ns.String()
		if ns == apqn.StatePartial {
			have = fmt.Sprintf("partial with %d/%d parts", r.New.Parts, r.New.Total)
		}
		return mkvp.Pattern{}, regStateErr(q, t, "load the parts in order, 1/N first",
			"part %d/%d needs NEW partial with %d/%d parts, have %s", part.Index, part.Total, part.Index-1, part.Total, have)
	}
	acc := slices.Clone(key)
	if part.Index > 1 {
		for i := range acc {
			acc[i] ^= r.New.Key[i]
		}
	}
	if part.Index >= 1 && part.Index < part.Total {
		r.New = register{State: stateName(apqn.StatePartial), Key: acc, Parts: part.Index, Total: part.Total}
		return mkvp.Pattern{}, nil
	}
	r.New = register{State: stateName(apqn.StateFull), Key: acc}
	if apqn.Mode(qs.Mode) == apqn.ModeEP11 {
		r.New.State = stateName(apqn.StateUncommitted)
	}
	return PatternOf(t, acc), nil
}

// Commit commits an uncommitted EP11 NEW wrapping key.
func (tx *Tx) Commit(q apqn.ID) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	if apqn.Mode(qs.Mode) != apqn.ModeEP11 {
		return errclass.Newh(errclass.InvalidArgument, "CCA master keys need no commit; use `hsmsim set`",
			"APQN %s is %s: %w", q, apqn.Mode(qs.Mode), hsm.ErrWrongMode)
	}
	_, r, err := tx.regs(q, mkvp.EP11WK)
	if err != nil {
		return err
	}
	if ns := r.New.State.st(); ns != apqn.StateUncommitted {
		return regStateErr(q, mkvp.EP11WK, "load a new wrapping key with `hsmsim load-new` first",
			"NEW register is %s, want uncommitted", ns)
	}
	r.New.State = stateName(apqn.StateCommitted)
	return nil
}

// Set activates the NEW master key: CCA CURRENT→OLD, NEW→CURRENT; EP11
// committed NEW→CURRENT; NEW is emptied.
func (tx *Tx) Set(q apqn.ID, t mkvp.Type) error {
	qs, r, err := tx.regs(q, t)
	if err != nil {
		return err
	}
	want, hint := apqn.StateFull, "load all parts of a new master key with `hsmsim load-new` first"
	if apqn.Mode(qs.Mode) == apqn.ModeEP11 {
		want, hint = apqn.StateCommitted, "load and commit a new wrapping key first (`hsmsim load-new`, `hsmsim commit`)"
	}
	if ns := r.New.State.st(); ns != want {
		return regStateErr(q, t, hint, "NEW register is %s, want %s", ns, want)
	}
	if t != mkvp.EP11WK {
		r.Old = r.Current
	}
	r.Current = register{State: stateName(apqn.StateValid), Key: r.New.Key}
	r.New = register{State: stateName(apqn.StateEmpty)}
	return nil
}

// ClearNew empties the NEW register (a no-op when it is empty).
func (tx *Tx) ClearNew(q apqn.ID, t mkvp.Type) error {
	_, r, err := tx.regs(q, t)
	if err != nil {
		return err
	}
	r.New = register{State: stateName(apqn.StateEmpty)}
	return nil
}

// SetOnline takes an APQN online or offline. An offline APQN refuses every
// operation with hsm.ErrOffline and shows "- -" lines in mkvps.
func (tx *Tx) SetOnline(q apqn.ID, online bool) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	qs.Online = online
	return nil
}

// SetCheckstop puts an APQN into or out of the checkstopped state.
func (tx *Tx) SetCheckstop(q apqn.ID, on bool) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	qs.Chkstop = on
	return nil
}

// FailAfter arms a fault: the next n operations on q succeed, every later
// one fails with hsm.ErrOffline until the fault is cleared.
func (tx *Tx) FailAfter(q apqn.ID, n int) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	if n < 0 {
		return errclass.Newh(errclass.InvalidArgument, "give a count of 0 or more",
			"fail-after count %d is negative", n)
	}
	qs.Faults.FailArmed, qs.Faults.FailAfter = true, int64(n)
	return nil
}

// SetLatency adds d to every backend operation on q.
func (tx *Tx) SetLatency(q apqn.ID, d time.Duration) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	if d < 0 || d > time.Minute {
		return errclass.Newh(errclass.InvalidArgument, "give a latency between 0 and 1m, e.g. 5ms",
			"latency %s is out of range", d)
	}
	qs.Faults.LatencyNS = int64(d)
	return nil
}

// SetEngines sets how many requests q serves at once (0: no limit); the
// requests beyond them queue, each taking the APQN's service time (its
// latency). Like the session limit it is a property of the adapter, not a
// fault: ClearFaults keeps it.
func (tx *Tx) SetEngines(q apqn.ID, n int) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	if n < 0 || n > MaxEngines {
		return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("give between 1 and %d engines (0: no limit)", MaxEngines),
			"engine count %d is out of range", n)
	}
	qs.Engines = n
	return nil
}

// SetMaxSessions sets the EP11 session limit of q (0: DefaultMaxSessions).
// Sessions already logged in stay; logins beyond the limit are refused.
func (tx *Tx) SetMaxSessions(q apqn.ID, n int) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	if apqn.Mode(qs.Mode) != apqn.ModeEP11 {
		return errclass.Newh(errclass.InvalidArgument, "set the limit on EP11 APQNs only",
			"APQN %s is %s; only EP11 APQNs have sessions: %w", q, apqn.Mode(qs.Mode), hsm.ErrWrongMode)
	}
	if n < 0 || n > MaxSessionLimit {
		return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("give a limit between 1 and %d (0: the default %d)", MaxSessionLimit, DefaultMaxSessions),
			"session limit %d is out of range", n)
	}
	qs.MaxSessions = n
	return nil
}

// ClearFaults disarms fail-after, removes added latency and clears a
// checkstop. It does not bring an offline APQN online.
func (tx *Tx) ClearFaults(q apqn.ID) error {
	qs, err := tx.queue(q)
	if err != nil {
		return err
	}
	qs.Faults = faultKnob{}
	qs.Chkstop = false
	return nil
}

// Faults reports the injected faults of an APQN.
type Faults struct {
	Online    bool
	Checkstop bool
	// FailAfter is the number of operations still allowed; -1 when the
	// fault is not armed.
	FailAfter int
	// Latency is the service time of every operation; Engines how many
	// the APQN serves at once (0: no limit).
	Latency time.Duration
	Engines int
}

// Faults returns the fault settings of q.
func (h *HSM) Faults(q apqn.ID) (Faults, error) {
	s, err := h.view()
	if err != nil {
		return Faults{}, err
	}
	rt, ok := s.queues[q]
	if !ok {
		return Faults{}, noSuchAPQN(q)
	}
	f := Faults{Online: rt.q.Online, Checkstop: rt.q.Chkstop, FailAfter: -1, Latency: time.Duration(rt.q.Faults.LatencyNS),
		Engines: rt.q.Engines}
	if rt.q.Faults.FailArmed {
		f.FailAfter = int(rt.q.Faults.FailAfter)
	}
	return f, nil
}

// CardType returns the card type of q as sysfs shows it.
func (h *HSM) CardType(q apqn.ID) (string, error) {
	s, err := h.view()
	if err != nil {
		return "", err
	}
	rt, ok := s.queues[q]
	if !ok {
		return "", noSuchAPQN(q)
	}
	return rt.q.CardType, nil
}
