// Package backend holds what the host-library backends (hsm/cca,
// hsm/ep11) share that is not about their libraries: checking the secure
// key a call is given, the errors of a mechanism that does not fit, and
// listing the APQNs of one mode from the AP bus.
package backend

import (
	"context"
	"reflect"
	"slices"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Key reads a blob's header and checks it is a key of mode, of one of
// the given types, for mechanism m on APQN q.
func Key(q apqn.ID, mode apqn.Mode, key []byte, m hsm.Mechanism, types ...hsm.KeyType) (hsm.BlobInfo, error) {
	info, err := hsm.Inspect(key)
	if err != nil {
		return info, err
	}
	if info.Mode != mode {
		return info, errclass.New(errclass.InvalidArgument, "APQN %s is %s, the key is a %s key: %w", q, mode, info.Mode, hsm.ErrWrongMode)
	}
	if slices.Contains(types, info.KeyType) {
		return info, nil
	}
	return info, errclass.New(errclass.InvalidArgument, "%s cannot use a %s key: %w", m, info.KeyType, hsm.ErrMechanism)
}

// MechErr is an ErrMechanism with a message.
func MechErr(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, format+": %w", append(args, hsm.ErrMechanism)...)
}

// DataErr is an ErrBadData with a message.
func DataErr(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, format+": %w", append(args, hsm.ErrBadData)...)
}

// Queues lists the APQNs of mode on bus in ascending order, each
// described by describe.
func Queues(ctx context.Context, bus apqn.Bus, mode apqn.Mode, describe func(context.Context, apqn.ID) (hsm.QueueInfo, error)) ([]hsm.QueueInfo, error) {
	qs, err := bus.Queues()
	if err != nil {
		return nil, err
	}
	var out []hsm.QueueInfo
	for _, sq := range qs {
		if sq.Card.Mode != mode {
			continue
		}
		info, err := describe(ctx, sq.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, c hsm.QueueInfo) int { return a.ID.Compare(c.ID) })
	return out, nil
}

// settle is the pause before the views are read again after they
// disagreed; the 20 reads of Steady span about a second.
const settle = 50 * time.Millisecond

// Steady reads a library's view of q's registers (read) between two reads
// of the kernel's mkvps attribute and checks them against each other
// (check). A sysfs view that changed while the library answered is read
// again; so is a disagreement, since the kernel and the library pass
// through an officer's change at different moments. Only a disagreement
// that lasts is returned, as check's error.
func Steady(bus apqn.Bus, q apqn.ID, read func() error, check func(sys apqn.MKVPs) error) error {
	var lastErr error
	for range 20 {
		sys, err := bus.MKVPs(q)
		if err != nil {
			return err
		}
		if err := read(); err != nil {
			return err
		}
		if again, err := bus.MKVPs(q); err != nil || !reflect.DeepEqual(again, sys) {
			lastErr = errclass.New(errclass.Unavailable, "APQN %s: the master key registers kept changing while being read", q)
			continue
		}
		if lastErr = check(sys); lastErr == nil {
			return nil
		}
		time.Sleep(settle)
	}
	return lastErr
}
