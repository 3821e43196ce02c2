// Package backend holds what the host-library backends (hsm/cca,
// hsm/ep11) share that is not about their libraries: checking the secure
// key a call is given, the errors of a mechanism that does not fit, and
// listing the APQNs of one mode from the AP bus.
package backend

import (
	"context"
	"slices"

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
