package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/state"
)

// idOption is the -i/--id option of finalize, cancel and list.
type idOption struct {
	id string
}

func (o *idOption) addFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.id, "id", "i", "", "operation id, as printed by reencipher")
}

// require validates the id, which finalize and cancel need.
func (o *idOption) require(cmd *cobra.Command) (state.ID, error) {
	if !cmd.Flags().Changed("id") {
		return "", errclass.Newh(errclass.InvalidArgument, "'pkcshsm_mk_change list' shows the active operations",
			"option -i/--id is required for the '%s' command", cmd.Name())
	}
	return state.ParseID(o.id)
}

// resumable says from which states each completing action may start.
var resumable = map[state.Action][]state.State{
	state.ActFinalize: {state.Reenciphered, state.Finalizing, state.Error},
	state.ActCancel:   {state.Initial, state.Reenciphering, state.Reenciphered, state.Canceling, state.Error},
}

// runComplete finalizes or cancels an operation. Each step is recorded, and
// every step is idempotent, so an interrupted run is completed by running
// the same command again.
func (c *command) runComplete(ctx context.Context, cmd *cobra.Command, o *idOption, a state.Action) error {
	id, err := o.require(cmd)
	if err != nil {
		return err
	}
	d, err := c.openDir(false)
	if err != nil {
		return err
	}
	defer d.Close()
	op, err := d.Load(ctx, id)
	if err != nil {
		return err
	}
	past := map[state.Action]string{state.ActFinalize: "finalized", state.ActCancel: "canceled"}[a]
	if !slices.Contains(resumable[a], op.State) {
		hint := "finalize an operation after reencipher has completed and every APQN has the new master key set"
		if a == state.ActCancel {
			hint = "a finalizing operation can no longer be canceled; run 'pkcshsm_mk_change finalize --id " + string(id) + "'"
		}
		return errclass.Newh(errclass.FailedPrecondition, hint,
			"the HSM master key change operation '%s' is in state %s, where it can not be %s", id, op.State, past)
	}
	s, err := c.newSession(ctx, cmd, true)
	if err != nil {
		return err
	}
	defer s.close()
	slots, err := s.slotsFor(ctx, false)
	if err != nil {
		return err
	}
	affected, _, err := s.query(ctx, slots, op, a, a.String()+" action")
	if err != nil {
		return err
	}
	if err := sameSlots(op, affected); err != nil {
		return err
	}
	if err := s.login(ctx, affected); err != nil {
		return err
	}
	verb := map[state.Action]string{state.ActFinalize: "Finalizing", state.ActCancel: "Canceling"}[a]
	target := map[state.Action]state.State{state.ActFinalize: state.Finalizing, state.ActCancel: state.Canceling}[a]
	fmt.Fprintf(s.out, "%s, please wait...\n", verb)

	fail := func(cause error) error {
		fmt.Fprintf(s.errw, "At least one token failed to %s the master key change operation.\n", a)
		// A failure after the state change is an ERROR; before it, the
		// operation keeps its state and records the failure.
		if _, err := s.save(ctx, d, op, func(o *state.Op) error {
			o.LastError = cause.Error()
			if state.CanMove(o.State, state.Error) {
				return o.Move(state.Error, c.deps.Now())
			}
			return nil
		}); err != nil {
			s.log.Error().Err(err).Msg("failed to record the error state")
		}
		return errclass.WithHint(cause, fmt.Sprintf("fix the problem, then run 'pkcshsm_mk_change %s --id %s' again", a, id))
	}
	// First pass over the token objects, then the state change that every
	// process follows, then the broadcast for session objects, then a
	// second pass for objects other processes created in between.
	if err := s.passes(ctx, op, a); err != nil {
		return fail(err)
	}
	if op, err = s.save(ctx, d, op, func(o *state.Op) error {
		o.Slots, o.Step, o.LastError = op.Slots, "token-pass", ""
		return o.Move(target, c.deps.Now())
	}); err != nil {
		return fail(err)
	}
	if err := s.broadcast(ctx, op, a); err != nil {
		return fail(err)
	}
	if err := s.passes(ctx, op, a); err != nil {
		return fail(err)
	}
	outcome := map[state.Action]state.Outcome{state.ActFinalize: state.Finalized, state.ActCancel: state.Canceled}[a]
	if err := d.Remove(ctx, op.ID, outcome); err != nil {
		return fail(fmt.Errorf("failed to remove master key change operation '%s': %w", id, err))
	}
	failpoint.Hit("cli." + a.String() + ".after-remove")
	fmt.Fprintf(s.out, "\nMaster key change operation '%s' successfully %s.\n", id, past)
	return nil
}

// sameSlots checks that the tokens affected now are the ones recorded when
// the operation started (an operation still INITIAL recorded none).
func sameSlots(op *state.Op, affected []Slot) error {
	if op.State == state.Initial && len(op.Slots) == 0 {
		for _, sl := range affected {
			op.Slots = append(op.Slots, state.Slot{ID: sl.ID, Label: sl.Label, Serial: sl.Serial, TokenType: sl.Type})
		}
		return nil
	}
	var now, then []uint
	for _, sl := range affected {
		now = append(now, sl.ID)
	}
	for _, sl := range op.Slots {
		then = append(then, sl.ID)
	}
	if !slices.Equal(now, then) {
		return errclass.Newh(errclass.FailedPrecondition,
			"make every token of the operation available to this user (token groups, configuration) and try again",
			"the list of slots affected by this master key change has changed since it was initiated: then %v, now %v", then, now)
	}
	return nil
}
