package mkchange

import (
	"context"
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// LostKey is a key object a reencipher pass cannot re-encipher: its secure
// key is under a master key that is neither the token's current one of its
// type nor the operation's new one (typically a key left behind when the
// adapters were rolled back: 'pkcshsm keys restore-old' reports them as
// LOST). A pass that meets one fails, and the whole change rolls back.
type LostKey struct {
	Handle  uint64
	Label   string
	MKType  mkvp.Type
	Pattern mkvp.Pattern
	// UnderOld is set (by the caller, who knows the registers) when the
	// pattern is the OLD master key of every APQN of the token (CCA): the
	// key still works, but a change re-enciphers only from CURRENT. Such a
	// key is not LOST and must not be deleted.
	UnderOld bool
}

func (k LostKey) String() string {
	s := fmt.Sprintf("key %d %s under %s %s", k.Handle, k.Label, k.MKType.LongName(), k.Pattern)
	if k.UnderOld {
		s += " (the OLD register: it still works, do not delete it)"
	}
	return s
}

// FindLost reads the blobs of every key object of the token (page by
// page, the narrow blob rows alone: store.ListBlobs) and returns the first
// max LostKeys for op and the number of them; current holds the token's
// current patterns of op's types (a type missing from it is not judged).
// Reading every blob list also unseals it and checks its set tag, so a
// blob damaged or moved in the database fails here, before anything is
// recorded. The label of a lost key is read with the key in full.
func (t Token) FindLost(ctx context.Context, st *store.Store, dk *store.DataKey, op *state.Op, current map[mkvp.Type]mkvp.Pattern, max int) ([]LostKey, int, error) {
	var (
		lost  []LostKey
		n     int
		after uint64
	)
	for {
		objs, err := st.ListBlobs(ctx, dk, store.Filter{Classes: keyClasses, After: after, Limit: pageSize})
		if err != nil {
			return nil, 0, fmt.Errorf("slot %d: failed to read key objects after handle %d: %w", t.Slot, after, err)
		}
		for _, o := range objs {
			info, changing, err := concerns(o.Attrs, op)
			if err != nil {
				return nil, 0, fmt.Errorf("slot %d: object %d (%s): %w", t.Slot, o.Handle, label(o), err)
			}
			if !changing {
				continue
			}
			cur, known := current[info.MKType]
			if !known || info.Pattern == cur || info.Pattern == op.New[info.MKType] {
				continue
			}
			n++
			if len(lost) < max {
				full, err := st.Get(ctx, dk, o.Handle)
				switch {
				case errclass.Of(err) == errclass.NotFound:
					n-- // deleted meanwhile
					continue
				case err != nil:
					return nil, 0, fmt.Errorf("slot %d: object %d: %w", t.Slot, o.Handle, err)
				}
				lost = append(lost, LostKey{Handle: o.Handle, Label: label(full), MKType: info.MKType, Pattern: info.Pattern})
			}
		}
		if len(objs) < pageSize {
			return lost, n, nil
		}
		after = objs[len(objs)-1].Handle
	}
}
