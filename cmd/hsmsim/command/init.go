package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

type initOptions struct {
	cca, ep11         []string
	ccaType, ep11Type string
	seed              string
	force             bool
	maxSessions       int
}

func newInitCommand(a *app) *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init --cca APQNS --ep11 APQNS [--force]",
		Short: "Create simulated adapters with valid CURRENT master keys",
		Long: `init creates the simulator: a CCA card for every card number in --cca, an EP11
card for every one in --ep11, and their domains. Each --cca or --ep11 option
is one domain group: its APQNs start with the same CURRENT master keys, as a
TKE domain group would have them. NEW registers start empty.

--max-sessions N bounds the EP11 sessions each EP11 APQN holds (default 64).

An existing simulator is refused unless --force is given (all its keys are lost).`,
		Example: `  hsmsim init --cca 01.0033,02.0033 --ep11 06.0033,0e.0033`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			topo := sim.Topology{Force: o.force, MaxSessions: o.maxSessions}
			if o.seed != "" {
				topo.Seed = []byte(o.seed)
			}
			add := func(lists []string, mode apqn.Mode, typ, flag string) error {
				for _, l := range lists {
					ids, err := apqn.ParseList(l)
					if err != nil {
						return fmt.Errorf("--%s: %w", flag, err)
					}
					topo.Groups = append(topo.Groups, sim.Group{Mode: mode, APQNs: ids, CardType: typ})
				}
				return nil
			}
			if err := add(o.cca, apqn.ModeCCA, o.ccaType, "cca"); err != nil {
				return err
			}
			if err := add(o.ep11, apqn.ModeEP11, o.ep11Type, "ep11"); err != nil {
				return err
			}
			if len(topo.Groups) == 0 {
				return errclass.Newh(errclass.InvalidArgument, "name APQNs with --cca and/or --ep11, e.g. --cca 01.0033",
					"no APQNs given")
			}
			if err := sim.Init(a.opts.dir, topo); err != nil {
				return err
			}
			n := map[apqn.Mode]int{}
			for _, g := range topo.Groups {
				n[g.Mode] += len(g.APQNs)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "simulator created in %s: %d CCA and %d EP11 APQNs\n",
				a.opts.dir, n[apqn.ModeCCA], n[apqn.ModeEP11])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.cca, "cca", nil, "CCA APQNs of one domain group, e.g. 01.0033,02.0033 (repeatable)")
	f.StringArrayVar(&o.ep11, "ep11", nil, "EP11 APQNs of one domain group, e.g. 06.0033 (repeatable)")
	f.StringVar(&o.ccaType, "cca-type", "CEX8C", "card type of the CCA cards")
	f.StringVar(&o.ep11Type, "ep11-type", "CEX8P", "card type of the EP11 cards")
	f.StringVar(&o.seed, "seed", "", "derive the initial master keys from this text (repeatable demos and tests)")
	f.BoolVar(&o.force, "force", false, "replace an existing simulator")
	f.IntVar(&o.maxSessions, "max-sessions", 0, "EP11 sessions each EP11 APQN holds (0: the default, 64)")
	return cmd
}
