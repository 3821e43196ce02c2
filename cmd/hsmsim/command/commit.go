package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

type commitOptions struct {
	apqns apqn.List
}

func newCommitCommand(a *app) *cobra.Command {
	var o commitOptions
	cmd := &cobra.Command{
		Use:   "commit --apqns APQNS",
		Short: "Commit the uncommitted new EP11 wrapping key",
		Long: `commit moves the NEW wrapping key of every listed EP11 APQN from uncommitted to
committed. Keys can then be re-enciphered to it, and "hsmsim set" can
activate it. All listed APQNs change, or none.`,
		Example: `  hsmsim commit --apqns 06.0033,0e.0033`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(cmd.Flags(), "apqns", "06.0033"); err != nil {
				return err
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
				for _, id := range o.apqns {
					if err := tx.Commit(id); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			return printRegs(cmd, h, o.apqns, func(apqn.ID) mkvp.Type { return mkvp.EP11WK }, "NEW")
		},
	}
	cmd.Flags().Var(&o.apqns, "apqns", "EP11 APQNs, e.g. 06.0033,0e.0033")
	return cmd
}

// printRegs prints one register line per APQN, as mkvps would show it.
func printRegs(cmd *cobra.Command, h *sim.HSM, ids apqn.List, typeOf func(apqn.ID) mkvp.Type, regs ...string) error {
	w := cmd.OutOrStdout()
	for _, id := range ids {
		q, err := h.Queue(cmd.Context(), id)
		if err != nil {
			return err
		}
		t := typeOf(id)
		r := q.MK[t]
		for _, name := range regs {
			reg := map[string]struct {
				st  apqn.RegState
				pat mkvp.Pattern
			}{"NEW": {r.New.State, r.New.Pattern}, "CUR": {r.Current.State, r.Current.Pattern}, "OLD": {r.Old.State, r.Old.Pattern}}[name]
			fmt.Fprintf(w, "%s %s %s: %s %s\n", id, t.Keyword(), name, reg.st, patternText(reg.pat))
		}
	}
	return nil
}
