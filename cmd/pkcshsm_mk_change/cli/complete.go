package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
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

// noSuchOp is the error for an operation id on a machine where no
// operation was ever started (the operation directory does not exist), or
// nil. Checking first keeps finalize and cancel from creating the
// directory and its lock for an operation that cannot be there.
func (c *command) noSuchOp(id state.ID) error {
	if _, err := os.Lstat(c.opts.stateDir); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return errclass.Newh(errclass.NotFound, "check the id; 'pkcshsm_mk_change list' shows the active operations",
		"HSM master key change operation '%s' not found: no operation was ever started here (%s does not exist)", id, c.opts.stateDir)
}

// runComplete finalizes or cancels an operation. Intent before action:
// the state and the step about to be taken are saved before every step
// that changes key objects, and every step is idempotent, so after a kill
// at any instant the operation file names the command that completes it
// (running the same command again).
func (c *command) runComplete(ctx context.Context, cmd *cobra.Command, o *idOption, a state.Action) error {
	id, err := o.require(cmd)
	if err != nil {
		return err
	}
	if err := c.noSuchOp(id); err != nil {
		return err
	}
	d, err := c.openDir(false)
	if err != nil {
		return err
	}
	defer d.Close()
	// One admin command per operation: a running reencipher, finalize or
	// cancel of the same operation makes this one stop here, by pid.
	claim, err := d.Claim(ctx, id, a.String())
	if err != nil {
		return err
	}
	defer claim.Release()
	// Reading every operation repairs a damaged file from its copy and
	// says so; an unrecoverable one is reported by Load below.
	if _, broken, err := d.List(ctx); err == nil {
		warnBroken(cmd.ErrOrStderr(), recovered(broken), id)
	}
	op, err := d.Load(ctx, id)
	if err != nil {
		return err
	}
	past := map[state.Action]string{state.ActFinalize: "finalized", state.ActCancel: "canceled"}[a]
	if !slices.Contains(op.Completes(), a) {
		return errclass.Newh(errclass.FailedPrecondition, completeHint(op, a),
			"the HSM master key change operation '%s' is in state %s, where it can not be %s", id, op.State, past)
	}
	s, err := c.newSession(ctx, cmd, true)
	if err != nil {
		return err
	}
	defer s.close()
	// The token stores remember which action last touched them: a file
	// restored from an older generation must not send the keys the other
	// way (a finalize over a half-done cancel loses keys).
	if t := s.crossCheck(ctx, op); t.next != 0 && t.next != a {
		for _, w := range t.warnings {
			fmt.Fprintf(s.errw, "WARNING: %s\n", w)
		}
		return errclass.Newh(errclass.FailedPrecondition,
			fmt.Sprintf("run 'pkcshsm_mk_change %s --id %s' (what the token stores say)", t.next, id),
			"the token stores say a %s of master key change operation '%s' has begun; its file (%s) is older than the keys", t.next, id, op.State)
	}
	if err := s.checkAPQNs(ctx, op, a); err != nil {
		return err
	}
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
	again := fmt.Sprintf("run 'pkcshsm_mk_change %s --id %s' again", a, id)

	// step records the step about to begin, in the target state, before
	// it begins. The first call also records the slots (an INITIAL
	// operation learnt them from the queries) and leaves an earlier state.
	step := func(name string) error {
		next, err := s.save(ctx, d, op, func(o *state.Op) error {
			o.Slots, o.Step, o.LastError = op.Slots, name, ""
			if o.State == target {
				return nil
			}
			return o.Move(target, c.deps.Now())
		})
		op = next
		return err
	}
	fail := func(cause error) error {
		cause = interrupted(cause)
		// Recording the failure must not be stopped by the interrupt
		// that caused it.
		ctx := c.intr.Cleanup()
		hint := "fix the problem, then " + again
		if errclass.Of(cause) == errclass.DataLoss {
			// A damaged token database: restoring its backup (refused
			// while the operation is active, so with --force) is the way
			// out, then this command completes.
			hint = "a token database is damaged: restore it from its backup ('pkcshsm token restore --slot N FILE --force', see pkcshsm(1)), then " + again
		}
		if c.intr.Signal() != nil {
			fmt.Fprintf(s.errw, "Interrupted; the operation stays as recorded.\n")
			hint = fmt.Sprintf("run 'pkcshsm_mk_change %s --id %s' to complete it", a, id)
		} else {
			fmt.Fprintf(s.errw, "At least one token failed to %s the master key change operation.\n", a)
		}
		// The operation is in the target state by now: record the
		// failure as ERROR, which only this command completes.
		if _, err := s.save(ctx, d, op, func(o *state.Op) error {
			o.LastError = cause.Error()
			if o.CanMove(state.Error) {
				return o.Move(state.Error, c.deps.Now())
			}
			return nil
		}); err != nil {
			s.log.Error().Err(err).Msg("failed to record the error state")
			cause = errors.Join(cause, err)
		}
		return errclass.WithHint(cause, hint)
	}
	// Nothing has changed yet: a failure to record the intent leaves the
	// operation as it was.
	if err := step(state.StepFirstPass); err != nil {
		return errclass.WithHint(err, "fix the problem, then "+again)
	}
	fmt.Fprintf(s.out, "%s, please wait...\n", verb)
	// First pass over the token objects, then the broadcast for session
	// objects, then a second pass for objects other processes created in
	// between. Every process follows the state change recorded above.
	if err := s.passes(ctx, op, a); err != nil {
		return fail(err)
	}
	if err := step(state.StepBroadcast); err != nil {
		return fail(err)
	}
	if err := s.broadcast(ctx, op, a); err != nil {
		return fail(err)
	}
	if err := step(state.StepSecondPass); err != nil {
		return fail(err)
	}
	if err := s.passes(ctx, op, a); err != nil {
		return fail(err)
	}
	s.summary(op, a)
	outcome := map[state.Action]state.Outcome{state.ActFinalize: state.Finalized, state.ActCancel: state.Canceled}[a]
	if err := d.Remove(ctx, op.ID, outcome); err != nil {
		return fail(fmt.Errorf("failed to remove master key change operation '%s': %w", id, err))
	}
	failpoint.Hit("cli." + a.String() + ".after-remove")
	fmt.Fprintf(s.out, "\nMaster key change operation '%s' successfully %s.\n", id, past)
	return nil
}

// completeHint says, for an operation that action a cannot complete, which
// command does.
func completeHint(op *state.Op, a state.Action) string {
	next := op.Completes()
	switch {
	case len(next) == 0:
		return "'pkcshsm_mk_change list' shows the operation"
	case a == state.ActFinalize && op.State == state.Canceling:
		return fmt.Sprintf("a cancel of this operation has begun and dropped blobs under the new master key; complete it with 'pkcshsm_mk_change cancel --id %s'", op.ID)
	case a == state.ActFinalize:
		return fmt.Sprintf("the operation did not complete its reencipher; run 'pkcshsm_mk_change %s --id %s'", next[0], op.ID)
	default:
		return fmt.Sprintf("a finalizing operation can no longer be canceled; run 'pkcshsm_mk_change %s --id %s'", next[0], op.ID)
	}
}

// recovered keeps the entries of operations recovered from their copy
// (Load reports the others itself).
func recovered(broken []state.Broken) []state.Broken {
	var out []state.Broken
	for _, b := range broken {
		if b.Recovered {
			out = append(out, b)
		}
	}
	return out
}

// warnBroken reports damaged operation files (only those of id, if id is
// set): a recovered one as a warning, an unrecoverable one as an error
// line with its hint. It returns the first unrecoverable error.
func warnBroken(w io.Writer, broken []state.Broken, id state.ID) error {
	var first error
	for _, b := range broken {
		if id != "" && b.ID != id {
			continue
		}
		if b.Recovered {
			kept := ""
			if b.Quarantined != "" {
				kept = "; the damaged file was moved to " + b.Quarantined
			}
			clierr.Warn(w, Prog, "the file %s of master key change operation '%s' was unusable; the operation was recovered from the other copy, nothing is lost: %v%s",
				b.Name, b.ID, b.Err, kept)
			continue
		}
		clierr.Print(w, Prog, b.Err)
		if first == nil {
			first = b.Err
		}
	}
	return first
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
