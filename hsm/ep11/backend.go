// Package ep11 is an hsm.Backend (and hsm.Sessions) over IBM's EP11 host
// library, libep11.so, loaded at run time (see [Load]). Every call goes to
// one APQN through its own single-APQN target (m_add_module); wrapping
// key state and patterns come from m_get_xcp_info(CK_IBM_XCPQ_DOMAIN),
// compared with the kernel's mkvps attribute; re-encipher is the admin
// command XCP_ADM_REENCRYPT through m_admin; strict-session and VHSM keys
// are bound with the pin blobs m_Login returns. The functions used, the
// operation each serves and the document section it follows are tabled
// in docs/ARCHITECTURE.md ("Host libraries").
package ep11

import (
	"context"
	"errors"
	"sync"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/internal/backend"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

const hsmPinBlob = hsm.PinBlobSize

// Backend is the EP11 host library as an hsm.Backend.
type Backend struct {
	lib *Library
	bus apqn.Bus

	mu      sync.Mutex
	targets map[apqn.ID]uint64
}

var (
	_ hsm.Backend  = (*Backend)(nil)
	_ hsm.Sessions = (*Backend)(nil)
)

// New returns a backend over lib; sysfsRoot is the AP bus root ("/sys").
func New(lib *Library, sysfsRoot string) *Backend {
	return &Backend{lib: lib, bus: apqn.Bus{Root: sysfsRoot}, targets: map[apqn.ID]uint64{}}
}

// Library returns the loaded library.
func (b *Backend) Library() *Library { return b.lib }

// Close frees the targets (m_rm_module).
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for q, t := range b.targets {
		b.lib.rmModule(t)
		delete(b.targets, q)
	}
	return nil
}

// funcEP11 is the ap_functions bit of a card in EP11 mode.
const funcEP11 = 0x04000000

func (b *Backend) sysQueue(q apqn.ID) (apqn.Queue, error) {
	sq, err := b.bus.Queue(q)
	if err == nil {
		if _, serr := b.bus.MKVPs(q); serr != nil && errors.Is(serr, errclass.NotFound) {
			err = serr
		}
	}
	if err != nil {
		if errors.Is(err, errclass.NotFound) {
			return apqn.Queue{}, errclass.Newh(errclass.NotFound, "list the APQNs with lszcrypt", "APQN %s: %w", q, hsm.ErrNoSuchAPQN)
		}
		return apqn.Queue{}, err
	}
	if sq.Card.Mode != apqn.ModeEP11 || sq.Card.Functions != 0 && sq.Card.Functions&funcEP11 == 0 {
		return apqn.Queue{}, errclass.New(errclass.InvalidArgument, "APQN %s is a %s queue, not EP11: %w", q, sq.Card.Mode, hsm.ErrWrongMode)
	}
	return sq, nil
}

// target returns q's single-APQN target, made once.
func (b *Backend) target(ctx context.Context, q apqn.ID) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, ctxErr(err)
	}
	sq, err := b.sysQueue(q)
	if err != nil {
		return 0, err
	}
	if !sq.Usable() {
		return 0, errclass.Newh(errclass.Unavailable, "check the APQN with lszcrypt and bring it online (chzcrypt -e)",
			"APQN %s is %s: %w", q, sq.Status(), hsm.ErrOffline)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if t, ok := b.targets[q]; ok {
		return t, nil
	}
	t, err := b.lib.addModule(q.Card, q.Domain)
	if err != nil {
		return 0, errclass.New(errclass.Of(err), "APQN %s: %w: %w", q, err, hsm.ErrOffline)
	}
	b.targets[q] = t
	return t, nil
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errclass.New(errclass.DeadlineExceeded, "EP11 host library: %w", err)
	}
	return errclass.New(errclass.Aborted, "EP11 host library: %w", err)
}

// Domain flags (ep11.h CK_IBM_DOM_*).
const (
	domCurrWK       = 2
	domNextWK       = 4
	domCommittedNWK = 8
)

// Queues lists the EP11 APQNs of the AP bus in ascending order.
func (b *Backend) Queues(ctx context.Context) ([]hsm.QueueInfo, error) {
	return backend.Queues(ctx, b.bus, apqn.ModeEP11, b.Queue)
}

// Queue describes one EP11 APQN: the wrapping key registers from the
// library (wkRegisters), compared with sysfs.
func (b *Backend) Queue(ctx context.Context, q apqn.ID) (hsm.QueueInfo, error) {
	if err := ctx.Err(); err != nil {
		return hsm.QueueInfo{}, ctxErr(err)
	}
	sq, err := b.sysQueue(q)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	info := hsm.QueueInfo{ID: q, Mode: apqn.ModeEP11, Online: sq.Usable(), MK: map[mkvp.Type]hsm.Registers{}}
	if !info.Online {
		sys, err := b.bus.MKVPs(q)
		if err != nil {
			return hsm.QueueInfo{}, err
		}
		info.MK[mkvp.EP11WK] = sysRegisters(sys)
		return info, nil
	}
	t, err := b.target(ctx, q)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	var r hsm.Registers
	read := func() error {
		var err error
		r, err = b.wkRegisters(t, q)
		return err
	}
	if err := backend.Steady(b.bus, q, read, func(sys apqn.MKVPs) error { return compare(q, r, sysRegisters(sys)) }); err != nil {
		return hsm.QueueInfo{}, err
	}
	info.MK[mkvp.EP11WK] = r
	return info, nil
}

// wkRegisters reads the wrapping key registers of q's target from
// m_get_xcp_info(CK_IBM_XCPQ_DOMAIN): CURRENT from wk when
// CK_IBM_DOM_CURR_WK is set, NEW from nextwk when CK_IBM_DOM_NEXT_WK is
// (committed with CK_IBM_DOM_COMMITTED_NWK); the first 16 bytes are the
// pattern blobs carry (host-libraries.md §2.5).
func (b *Backend) wkRegisters(t uint64, q apqn.ID) (hsm.Registers, error) {
	d, rv, err := b.lib.domainInfo(t)
	if err != nil {
		return hsm.Registers{}, errclass.New(errclass.Of(err), "APQN %s: %w", q, err)
	}
	if rv != 0 {
		return hsm.Registers{}, rvError("m_get_xcp_info(CK_IBM_XCPQ_DOMAIN)", q, rv)
	}
	if d.domain != uint64(q.Domain) {
		return hsm.Registers{}, errclass.New(errclass.Internal, "m_get_xcp_info(CK_IBM_XCPQ_DOMAIN) on APQN %s answered for domain %d", q, d.domain)
	}
	var r hsm.Registers
	r.Current.State = apqn.StateInvalid
	if d.flags&domCurrWK != 0 {
		r.Current.State = apqn.StateValid
		r.Current.Pattern, _ = mkvp.ForType(mkvp.EP11WK, d.wk[:])
	}
	r.New.State = apqn.StateEmpty
	if d.flags&domNextWK != 0 {
		r.New.State = apqn.StateUncommitted
		if d.flags&domCommittedNWK != 0 {
			r.New.State = apqn.StateCommitted
		}
		r.New.Pattern, _ = mkvp.ForType(mkvp.EP11WK, d.nextwk[:])
	}
	return r, nil
}

// sysRegisters reads the WK lines of the mkvps attribute (32 bytes
// printed; the pattern is the first 16).
func sysRegisters(sys apqn.MKVPs) hsm.Registers {
	var r hsm.Registers
	one := func(reg *hsm.Register, name string) {
		l, ok := sys.Lookup("WK", name)
		if !ok {
			return
		}
		reg.State = l.State
		if len(l.Pattern) >= mkvp.EP11WK.Size() && l.State != apqn.StateEmpty && l.State != apqn.StateInvalid {
			reg.Pattern, _ = mkvp.ForType(mkvp.EP11WK, l.Pattern)
		}
	}
	one(&r.Current, "CUR")
	one(&r.New, "NEW")
	return r
}

func compare(q apqn.ID, lib, sys hsm.Registers) error {
	for _, c := range []struct {
		name   string
		lr, sr hsm.Register
	}{{"CURRENT", lib.Current, sys.Current}, {"NEW", lib.New, sys.New}} {
		if c.sr.State == apqn.StateUnknown {
			continue
		}
		if c.lr != c.sr {
			return errclass.Newh(errclass.FailedPrecondition,
				"the EP11 host library and the kernel disagree about the adapter; check `lszcrypt -V` and `ep11info`, then retry",
				"APQN %s: m_get_xcp_info(CK_IBM_XCPQ_DOMAIN) reports the %s wrapping key as %s %v, sysfs mkvps as %s %v",
				q, c.name, c.lr.State, c.lr.Pattern, c.sr.State, c.sr.Pattern)
		}
	}
	return nil
}
