// Package cca is an hsm.Backend over IBM's CCA host library,
// libcsulcca.so, loaded at run time (see [Load]). Each operation selects
// the APQN it is given (CSUACRA/CSUACRD on a locked OS thread), calls the
// verbs with the parameter lists and rule arrays of IBM's CCA Basic
// Services Reference as openCryptoki's CCA token uses them, and maps
// return and reason codes to error classes. The verbs used, the operation
// each serves and the document section it follows are tabled in
// docs/ARCHITECTURE.md ("Host libraries").
//
// APQNs are enumerated from the AP bus in sysfs (CCA cards: ap_functions
// bit 0x10000000, as openCryptoki and zkey do). Master key registers come
// from CSUACFQ (SYM, AES, APKA) and, where CSUACFQ has no documented
// field, from the kernel's mkvps attribute (ASYM; the OLD patterns of AES
// and APKA); the two views are compared and a disagreement is an error.
//
// Secure keys are the CCA key tokens the simulator also makes (hsm/blob.go
// gives the layouts); this package never opens them, it reads only their
// headers (hsm.Inspect) to pick verbs and to check results.
package cca

import (
	"context"
	"errors"
	"runtime"
	"sync"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Backend is the CCA host library as an hsm.Backend.
type Backend struct {
	lib *Library
	bus apqn.Bus

	mu       sync.Mutex
	adapters map[string]int // adapter serial number → the library's CRPnn
}

var _ hsm.Backend = (*Backend)(nil)

// New returns a backend over lib; sysfsRoot is the AP bus root ("/sys").
func New(lib *Library, sysfsRoot string) *Backend {
	return &Backend{lib: lib, bus: apqn.Bus{Root: sysfsRoot}}
}

// Library returns the loaded library.
func (b *Backend) Library() *Library { return b.lib }

// funcCCA is the ap_functions bit of a card in CCA coprocessor mode.
const funcCCA = 0x10000000

// target resolves q to its sysfs queue and the library's adapter number.
func (b *Backend) target(ctx context.Context, q apqn.ID) (apqn.Queue, int, error) {
	if err := ctx.Err(); err != nil {
		return apqn.Queue{}, 0, ctxErr(err)
	}
	sq, err := b.sysQueue(q)
	if err != nil {
		return apqn.Queue{}, 0, err
	}
	if !sq.Usable() {
		return apqn.Queue{}, 0, errclass.Newh(errclass.Unavailable, "check the APQN with lszcrypt and bring it online (chzcrypt -e)",
			"APQN %s is %s: %w", q, sq.Status(), hsm.ErrOffline)
	}
	n, err := b.adapterFor(sq.Card)
	if err != nil {
		return apqn.Queue{}, 0, err
	}
	return sq, n, nil
}

// sysQueue reads q from sysfs and checks it is a CCA queue.
func (b *Backend) sysQueue(q apqn.ID) (apqn.Queue, error) {
	sq, err := b.bus.Queue(q)
	if err == nil {
		if _, serr := b.bus.MKVPs(q); serr != nil && errors.Is(serr, errclass.NotFound) {
			err = serr // the card exists, the domain does not
		}
	}
	if err != nil {
		if errors.Is(err, errclass.NotFound) {
			return apqn.Queue{}, errclass.Newh(errclass.NotFound, "list the APQNs with lszcrypt",
				"APQN %s: %w", q, hsm.ErrNoSuchAPQN)
		}
		return apqn.Queue{}, err
	}
	if sq.Card.Mode != apqn.ModeCCA || sq.Card.Functions != 0 && sq.Card.Functions&funcCCA == 0 {
		return apqn.Queue{}, errclass.New(errclass.InvalidArgument, "APQN %s is a %s queue, not CCA: %w", q, sq.Card.Mode, hsm.ErrWrongMode)
	}
	return sq, nil
}

// adapterFor maps a card to the library's adapter number: the library
// numbers its CCA coprocessors CRP01..CRPnn; openCryptoki matches each
// one's STATCRD2 serial number with the card's sysfs serialnr
// (host-libraries.md §1.4). The map is rebuilt when a card is not in it
// (hot plug).
func (b *Backend) adapterFor(c apqn.Card) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n, ok := b.adapters[c.Serial]; ok {
		return n, nil
	}
	m, err := b.lib.scanAdapters()
	if err != nil {
		return 0, err
	}
	b.adapters = m
	if n, ok := m[c.Serial]; ok {
		return n, nil
	}
	return 0, errclass.Newh(errclass.Unavailable, "check that the card is in CCA coprocessor mode (lszcrypt) and that this user may open /dev/z90crypt",
		"card %02x (serial %s) is not among the %d adapters the CCA host library sees: %w", c.Number, c.Serial, len(m), hsm.ErrOffline)
}

// scanAdapters numbers the adapters: STATCRD2 on the default adapter
// gives the count, then each CRPnn is allocated and asked its serial
// number.
func (l *Library) scanAdapters() (map[string]int, error) {
	// No domain may be allocated meanwhile: the queries describe the
	// adapter and run on the default domain.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := l.gate.enter(exclusive, func() error { return nil }); err != nil {
		return nil, err
	}
	defer l.gate.leave(func() error { return nil })
	count, _, err := l.adapterInfo("the default adapter")
	if err != nil {
		return nil, err
	}
	m := map[string]int{}
	for n := 1; n <= count; n++ {
		serial, err := l.adapterSerial(n)
		if err != nil {
			return nil, err
		}
		m[serial] = n
	}
	return m, nil
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errclass.New(errclass.DeadlineExceeded, "CCA host library: %w", err)
	}
	return errclass.New(errclass.Aborted, "CCA host library: %w", err)
}
