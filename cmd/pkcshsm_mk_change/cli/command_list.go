package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/state"
)

type listOptions struct {
	idOption
	json bool
}

func (c *command) newListCommand() *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:   "list [-i ID] [--json]",
		Short: "List the active master key change operations",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runList(cmd.Context(), cmd, o)
		},
	}
	o.addFlag(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print the operations as JSON")
	return cmd
}

func (c *command) runList(ctx context.Context, cmd *cobra.Command, o *listOptions) error {
	if cmd.Flags().Changed("id") {
		// The id is checked before anything is read.
		id, err := state.ParseID(o.id)
		if err != nil {
			return err
		}
		if err := c.noSuchOp(id); err != nil {
			return err
		}
	}
	d, err := c.openDir(true)
	if errclass.Of(err) == errclass.NotFound && !cmd.Flags().Changed("id") {
		// Nothing was ever started here; a change started on another host
		// sharing the adapters is still reported.
		chk := c.keyChecks(ctx, cmd, nil)
		printForeign(cmd, chk, o.json, false)
		return printOps(cmd.OutOrStdout(), nil, nil, nil, o.json, chk)
	}
	if err != nil {
		return err
	}
	defer d.Close()
	var ops []*state.Op
	var damaged error
	if cmd.Flags().Changed("id") {
		id, err := state.ParseID(o.id)
		if err != nil {
			return err
		}
		op, err := d.Load(ctx, id)
		if err != nil {
			return err
		}
		ops = []*state.Op{op}
		if _, broken, err := d.List(ctx); err == nil {
			// Repaired as by a plain list (see below).
			if needsRepair(broken) && syscall.Access(d.Path(), accessWrite) == nil {
				if w, err := c.openDir(false); err == nil {
					if _, b2, err := w.List(ctx); err == nil {
						broken = b2
					}
					w.Close()
				}
			}
			warnBroken(cmd.ErrOrStderr(), recovered(broken), id)
		}
	} else {
		var broken []state.Broken
		ops, broken, err = d.List(ctx)
		if err != nil {
			return err
		}
		// An administrator's list repairs a damaged file from its copy
		// (moving the damaged one to .broken/); anyone else's reports it.
		if needsRepair(broken) && syscall.Access(d.Path(), accessWrite) == nil {
			if w, err := c.openDir(false); err == nil {
				if o2, b2, err := w.List(ctx); err == nil {
					ops, broken = o2, b2
				}
				w.Close()
			}
		}
		damaged = warnBroken(cmd.ErrOrStderr(), broken, "")
	}
	// The keys, not the files, say whether the new master keys can be set.
	chk := c.keyChecks(ctx, cmd, ops)
	printForeign(cmd, chk, o.json, len(ops) > 0)
	if err := printOps(cmd.OutOrStdout(), d, ops, c.activatedOn(ctx, ops), o.json, chk); err != nil {
		return err
	}
	if damaged != nil {
		// Printed above with its hint; the exit code says data loss.
		return errclass.As(errclass.DataLoss, &shown{damaged})
	}
	return nil
}

// printForeign prints what keyChecks found of tokens no operation of this
// host covers, before the operations (a blank line after, if more
// follows); not with --json, whose output is the operations alone.
func printForeign(cmd *cobra.Command, chk keyChecks, asJSON, more bool) {
	if chk.foreign == nil || asJSON {
		return // --json prints the operations only; verify --json has the rest
	}
	w := cmd.OutOrStdout()
	fmt.Fprint(w, chk.foreign.foreignText())
	if more {
		fmt.Fprintln(w)
	}
}

// accessWrite is access(2)'s W_OK.
const accessWrite = 2

func needsRepair(broken []state.Broken) bool {
	for _, b := range broken {
		if b.Recovered && b.Quarantined == "" {
			return true
		}
	}
	return false
}

// shown is an error already printed in full; Main prints only a summary.
type shown struct{ err error }

func (e *shown) Error() string {
	var de *state.DamagedError
	if errors.As(e.err, &de) {
		return fmt.Sprintf("master key change operation '%s' is unreadable (see above)", de.ID)
	}
	return "an operation file is unreadable (see above)"
}

func (e *shown) Unwrap() error { return e.err }

// listed is one operation as `list --json` prints it: the stored fields,
// and what list advises.
type listed struct {
	*state.Op
	Next         []string `json:"next"`
	SetLosesKeys bool     `json:"set_loses_keys"`
	RunningPID   int      `json:"running_pid,omitempty"`
	// Keys is the check of verify -i for an operation in REENCIPHERED;
	// KeysUnchecked says why it could not run.
	Keys          *readiness `json:"keys,omitempty"`
	KeysUnchecked string     `json:"keys_unchecked,omitempty"`
	Running       string     `json:"running,omitempty"`
}

// activatedOn returns, per REENCIPHERED operation, the APQNs of the
// operation where the security officer has already set (activated) one of
// its new master keys: from then on cancel is refused and finalize is the
// only way on. It reads the adapters' registers; when they cannot be read
// (no access to the adapters) it returns what it has, and list keeps its
// general advice.
func (c *command) activatedOn(ctx context.Context, ops []*state.Op) map[state.ID][]string {
	need := false
	for _, op := range ops {
		need = need || op.State == state.Reenciphered
	}
	if !need || c.deps.OpenTokens == nil {
		return nil
	}
	tokens, err := c.deps.OpenTokens(ctx, c.log, c.opts.config)
	if err != nil {
		c.log.Debug().Err(err).Msg("list: the adapters' registers cannot be read")
		return nil
	}
	defer tokens.Close()
	queues, err := tokens.Queues(ctx)
	if err != nil {
		c.log.Debug().Err(err).Msg("list: the adapters' registers cannot be read")
		return nil
	}
	set := map[state.ID][]string{}
	for _, op := range ops {
		if op.State != state.Reenciphered {
			continue
		}
		for _, q := range queues {
			if !slices.Contains(op.APQNs, q.ID) {
				continue
			}
			for t, p := range op.New {
				if r, ok := q.MK[t]; ok && r.Current.Pattern == p {
					set[op.ID] = append(set[op.ID], q.ID.String())
					break
				}
			}
		}
	}
	return set
}

func printOps(w io.Writer, d *state.Dir, ops []*state.Op, set map[state.ID][]string, asJSON bool, chk keyChecks) error {
	claimant := func(op *state.Op) (state.ClaimInfo, bool) {
		if d == nil {
			return state.ClaimInfo{}, false
		}
		return d.Claimant(op.ID)
	}
	if asJSON {
		out := []listed{}
		for _, op := range ops {
			l := listed{Op: op, SetLosesKeys: op.SetLosesKeys()}
			if r, ok := chk.ops[op.ID]; ok && !r.Ready {
				l.SetLosesKeys, l.Keys = true, r
			} else if ok {
				l.Keys = r
			}
			if e, ok := chk.failed[op.ID]; ok {
				l.KeysUnchecked = e
			}
			for _, a := range op.Completes() {
				if a == state.ActCancel && len(set[op.ID]) > 0 {
					continue // an APQN has the new key: cancel is refused
				}
				l.Next = append(l.Next, a.String())
			}
			if ci, ok := claimant(op); ok {
				l.RunningPID, l.Running = ci.PID, ci.Command
			}
			out = append(out, l)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for i, op := range ops {
		if i > 0 {
			fmt.Fprintln(w)
		}
		ci, running := claimant(op)
		fmt.Fprint(w, formatOp(op, ci, running, chk, set[op.ID]))
	}
	return nil
}

// formatOp renders one operation in the layout of upstream's list, with
// the creation time, initiator, last error, the step in progress, the
// command that completes it and, in capitals, whether setting the new
// master keys now would lose keys.
func formatOp(op *state.Op, ci state.ClaimInfo, running bool, chk keyChecks, set []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Operation:       %s\n", op.ID)
	stateText := op.State.Text()
	r, checked := chk.ops[op.ID]
	if op.State == state.Reenciphered && (!checked || !r.Ready) {
		// Never "can now be set" unless the keys say so.
		stateText = "Key objects have been re-enciphered according to the operation file"
	}
	fmt.Fprintf(&b, "    State:       %s\n", strings.ReplaceAll(stateText, "\n", "\n                 "))
	if op.Step != "" && op.State != state.Reenciphered {
		fmt.Fprintf(&b, "    Step:        %s\n", state.StepText(op.Step))
	}
	if !op.Created().IsZero() {
		fmt.Fprintf(&b, "    Created:     %s by uid %d\n", op.Created().Format("2006-01-02 15:04:05 MST"), op.UID)
		fmt.Fprintf(&b, "    Updated:     %s\n", op.Updated().Format("2006-01-02 15:04:05 MST"))
	}
	if op.LastError != "" {
		fmt.Fprintf(&b, "    Last error:  %s\n", op.LastError)
	}
	if running {
		fmt.Fprintf(&b, "    Running:     %s\n", ci)
	}
	switch {
	case op.State != state.Reenciphered:
	case !checked:
		fmt.Fprintf(&b, "    Keys:        NOT CHECKED (%s):\n"+
			"                 run 'pkcshsm_mk_change verify -i %s' before setting the new master keys\n", chk.failed[op.ID], op.ID)
	case !r.Ready:
		fmt.Fprintf(&b, "    WARNING:     THE KEYS DISAGREE WITH THE OPERATION FILE: DO NOT SET/ACTIVATE THE NEW\n"+
			"                 MASTER KEYS: %s.\n", strings.ToUpper(r.summary()))
		for _, sl := range r.Slots {
			for _, why := range sl.Reasons {
				fmt.Fprintf(&b, "                 Slot %d: %s\n", sl.Slot, why)
			}
		}
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "                 %s\n", p)
		}
		if r.Fix != "" {
			fmt.Fprintf(&b, "    Next:        run '%s'\n", r.Fix)
		}
	}
	truth, disagree := chk.truth[op.ID]
	if disagree {
		fmt.Fprintf(&b, "    WARNING:     THE TOKEN STORES DISAGREE WITH THE OPERATION FILE:\n")
		for _, w := range truth.warnings {
			fmt.Fprintf(&b, "                 %s\n", w)
		}
		if truth.next != 0 && !running {
			fmt.Fprintf(&b, "    Next:        run 'pkcshsm_mk_change %s --id %s' (what the token stores say)\n", truth.next, op.ID)
		}
	}
	if (!checked || r.Ready || r.Fix == "") && !(disagree && truth.next != 0 && !running) {
		fmt.Fprintf(&b, "    Next:        %s\n", nextText(op, running, set))
	}
	if op.SetLosesKeys() {
		fmt.Fprintf(&b, "    WARNING:     DO NOT SET/ACTIVATE THE NEW MASTER KEYS: KEY OBJECTS WITHOUT A BLOB\n"+
			"                 UNDER THE NEW MASTER KEY WOULD BE LOST. COMPLETE THE OPERATION FIRST.\n")
	}
	b.WriteString("    APQNs:\n")
	for _, q := range op.APQNs {
		fmt.Fprintf(&b, "        %s\n", q)
	}
	b.WriteString("    New master key verification patterns:\n")
	for _, t := range op.Types() {
		fmt.Fprintf(&b, "        Type:    %s\n        MKVP:    %s\n", t, op.New[t])
	}
	b.WriteString("    Affected slots:\n")
	for _, sl := range op.Slots {
		fmt.Fprintf(&b, "        Slot: %d", sl.ID)
		if sl.Label != "" {
			fmt.Fprintf(&b, " Label: %s", sl.Label)
		}
		b.WriteString("\n")
		if len(sl.Current) > 0 {
			b.WriteString("            Current master key verification patterns:\n")
			for _, t := range op.Types() {
				if p, ok := sl.Current[t]; ok {
					fmt.Fprintf(&b, "                Type:    %s\n                MKVP:    %s\n", t, p)
				}
			}
		}
	}
	return b.String()
}

// nextText says which command completes the operation. Only REENCIPHERED
// offers a choice, and it depends on what the security officer did: once
// set names an APQN with a new key active, only finalize is left.
func nextText(op *state.Op, running bool, set []string) string {
	if running {
		return "wait until the running command is done"
	}
	if op.State == state.Reenciphered && len(set) > 0 {
		return fmt.Sprintf("the new master keys are set/activated on %s: cancel is no longer\n"+
			"                 possible. Once every APQN of the operation has them, run\n"+
			"                 'pkcshsm_mk_change finalize --id %s'", strings.Join(set, ", "), op.ID)
	}
	next := op.Completes()
	switch {
	case len(next) == 1:
		why := map[state.State]string{
			state.Initial:       "to undo the interrupted reencipher (then start it again)",
			state.Reenciphering: "to undo the interrupted reencipher (then start it again)",
			state.Finalizing:    "to complete the interrupted finalize",
			state.Canceling:     "to complete the interrupted cancel",
		}[op.State]
		if why == "" {
			why = "to complete it"
		}
		return fmt.Sprintf("run 'pkcshsm_mk_change %s --id %s' %s", next[0], op.ID, why)
	case op.State == state.Reenciphered:
		return fmt.Sprintf("once every APQN has the new master keys set/activated, run\n"+
			"                 'pkcshsm_mk_change finalize --id %[1]s'; to undo the change before any\n"+
			"                 APQN has, run 'pkcshsm_mk_change cancel --id %[1]s'", op.ID)
	}
	return fmt.Sprintf("run 'pkcshsm_mk_change finalize --id %[1]s' if every APQN has the new master keys set/activated, else 'pkcshsm_mk_change cancel --id %[1]s'", op.ID)
}
