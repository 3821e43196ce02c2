package ep11sess

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/gofrs/flock"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// This file is the session tool's side: listing the stored sessions,
// logging out those a program left behind, and setting the card PIN.

// Alive says whether process pid exists (a process of another user
// counts).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Selector picks the sessions a logout applies to: one by ID, all of a
// PID, or all of dead processes (Dead). Exactly one must be set.
type Selector struct {
	ID   *PublicID
	PID  int
	Dead bool
}

func (s Selector) match(r Record) bool {
	switch {
	case s.ID != nil:
		return r.ID == *s.ID
	case s.PID != 0:
		return r.PID == s.PID
	}
	return s.Dead && !Alive(r.PID)
}

// LogoutResult is what a logout did to one stored session.
type LogoutResult struct {
	Record Record
	// Removed: the session object is gone (logged out everywhere, or
	// --force).
	Removed bool
	// Left are the APQNs where the logout failed.
	Left []apqn.ID
	// Err says why the session was not logged out (a live process
	// without force, failing APQNs).
	Err error
}

// Admin is the session tool's access to one token.
type Admin struct {
	Slot    uint
	Store   *store.Store
	DK      *store.DataKey
	Backend hsm.Sessions
}

func (a Admin) lock() (func(), error) {
	path := filepath.Join(filepath.Dir(a.Store.Path()), "ep11-sessions.lock")
	lk := flock.New(path)
	if err := lk.Lock(); err != nil {
		return nil, errclass.New(errclass.Unavailable, "slot %d: lock %s: %w", a.Slot, path, err)
	}
	return func() { lk.Unlock() }, nil
}

// Records lists the stored sessions of the token.
func (a Admin) Records(ctx context.Context) ([]Record, error) {
	return Records(ctx, a.Store, a.DK)
}

// Logout logs out the selected sessions on their APQNs and removes their
// objects. A session of a live process is refused unless force; with
// force an object is removed even where the logout failed. It fails
// (NotFound) when an ID selects nothing; other per-session failures are in
// the results.
func (a Admin) Logout(ctx context.Context, sel Selector, force bool) ([]LogoutResult, error) {
	unlock, err := a.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return a.logoutLocked(ctx, sel, force)
}

// logoutLocked is Logout for a caller that holds the token's session lock.
func (a Admin) logoutLocked(ctx context.Context, sel Selector, force bool) ([]LogoutResult, error) {
	recs, rerr := a.Records(ctx)
	if recs == nil && rerr != nil {
		return nil, rerr
	}
	var out []LogoutResult
	for i, r := range recs {
		if !sel.match(r) {
			continue
		}
		res := LogoutResult{Record: r}
		switch {
		case r.PID == 0:
			// Unreadable: only removable.
			if !force && sel.ID == nil {
				res.Err = errclass.Newh(errclass.DataLoss, "remove it with --id "+r.ID.String()+" --force",
					"slot %d: EP11 session %s: the session object is unreadable", a.Slot, r.ID)
				out = append(out, res)
				continue
			}
		case Alive(r.PID) && !force:
			res.Err = errclass.Newh(errclass.FailedPrecondition,
				"end the program first, or add --force (its bound keys stop working)",
				"slot %d: EP11 session %s is not logged out: process %d is still running", a.Slot, r.ID, r.PID)
			out = append(out, res)
			continue
		default:
			res.Left = a.logoutRecord(ctx, r, recs[:i], recs[i+1:])
		}
		if len(res.Left) > 0 && !force {
			left := apqn.List(res.Left)
			res.Err = errclass.Newh(errclass.Unavailable, "bring the APQNs online and run the logout again, or add --force to remove the session object anyway",
				"slot %d: EP11 session %s not logged out on %s", a.Slot, r.ID, left.String())
			r.APQNs = res.Left
			if err := a.rewrite(ctx, r); err != nil {
				res.Err = errors.Join(res.Err, err)
			}
			out = append(out, res)
			continue
		}
		if err := a.Store.Delete(ctx, r.Handle); err != nil && errclass.Of(err) != errclass.NotFound {
			res.Err = fmt.Errorf("slot %d: remove the object of EP11 session %s: %w", a.Slot, r.ID, err)
		} else {
			res.Removed = true
			recs[i].VHSM = nil // no longer counts as a VHSM user
		}
		out = append(out, res)
	}
	if sel.ID != nil && len(out) == 0 {
		return nil, errclass.Newh(errclass.NotFound, fmt.Sprintf("list the sessions with `pkcshsm ep11-session show --slot %d`", a.Slot),
			"slot %d: no stored EP11 session has id %s", a.Slot, sel.ID)
	}
	return out, nil
}

// logoutRecord logs r's sessions out on its APQNs and returns where that
// failed. The VHSM session is logged out only when no other record uses it.
func (a Admin) logoutRecord(ctx context.Context, r Record, before, after []Record) []apqn.ID {
	var left []apqn.ID
	vhsm := r.VHSM != nil
	for _, o := range slices.Concat(before, after) {
		if o.VHSM != nil && bytes.Equal(o.VHSM, r.VHSM) {
			vhsm = false
		}
	}
	// The record lists the APQNs of the logins at session start; one that
	// came online later was logged in at its first use. Every online EP11
	// APQN is asked (a session that is not there counts as logged out),
	// and only the record's own count as left when they fail.
	qs := slices.Clone(r.APQNs)
	if b, ok := a.Backend.(hsm.Backend); ok {
		if all, err := b.Queues(ctx); err == nil {
			for _, qi := range all {
				if qi.Mode == apqn.ModeEP11 && qi.Online && !slices.Contains(qs, qi.ID) {
					qs = append(qs, qi.ID)
				}
			}
		}
	}
	for _, q := range qs {
		var errs []error
		if r.Strict != nil {
			errs = append(errs, logoutAny(ctx, a.Backend, q, [][]byte{r.Strict}))
		}
		if vhsm {
			errs = append(errs, logoutAny(ctx, a.Backend, q, [][]byte{r.VHSM}))
		}
		if errors.Join(errs...) != nil && slices.Contains(r.APQNs, q) {
			left = append(left, q)
		}
	}
	return left
}

func (a Admin) rewrite(ctx context.Context, r Record) error {
	o, err := a.Store.Get(ctx, a.DK, r.Handle)
	if err == nil {
		o.Attrs[uint32(ck.CKA_VALUE)] = r.Encode()
		err = a.Store.Update(ctx, a.DK, o)
	}
	return err
}

// SetCardPIN replaces the card PIN (VHSM PIN) of the token in one
// transaction. Keys bound to the previous card PIN stop working.
func (a Admin) SetCardPIN(ctx context.Context, pin []byte) error {
	if err := CheckCardPIN(pin); err != nil {
		return err
	}
	return a.Store.Batch(ctx, a.DK, func(tx *store.Tx) error {
		objs, err := tx.List(store.Filter{Classes: []uint{uint(ck.CKO_HW_FEATURE)}})
		if err != nil {
			return err
		}
		for _, o := range objs {
			if bytes.Equal(o.Attrs[uint32(ck.CKA_HW_FEATURE_TYPE)], ulong(CKH_IBM_EP11_VHSMPIN)) {
				if err := tx.Delete(o.Handle); err != nil {
					return err
				}
			}
		}
		return tx.Create(hiddenObject(CKH_IBM_EP11_VHSMPIN, nil, bytes.Clone(pin)))
	})
}

// HasCardPIN says whether the token has a card PIN.
func (a Admin) HasCardPIN(ctx context.Context) (bool, error) {
	objs, err := hidden(ctx, a.Store, a.DK, CKH_IBM_EP11_VHSMPIN)
	return len(objs) > 0, err
}
