package cli

import (
	"context"
	"fmt"

	"github.com/pkcshsm/pkcshsm/state"
)

// storeTruth is what the token stores' journals say of an operation when
// they disagree with its file: one line per slot, and the command that
// completes the operation according to the stores.
type storeTruth struct {
	warnings []string
	next     state.Action // 0: the stores agree with the file
}

// impliedAction is the last action the operation file implies was
// applied to the keys.
func impliedAction(op *state.Op) (state.Action, bool) {
	switch op.State {
	case state.Reenciphering, state.Reenciphered:
		return state.ActReencipher, op.State == state.Reenciphered
	case state.Finalizing:
		return state.ActFinalize, false
	case state.Canceling:
		return state.ActCancel, false
	}
	return 0, false
}

// crossCheck compares op's file with the journal of each of its slots:
// a store that a finalize or cancel of this operation touched while the
// file says otherwise (a file restored from an older generation, or
// changed), or a reencipher pass the file calls complete that the store
// never completed. It reads only; a journal that cannot be read is
// reported, not fatal.
func (s *session) crossCheck(ctx context.Context, op *state.Op) storeTruth {
	var t storeTruth
	implied, done := impliedAction(op)
	if implied == 0 {
		return t
	}
	for _, sl := range op.Slots {
		j, ok, err := s.tokens.LastPass(ctx, sl.ID)
		if err != nil {
			t.warnings = append(t.warnings, fmt.Sprintf("slot %d: the token store's journal cannot be read: %v", sl.ID, err))
			continue
		}
		if !ok || j.Op != op.ID {
			continue
		}
		stage := map[bool]string{true: "completed", false: "begun, not completed"}[j.Done]
		switch {
		case j.Action != implied.String() && (j.Action == state.ActFinalize.String() || j.Action == state.ActCancel.String()):
			t.warnings = append(t.warnings, fmt.Sprintf(
				"slot %d: the token store says a %s of this operation has %s, but the operation file says %s: "+
					"the file is older than the keys (restored from a backup?)", sl.ID, j.Action, stage, op.State))
			a := state.ActFinalize
			if j.Action == state.ActCancel.String() {
				a = state.ActCancel
			}
			if t.next == 0 {
				t.next = a
			}
		case j.Action == state.ActReencipher.String() && done && !j.Done:
			t.warnings = append(t.warnings, fmt.Sprintf(
				"slot %d: the token store says the reencipher pass of this operation never completed, but the operation file says %s",
				sl.ID, op.State))
			if t.next == 0 {
				t.next = state.ActCancel
			}
		}
	}
	return t
}
