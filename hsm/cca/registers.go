package cca

import (
	"context"
	"fmt"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/internal/backend"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Queues lists the CCA APQNs of the AP bus in ascending order.
func (b *Backend) Queues(ctx context.Context) ([]hsm.QueueInfo, error) {
	return backend.Queues(ctx, b.bus, apqn.ModeCCA, b.Queue)
}

// Queue describes one CCA APQN: online state from sysfs, registers from
// CSUACFQ and sysfs, compared.
func (b *Backend) Queue(ctx context.Context, q apqn.ID) (hsm.QueueInfo, error) {
	if err := ctx.Err(); err != nil {
		return hsm.QueueInfo{}, ctxErr(err)
	}
	sq, err := b.sysQueue(q)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	info := hsm.QueueInfo{ID: q, Mode: apqn.ModeCCA, Online: sq.Usable(), MK: map[mkvp.Type]hsm.Registers{}}
	if !info.Online {
		sys, err := b.bus.MKVPs(q)
		if err != nil {
			return hsm.QueueInfo{}, err
		}
		for _, t := range mkvp.CCATypes() {
			info.MK[t] = sysRegisters(t, sys)
		}
		return info, nil
	}
	_, adapter, err := b.target(ctx, q)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	var lib map[mkvp.Type]hsm.Registers
	read := func() error {
		return b.lib.onAPQN(adapter, q.Domain, func() error {
			var err error
			lib, err = b.lib.registers(q.String())
			return err
		})
	}
	if err := backend.Steady(b.bus, q, read, func(sys apqn.MKVPs) error { return merge(q, lib, sys, info.MK) }); err != nil {
		return hsm.QueueInfo{}, err
	}
	return info, nil
}

// stateKeyword is the CSUACFQ keyword of a type's register states.
var stateKeyword = map[mkvp.Type]string{mkvp.CCASYM: "STATCCAE", mkvp.CCAAES: "STATAES", mkvp.CCAAPKA: "STATAPKA"}

// registersOf reads the registers of one master key type on the selected
// APQN (two CSUACFQ calls): what a key operation checks its token
// against, in the same selection as the verb. ASYM has no CSUACFQ view.
func (l *Library) registersOf(where string, t mkvp.Type) (hsm.Registers, error) {
	kw, ok := stateKeyword[t]
	if !ok {
		return hsm.Registers{}, errclass.New(errclass.InvalidArgument, "no CSUACFQ view of the %s master key", t)
	}
	rules, _, err := l.query(where, kw, 0)
	if err != nil {
		return hsm.Registers{}, err
	}
	var r hsm.Registers
	if r.New.State, r.Current.State, r.Old.State, err = regStates(where, kw, rules); err != nil {
		return hsm.Registers{}, err
	}
	_, data, err := l.query(where, "STATICSB", staticsbLen)
	if err != nil {
		return hsm.Registers{}, err
	}
	return r, fillPatterns(where, t, data, &r)
}

// fillPatterns sets the patterns of the loaded registers from STATICSB.
func fillPatterns(where string, t mkvp.Type, data []byte, r *hsm.Registers) error {
	ids := staticsbIDs[t]
	get := func(reg *hsm.Register, e staticsbEntry, required bool) error {
		v, ok := staticsbValue(data, e)
		if !ok {
			if required {
				return errclass.New(errclass.Internal, "CSUACFQ STATICSB on %s: no %s pattern with ID 0x%04X at offset %d (%d bytes returned)", where, t, e.id, e.at, len(data))
			}
			return nil
		}
		p, err := pattern8(where, t, e.id, v)
		if err != nil {
			return err
		}
		reg.Pattern = p
		return nil
	}
	if r.New.State == apqn.StateFull {
		if err := get(&r.New, ids.nw, true); err != nil {
			return err
		}
	}
	if r.Current.State == apqn.StateValid {
		if err := get(&r.Current, ids.cur, true); err != nil {
			return err
		}
	}
	if r.Old.State == apqn.StateValid {
		return get(&r.Old, ids.old, false)
	}
	return nil
}

// registers reads SYM, AES and APKA registers of the selected APQN:
// states from STATCCAE, STATAES and STATAPKA, patterns from STATICSB.
func (l *Library) registers(where string) (map[mkvp.Type]hsm.Registers, error) {
	out := map[mkvp.Type]hsm.Registers{}
	states := map[mkvp.Type][3]apqn.RegState{}
	for t, kw := range stateKeyword {
		rules, _, err := l.query(where, kw, 0)
		if err != nil {
			return nil, err
		}
		n, c, o, err := regStates(where, kw, rules)
		if err != nil {
			return nil, err
		}
		states[t] = [3]apqn.RegState{n, c, o}
	}
	_, data, err := l.query(where, "STATICSB", staticsbLen)
	if err != nil {
		return nil, err
	}
	for t, st := range states {
		var r hsm.Registers
		r.New.State, r.Current.State, r.Old.State = st[0], st[1], st[2]
		if err := fillPatterns(where, t, data, &r); err != nil {
			return nil, err
		}
		out[t] = r
	}
	return out, nil
}

// sysRegisters reads one type's registers from the mkvps attribute: the
// kernel prints AES, APKA and ASYM (8, 8 and 16 bytes; CCA ASYM patterns
// are the first 8), no SYM line.
func sysRegisters(t mkvp.Type, sys apqn.MKVPs) hsm.Registers {
	var r hsm.Registers
	one := func(reg *hsm.Register, name string) {
		l, ok := sys.Lookup(t.Keyword(), name)
		if !ok {
			return
		}
		reg.State = l.State
		if (l.State == apqn.StateValid || l.State == apqn.StateFull) && len(l.Pattern) >= t.Size() {
			reg.Pattern, _ = mkvp.ForType(t, l.Pattern)
		}
	}
	one(&r.New, "NEW")
	one(&r.Current, "CUR")
	one(&r.Old, "OLD")
	return r
}

// merge fills out from the library's view and sysfs: ASYM from sysfs;
// SYM from the library; AES and APKA from the library, the OLD pattern
// from sysfs where STATICSB had none, and every register the kernel
// shows compared with it.
func merge(q apqn.ID, lib map[mkvp.Type]hsm.Registers, sys apqn.MKVPs, out map[mkvp.Type]hsm.Registers) error {
	out[mkvp.CCAASYM] = sysRegisters(mkvp.CCAASYM, sys)
	out[mkvp.CCASYM] = lib[mkvp.CCASYM]
	for _, t := range []mkvp.Type{mkvp.CCAAES, mkvp.CCAAPKA} {
		l, s := lib[t], sysRegisters(t, sys)
		if l.Old.State == apqn.StateValid && l.Old.Pattern.IsZero() {
			l.Old.Pattern = s.Old.Pattern
		}
		for _, c := range []struct {
			name   string
			lr, sr hsm.Register
		}{{"NEW", l.New, s.New}, {"CURRENT", l.Current, s.Current}, {"OLD", l.Old, s.Old}} {
			if c.sr.State == apqn.StateUnknown {
				continue // the kernel could not ask the card
			}
			if c.lr != c.sr {
				return errclass.Newh(errclass.FailedPrecondition,
					"the CCA host library and the kernel disagree about the adapter; check `lszcrypt -V` and the library version, then retry",
					"APQN %s: CSUACFQ reports the %s %s register as %s %s, sysfs mkvps as %s %s",
					q, t, c.name, c.lr.State, patternText(c.lr.Pattern), c.sr.State, patternText(c.sr.Pattern))
			}
		}
		out[t] = l
	}
	return nil
}

func patternText(p mkvp.Pattern) string {
	if p.IsZero() {
		return "(no pattern)"
	}
	return fmt.Sprint(p)
}
