package command

import (
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

type setOptions struct {
	apqns apqn.List
	typ   string
}

func newSetCommand(a *app) *cobra.Command {
	var o setOptions
	cmd := &cobra.Command{
		Use:   "set --apqns APQNS [--type TYPE]",
		Short: "Activate the new master key (NEW becomes CURRENT)",
		Long: `set activates the new master key on every listed APQN. CCA: CURRENT moves to
OLD, the full NEW register becomes CURRENT and NEW is emptied; keys under the
previous master key keep working through OLD. EP11: the committed NEW
wrapping key becomes CURRENT and NEW is emptied; keys under the previous
wrapping key stop working at once.

--type is required for CCA APQNs; for EP11 APQNs it defaults to WK. All
listed APQNs change, or none.

Run 'pkcshsm_mk_change verify' for the same APQNs and type first, on every
host whose tokens use them, and set only when it exits 0: it counts, from
the keys themselves, the keys that have no blob under the new master key,
which a set would lose.`,
		Example: `  pkcshsm_mk_change verify -a 01.0033,02.0033 -t AES && hsmsim set --apqns 01.0033,02.0033 --type AES
  pkcshsm_mk_change verify -a 06.0033,0e.0033 -t WK && hsmsim set --apqns 06.0033,0e.0033`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			if err := requireFlag(fs, "apqns", "01.0033"); err != nil {
				return err
			}
			t := mkvp.EP11WK
			if fs.Changed("type") {
				var err error
				if t, err = parseType(o.typ); err != nil {
					return err
				}
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			if !fs.Changed("type") {
				m, err := modes(cmd.Context(), h, o.apqns)
				if err != nil {
					return err
				}
				for _, id := range o.apqns {
					if m[id] != apqn.ModeEP11 {
						return errclass.Newh(errclass.InvalidArgument, "add --type SYM, ASYM, AES or APKA",
							"APQN %s is CCA: --type is required", id)
					}
				}
			}
			err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
				for _, id := range o.apqns {
					if err := tx.Set(id, t); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			regs := []string{"NEW", "CUR", "OLD"}
			if t == mkvp.EP11WK {
				regs = regs[:2]
			}
			return printRegs(cmd, h, o.apqns, func(apqn.ID) mkvp.Type { return t }, regs...)
		},
	}
	cmd.Flags().Var(&o.apqns, "apqns", "APQNs, e.g. 01.0033,02.0033")
	cmd.Flags().StringVar(&o.typ, "type", "", "master key type: SYM, ASYM, AES, APKA or WK")
	return cmd
}
