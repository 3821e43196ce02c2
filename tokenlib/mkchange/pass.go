package mkchange

import (
	"context"
	"errors"
	"fmt"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// BatchSize is how many objects one transaction of a pass rewrites.
const BatchSize = 2000

// Transform applies action a to one key object's attributes, using APQN q
// for re-enciphering. It reports whether attrs changed.
func Transform(ctx context.Context, be hsm.Backend, q apqn.ID, attrs map[uint32][]byte, op *state.Op, a state.Action) (bool, error) {
	switch a {
	case state.ActReencipher:
		return Reencipher(ctx, be, q, attrs, op)
	case state.ActFinalize:
		return Finalize(attrs, op)
	case state.ActCancel:
		return Cancel(attrs, op)
	}
	return false, errclass.New(errclass.InvalidArgument, "unknown action %v", a)
}

// Pass applies action a to every key object of the token's store, in
// transactions of BatchSize objects, and returns how many objects changed.
// dk must be the USER's data key so private objects are included. Objects
// deleted meanwhile are skipped; objects changed meanwhile by another
// process are read again and transformed anew. Re-enciphering is spread
// over the token's APQNs of the operation.
func (t Token) Pass(ctx context.Context, st *store.Store, dk *store.DataKey, be hsm.Backend, op *state.Op, a state.Action, progress func(done, total int)) (int, error) {
	qs := t.APQNsFor(op)
	if a == state.ActReencipher && len(qs) == 0 {
		return 0, errclass.New(errclass.FailedPrecondition, "slot %d uses no APQN of operation %s", t.Slot, op.ID)
	}
	objs, err := st.List(ctx, dk, store.Filter{Classes: []uint{uint(ck.CKO_SECRET_KEY), uint(ck.CKO_PRIVATE_KEY), uint(ck.CKO_PUBLIC_KEY)}})
	if err != nil {
		return 0, fmt.Errorf("slot %d: failed to list key objects: %w", t.Slot, err)
	}
	changed, next := 0, 0
	apqnFor := func() apqn.ID {
		if len(qs) == 0 {
			return apqn.ID{}
		}
		next++
		return qs[next%len(qs)]
	}
	for start := 0; start < len(objs); start += BatchSize {
		chunk := objs[start:min(start+BatchSize, len(objs))]
		n := 0
		err := st.Batch(ctx, dk, func(tx *store.Tx) error {
			n = 0
			for _, o := range chunk {
				ok, err := t.apply(ctx, tx, be, apqnFor(), o, op, a)
				if err != nil {
					return err
				}
				if ok {
					n++
				}
			}
			return nil
		})
		if err != nil {
			return changed, fmt.Errorf("slot %d: %s pass: %w", t.Slot, a, err)
		}
		changed += n
		if progress != nil {
			progress(start+len(chunk), len(objs))
		}
	}
	if progress != nil && len(objs) == 0 {
		progress(0, 0)
	}
	return changed, nil
}

// apply transforms one object inside tx, re-reading it once if another
// process changed it since it was listed.
func (t Token) apply(ctx context.Context, tx *store.Tx, be hsm.Backend, q apqn.ID, o *store.Object, op *state.Op, a state.Action) (bool, error) {
	for attempt := 0; ; attempt++ {
		changed, err := Transform(ctx, be, q, o.Attrs, op, a)
		if err != nil {
			return false, fmt.Errorf("object %s (%s): %w", o.UniqueID, label(o), err)
		}
		if !changed {
			return false, nil
		}
		err = tx.Update(o)
		switch {
		case err == nil:
			return true, nil
		case errclass.Of(err) == errclass.NotFound:
			return false, nil // destroyed meanwhile
		case errclass.Of(err) == errclass.Conflict && attempt == 0:
			fresh, gerr := tx.Get(o.Handle)
			if errclass.Of(gerr) == errclass.NotFound {
				return false, nil
			}
			if gerr != nil {
				return false, gerr
			}
			*o = *fresh
		default:
			return false, errors.Join(fmt.Errorf("object %s: failed to save", o.UniqueID), err)
		}
	}
}

func label(o *store.Object) string {
	if l := o.Attrs[uint32(ck.CKA_LABEL)]; len(l) > 0 {
		return fmt.Sprintf("label %q", l)
	}
	return fmt.Sprintf("handle %d", o.Handle)
}
