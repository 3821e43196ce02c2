package command

import (
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

type clearNewOptions struct {
	apqns apqn.List
	typ   string
}

func newClearNewCommand(a *app) *cobra.Command {
	var o clearNewOptions
	cmd := &cobra.Command{
		Use:   "clear-new --apqns APQNS --type TYPE",
		Short: "Empty the NEW master key register",
		Long: `clear-new empties the NEW register of the given type on every listed APQN,
whatever its state (partial, full, uncommitted or committed). An empty
register stays empty. All listed APQNs change, or none.`,
		Example: `  hsmsim clear-new --apqns 01.0033 --type AES`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			if err := requireFlag(fs, "apqns", "01.0033"); err != nil {
				return err
			}
			if err := requireFlag(fs, "type", "AES"); err != nil {
				return err
			}
			t, err := parseType(o.typ)
			if err != nil {
				return err
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
				for _, id := range o.apqns {
					if err := tx.ClearNew(id, t); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			return printRegs(cmd, h, o.apqns, func(apqn.ID) mkvp.Type { return t }, "NEW")
		},
	}
	cmd.Flags().Var(&o.apqns, "apqns", "APQNs, e.g. 01.0033,02.0033")
	cmd.Flags().StringVar(&o.typ, "type", "", "master key type: SYM, ASYM, AES, APKA or WK")
	return cmd
}
