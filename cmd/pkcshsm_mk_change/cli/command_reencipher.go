package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/pinentry"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
)

type reencipherOptions struct {
	apqns    apqn.List
	patterns map[mkvp.Type]*string // raw option values; nil entries not given
	dryRun   bool
}

var patternFlags = []struct {
	typ         mkvp.Type
	long, short string
	help        string
}{
	{mkvp.EP11WK, "ep11-wkvp", "e", "pattern of the new EP11 wrapping key, 16 bytes hex (WK NEW in sysfs mkvps, or ep11info; the 32-byte sysfs value is accepted)"},
	{mkvp.CCASYM, "cca-sym-mkvp", "s", "pattern of the new CCA SYM master key, 8 bytes hex (TKE or panel.exe [RND]; SYM is not in sysfs)"},
	{mkvp.CCAASYM, "cca-asym-mkvp", "S", "pattern of the new CCA ASYM master key, 8 bytes hex (TKE or panel.exe [RND]; the 16-byte sysfs value is accepted)"},
	{mkvp.CCAAES, "cca-aes-mkvp", "A", "pattern of the new CCA AES master key, 8 bytes hex (AES NEW in sysfs mkvps, or panel.exe [VER])"},
	{mkvp.CCAAPKA, "cca-apka-mkvp", "p", "pattern of the new CCA APKA master key, 8 bytes hex (APKA NEW in sysfs mkvps, or panel.exe [VER])"},
}

func (c *command) newReencipherCommand() *cobra.Command {
	o := &reencipherOptions{patterns: map[mkvp.Type]*string{}}
	cmd := &cobra.Command{
		Use:   "reencipher -a APQNS [-e WKVP] [-s|-S|-A|-p MKVP]... [--dry-run]",
		Short: "Start a master key change and re-encipher every key object",
		Long: `Start a master key change for the given APQNs and master key types, once the
new master keys are loaded (CCA: NEW full; EP11: NEW committed) but not yet
set. Every running application re-enciphers its session keys, this command
re-enciphers the token keys; each key then also carries a blob under the new
master key. The operation id printed at the end is needed by finalize and
cancel.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runReencipher(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.VarP(&o.apqns, "apqns", "a", "APQNs to change, card.domain in hex as lszcrypt prints them, separated by commas or blanks; repeat to add more")
	for _, pf := range patternFlags {
		o.patterns[pf.typ] = f.StringP(pf.long, pf.short, "", pf.help)
	}
	f.BoolVar(&o.dryRun, "dry-run", false, "run every check and print the plan, change nothing")
	c.addExcludeFlag(cmd)
	return cmd
}

// parse validates the options into a new operation.
func (o *reencipherOptions) parse(cmd *cobra.Command) (*state.Op, []string, error) {
	if !cmd.Flags().Changed("apqns") {
		return nil, nil, errclass.Newh(errclass.InvalidArgument, "name the APQNs with -a, e.g. -a 06.0033,0e.0033",
			"option -a/--apqns is required for the 'reencipher' command")
	}
	op := &state.Op{APQNs: o.apqns, New: map[mkvp.Type]mkvp.Pattern{}}
	var warnings []string
	for _, pf := range patternFlags {
		if !cmd.Flags().Changed(pf.long) {
			continue
		}
		p, ignored, err := mkvp.Parse(pf.typ, *o.patterns[pf.typ])
		if err != nil {
			return nil, nil, fmt.Errorf("option -%s/--%s: %w", pf.short, pf.long, err)
		}
		if ignored > 0 {
			warnings = append(warnings, fmt.Sprintf("option -%s/--%s specifies more than %d bytes, the remaining %d bytes are ignored",
				pf.short, pf.long, pf.typ.Size(), ignored))
		}
		op.New[pf.typ] = p
	}
	if len(op.New) == 0 {
		return nil, nil, errclass.Newh(errclass.InvalidArgument,
			"give the pattern of each new master key, e.g. --cca-aes-mkvp or --ep11-wkvp",
			"at least one master key verification pattern must be specified")
	}
	if len(op.New) == 1 && op.New[mkvp.CCAASYM] != (mkvp.Pattern{}) {
		warnings = append(warnings, "pkcshsm's CCA tokens do not use the ASYM master key; no token will be affected by an ASYM-only change")
	}
	return op, warnings, nil
}

// runReencipher checks everything first and changes nothing until every
// check (options, APQNs, operation directory, conflicts, tokens, registers,
// PINs) has passed. The operation is then created under the directory lock
// that also covers the conflict check and a last look at the registers.
// Until the operation is REENCIPHERING no process touches a key, so a
// failure or an interrupt up to there only discards the INITIAL file (no
// history entry); from there on it rolls back.
func (c *command) runReencipher(ctx context.Context, cmd *cobra.Command, o *reencipherOptions) error {
	op, warnings, err := o.parse(cmd)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		clierr.Warn(cmd.ErrOrStderr(), Prog, "%s", w)
	}
	d, err := c.openDir(o.dryRun)
	if err != nil && !(o.dryRun && errclass.Of(err) == errclass.NotFound) {
		return err
	}
	if d != nil {
		defer d.Close()
	}
	s, err := c.newSession(ctx, cmd, true)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.checkAPQNs(ctx, op, state.ActReencipher); err != nil {
		return err
	}
	slots, err := s.slotsFor(ctx, !o.dryRun)
	if err != nil {
		return err
	}
	if err := s.precheck(ctx, d, op, o.dryRun); err != nil {
		return err
	}
	// A provisional id for the queries; the stored one comes from Create.
	if op.ID, err = state.NewID(); err != nil {
		return err
	}
	affected, results, err := s.query(ctx, slots, op, state.ActReencipher, "master key change")
	if err != nil {
		return err
	}
	if len(affected) == 0 {
		return errclass.Newh(errclass.FailedPrecondition,
			"check the APQNs (-a) against the tokens' ccatok.conf/ep11tok.conf, and the master key types",
			"no token is affected by this master key change, aborting")
	}
	if !o.dryRun {
		fmt.Fprintln(s.out, "The following tokens are affected by this master key change:")
		for _, sl := range affected {
			fmt.Fprintf(s.out, "  Slot %d: Label: %s\n", sl.ID, sl.Label)
		}
		// Nothing is created when the operator cannot see what is done.
		if err := clierr.OutputErr(s.out); err != nil {
			return err
		}
	}
	// The dry run asks for the PINs too, so the PINs, the token databases
	// and the key objects are checked the same way before either run
	// records anything; given no PIN (end of input), it checks the
	// databases only and says so.
	loggedIn := map[uint]bool{}
	if o.dryRun {
		if loggedIn, err = s.dryRunLogin(ctx, affected); err != nil {
			return err
		}
	} else {
		if err := s.login(ctx, affected); err != nil {
			return err
		}
		for _, sl := range affected {
			loggedIn[sl.ID] = true
		}
	}
	if err := s.checkTokens(ctx, affected, op, results, loggedIn); err != nil {
		return err
	}
	if o.dryRun {
		return s.dryRun(op, slots, affected, results, loggedIn)
	}

	// Claim the APQNs and types: the conflict check, a second look at the
	// registers (the officer may have changed them while PINs were typed)
	// and the creation happen under one lock.
	var claim *state.Claim
	op, claim, err = d.CreateClaimedChecked(ctx, op, "reencipher", func() error {
		again, _, err := s.query(ctx, slots, op, state.ActReencipher, "master key change")
		if err != nil {
			return err
		}
		if !sameSlotIDs(affected, again) {
			return errclass.Newh(errclass.FailedPrecondition, "run the command again",
				"the tokens affected by this master key change changed while the PINs were entered")
		}
		return nil
	})
	if err != nil {
		var ce *state.ConflictError
		if errors.As(err, &ce) {
			return errclass.WithHint(err, "finish or cancel the other operation first, or change other APQNs or master key types")
		}
		return err
	}
	// The operation's claim is held from its creation on, so no finalize
	// or cancel can run while this does.
	defer claim.Release()
	s.log.Info().Str("op", string(op.ID)).Msg("operation created")
	failpoint.Hit("cli.reencipher.after-create")
	// Until the operation is REENCIPHERING nothing was touched: a failure
	// or an interrupt discards it, and the history never saw it.
	discard := func(cause error) error {
		if rmErr := d.Discard(c.intr.Cleanup(), op.ID); rmErr != nil {
			return errors.Join(cause, fmt.Errorf("failed to remove master key change operation '%s': %w", op.ID, rmErr))
		}
		return cause
	}
	if err := ctx.Err(); err != nil {
		return discard(interrupted(err))
	}
	next, err := s.save(ctx, d, op, func(o *state.Op) error {
		o.Slots = nil
		for _, sl := range affected {
			o.Slots = append(o.Slots, state.Slot{ID: sl.ID, Label: sl.Label, Serial: sl.Serial,
				TokenType: sl.Type, Current: results[sl.ID].Current})
		}
		o.Step = state.StepBroadcast
		return o.Move(state.Reenciphering, c.deps.Now())
	})
	if err != nil {
		return discard(interrupted(err))
	}
	op = next

	fmt.Fprintln(s.out, "Re-enciphering, please wait...")
	err = s.broadcast(ctx, op, state.ActReencipher)
	if err == nil {
		if next, err = s.save(ctx, d, op, func(o *state.Op) error { o.Step = state.StepPass; return nil }); err == nil {
			op = next
		}
	}
	if err == nil {
		err = s.passes(ctx, op, state.ActReencipher)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		err = interrupted(err)
		// What happened, said once the rollback has really canceled it
		// (after its progress lines).
		done := "At least one token failed to perform the key re-encryption; the master key change is canceled."
		switch {
		case errclass.Of(err) == errclass.Aborted && ctx.Err() != nil:
			done = "Interrupted; the master key change is canceled."
		case isSaveError(err):
			done = "The operation file could not be saved; the master key change is canceled."
		}
		return s.rollback(c.intr.Cleanup(), d, op, err, done)
	}
	next, err = s.save(ctx, d, op, func(o *state.Op) error {
		o.Slots, o.Step = op.Slots, ""
		return o.Move(state.Reenciphered, c.deps.Now())
	})
	if err != nil {
		return s.rollback(c.intr.Cleanup(), d, op, interrupted(err), "The operation file could not be saved; the master key change is canceled.")
	}
	op = next
	s.summary(op, state.ActReencipher)
	fmt.Fprintln(s.out, "Completed.")
	fmt.Fprintf(s.out, `
Master key change operation '%[1]s' created.

Once the new master keys have been set/activated:
 - If you specified EXPECTED_MKVPS or EXPECTED_WKVP in your token
   configuration file(s), you must now replace the old patterns with the
   new ones.
 - Run 'pkcshsm_mk_change finalize --id %[1]s' when the new master
   keys have been set/activated.
`, op.ID)
	if err := clierr.OutputErr(s.out); err != nil {
		// The operation exists: its id goes where the operator sees it.
		return errclass.Newh(errclass.Internal,
			fmt.Sprintf("once the new master keys are set, run 'pkcshsm_mk_change finalize --id %s'; 'pkcshsm_mk_change list' shows it", op.ID),
			"master key change operation '%s' was created and its keys re-enciphered, but %v", op.ID, err)
	}
	return nil
}

// maxLostShown bounds the LOST keys named per slot.
const maxLostShown = 10

// checkTokens checks each affected token's database and key objects before
// anything is recorded: a damaged database (a file cut short, a schema or
// data key that does not match) or a key the pass cannot re-encipher
// (LOST) would otherwise fail the pass after the operation was recorded,
// and the automatic cancel with it. Every token is checked; the refusal
// lists every problem.
func (s *session) checkTokens(ctx context.Context, affected []Slot, op *state.Op, results map[uint]QueryResult, loggedIn map[uint]bool) error {
	var damaged, lost []error
	var lostSlots []string
	for _, sl := range affected {
		if !loggedIn[sl.ID] {
			if err := s.tokens.CheckStore(ctx, sl.ID); err != nil {
				damaged = append(damaged, fmt.Errorf("slot %d (%s): %w", sl.ID, sl.Label, err))
			}
			continue
		}
		names, n, err := s.tokens.Check(ctx, sl.ID, op, results[sl.ID].Current)
		if err != nil {
			damaged = append(damaged, fmt.Errorf("slot %d (%s): %w", sl.ID, sl.Label, err))
			continue
		}
		if n == 0 {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "slot %d (%s): %s under a master key that is neither the current nor the new one, so %s cannot be re-enciphered (LOST unless marked OLD):",
			sl.ID, sl.Label, plural(n, "1 key object is", fmt.Sprintf("%d key objects are", n)), plural(n, "it", "they"))
		for _, name := range names {
			fmt.Fprintf(&b, "\n    %s", name)
		}
		if n > len(names) {
			fmt.Fprintf(&b, "\n    and %d more ('pkcshsm keys list --slot %d --lost' lists them)", n-len(names), sl.ID)
		}
		lost = append(lost, errors.New(b.String()))
		lostSlots = append(lostSlots, fmt.Sprint(sl.ID))
	}
	if len(damaged) > 0 {
		err := errclass.As(errclass.DataLoss, fmt.Errorf("%s a damaged database, nothing was recorded:\n  %w",
			plural(len(damaged), "a token has", "tokens have"), indented{errors.Join(damaged...)}))
		return errclass.WithHint(err, errclass.Hint(damaged[0]))
	}
	if len(lost) > 0 {
		return errclass.Newh(errclass.FailedPrecondition,
			fmt.Sprintf("delete the LOST ones with 'pkcshsm keys delete --slot N --lost' (slot %s; 'pkcshsm keys list --slot N --lost' lists them), or have the security officer set their master key again; keys marked OLD still work (through the OLD register) but no pass re-enciphers from it: re-create or re-import them under the current master key; then run the command again",
				strings.Join(lostSlots, ", ")),
			"refusing the master key change, nothing was recorded: the pass would fail on these keys and roll back:\n  %w", indented{errors.Join(lost...)})
	}
	return nil
}

// sameSlotIDs reports whether two lists name the same slots.
func sameSlotIDs(a, b []Slot) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// precheck runs, before any PIN is asked, the checks Create repeats under
// its lock: the operation directory is healthy (no unreadable operation
// file) and writable, and no active operation intersects op.
func (s *session) precheck(ctx context.Context, d *state.Dir, op *state.Op, dryRun bool) error {
	if d == nil {
		return nil // dry run, no operation directory yet: the real run creates it
	}
	if dryRun {
		err := unix.Access(d.Path(), unix.W_OK|unix.X_OK)
		switch {
		case errors.Is(err, unix.EROFS):
			// Every other check still runs and the plan is shown; the
			// dry run then ends with this.
			s.dryRunProblem = errclass.Newh(errclass.FailedPrecondition,
				"remount the file system read-write before the real run",
				"operation directory %s is on a read-only file system: the real run could not record the operation", d.Path())
		case err != nil:
			return errclass.Newh(errclass.PermissionDenied, "run the command as root or a member of the admin group",
				"operation directory %s is not writable: %v", d.Path(), err)
		}
	}
	existing, broken, err := d.List(ctx)
	if err != nil {
		return err
	}
	// The same refusal, in the same words, as Create's under its lock.
	var errs []error
	for _, b := range broken {
		if !b.Recovered {
			errs = append(errs, b.Err)
		}
	}
	if len(errs) > 0 {
		return errclass.Newh(errclass.DataLoss,
			"repair the unreadable operation first (pkcshsm_mk_change list shows how)",
			"refusing to start an operation next to an unreadable one: %w", errors.Join(errs...))
	}
	var conflicts []state.Conflict
	for _, other := range existing {
		conflicts = append(conflicts, op.Conflicts(other)...)
	}
	if len(conflicts) > 0 {
		return errclass.WithHint(&state.ConflictError{Conflicts: conflicts},
			"finish or cancel the other operation first, or change other APQNs or master key types")
	}
	return nil
}

// rollback undoes a failed reencipher: every process and every token drop
// what they re-enciphered, then the operation is removed and done is
// printed (only then: it says the change is canceled). If the rollback
// fails too, the operation stays in CANCELING and 'cancel' completes it.
func (s *session) rollback(ctx context.Context, d *state.Dir, op *state.Op, cause error, done string) error {
	fmt.Fprintln(s.errw, "Canceling, please wait...")
	s.changed = nil // the rollback's own passes; the heading says what happened
	cur, err := s.save(ctx, d, op, func(o *state.Op) error {
		o.LastError, o.Step = cause.Error(), state.StepBroadcast
		return o.Move(state.Canceling, s.deps.Now())
	})
	op = cur
	if err == nil {
		err = s.broadcast(ctx, op, state.ActCancel)
	}
	if err == nil {
		op, err = s.save(ctx, d, op, func(o *state.Op) error { o.Step = state.StepPass; return nil })
	}
	if err == nil {
		err = s.passes(ctx, op, state.ActCancel)
	}
	if err == nil {
		err = d.Remove(ctx, op.ID, state.RolledBack)
	}
	if err == nil {
		fmt.Fprintln(s.errw, done)
	}
	if err != nil {
		hint := fmt.Sprintf("run 'pkcshsm_mk_change cancel --id %s' once the problem is fixed", op.ID)
		if isSaveError(cause) && isSaveError(err) {
			// The same directory refused both writes: say it once.
			err = errors.New("it could not save the operation either")
			hint = dirHint(cause, fmt.Sprintf("run 'pkcshsm_mk_change cancel --id %s'", op.ID))
		}
		return errclass.WithHint(errors.Join(cause, fmt.Errorf("the automatic cancel failed too: %w", err)), hint)
	}
	// Rolled back completely: exit status 9 (Aborted), whatever the cause,
	// as the man page says, so a script tells "nothing is left to do"
	// from "an operation is left to complete". The message keeps the
	// cause and its hint.
	err = errclass.As(errclass.Aborted, fmt.Errorf("master key change rolled back: %w", cause))
	if h := errclass.Hint(cause); h != "" {
		err = errclass.WithHint(err, h)
	}
	return err
}

// dryRunLogin asks for and checks the USER PIN of every slot like the real
// run; at the end of input it stops asking and reports which slots it
// logged in to.
func (s *session) dryRunLogin(ctx context.Context, slots []Slot) (map[uint]bool, error) {
	in := map[uint]bool{}
	for _, sl := range slots {
		pin, err := s.ask.PIN(fmt.Sprintf("Enter the USER PIN for slot %d: ", sl.ID))
		if errors.Is(err, pinentry.ErrEndOfInput) {
			return in, nil
		}
		if err != nil {
			return nil, err
		}
		err = s.tokens.Login(ctx, sl.ID, pin)
		clear(pin)
		if err != nil {
			return nil, fmt.Errorf("failed to log in to slot %d: %w", sl.ID, err)
		}
		in[sl.ID] = true
	}
	return in, nil
}

// dryRun prints the plan once every check has passed.
func (s *session) dryRun(op *state.Op, slots, affected []Slot, results map[uint]QueryResult, loggedIn map[uint]bool) error {
	var b strings.Builder
	b.WriteString("Dry run: all checks passed, nothing was changed.\n")
	b.WriteString("APQNs:\n")
	for _, q := range op.APQNs {
		fmt.Fprintf(&b, "    %s\n", q)
	}
	b.WriteString("New master key verification patterns:\n")
	for _, t := range op.Types() {
		fmt.Fprintf(&b, "    %-10s%s\n", t.String()+":", op.New[t])
	}
	fmt.Fprintf(&b, "%s that would be re-enciphered (a USER PIN is needed for each):\n", plural(len(affected), "Token", "Tokens"))
	for _, sl := range affected {
		fmt.Fprintf(&b, "    Slot %d: Label: %s\n", sl.ID, sl.Label)
		for _, t := range op.Types() {
			if p, ok := results[sl.ID].Current[t]; ok {
				fmt.Fprintf(&b, "        %s: %s -> %s\n", t, p, op.New[t])
			}
		}
	}
	var missing []Slot
	for _, sl := range slots {
		if !sl.Present {
			missing = append(missing, sl)
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(&b, "WARNING: %s no token present; the real run asks whether to go on without %s:\n",
			plural(len(missing), "This slot has", "These slots have"), plural(len(missing), "it", "them"))
		for _, sl := range missing {
			fmt.Fprintf(&b, "    Slot %d", sl.ID)
			if sl.Reason != "" {
				fmt.Fprintf(&b, " (%s)", sl.Reason)
			}
			b.WriteString("\n")
		}
	}
	var unchecked []string
	for _, sl := range affected {
		if !loggedIn[sl.ID] {
			unchecked = append(unchecked, fmt.Sprint(sl.ID))
		}
	}
	if len(unchecked) > 0 {
		fmt.Fprintf(&b, "WARNING: no USER PIN given for slot %s: the token databases were checked, the PINs and key objects\n"+
			"(LOST keys, damaged objects) were not; give the PINs on standard input to check them too.\n", strings.Join(unchecked, ", "))
	}
	fmt.Fprint(s.out, b.String())
	return s.dryRunProblem
}
