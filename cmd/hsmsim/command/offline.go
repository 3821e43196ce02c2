package command

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

type onlineOptions struct {
	online bool
}

func newOfflineCommand(a *app) *cobra.Command {
	o := onlineOptions{online: false}
	return &cobra.Command{
		Use:   "offline APQN...",
		Short: "Take APQNs offline",
		Long: `offline takes the listed APQNs offline: every operation on them fails as
unavailable, sysfs shows online 0 and "- -" lines in mkvps. Officer steps
are refused too until "hsmsim online".`,
		Example: `  hsmsim offline 0e.0033`,
		RunE:    func(cmd *cobra.Command, args []string) error { return runOnline(a, o, cmd, args) },
	}
}

// runOnline is shared by offline and online.
func runOnline(a *app, o onlineOptions, cmd *cobra.Command, args []string) error {
	ids, err := apqnArgs(args)
	if err != nil {
		return err
	}
	h, err := a.open()
	if err != nil {
		return err
	}
	defer h.Close()
	err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
		for _, id := range ids {
			if err := tx.SetOnline(id, o.online); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	word := "offline"
	if o.online {
		word = "online"
	}
	for _, id := range ids {
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", id, word)
	}
	return nil
}
