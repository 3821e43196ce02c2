package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

type ep11VHSMPINOptions struct {
	*globalOptions
	slot uint
}

func newEP11SessionVHSMPINCommand(g *globalOptions) *cobra.Command {
	o := &ep11VHSMPINOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "vhsmpin --slot N",
		Short: "Set the card PIN (VHSM PIN) that VHSM_MODE binds keys to",
		Long: fmt.Sprintf(`vhsmpin sets the card PIN of an EP11 token: asks for the USER PIN, then the
new card PIN twice (%d to %d printable ASCII characters; never from the command
line). The card PIN is kept in a hidden private token object. Set it before
turning VHSM_MODE on. Changing it makes every key bound to the previous card
PIN unusable.`, ep11sess.MinCardPIN, ep11sess.MaxCardPIN),
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.MarkFlagRequired("slot")
	return c
}

func (o *ep11VHSMPINOptions) run(cmd *cobra.Command, _ []string) error {
	lib, h, err := o.openSessionTool(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	pin, err := o.prompter(cmd).NewPIN("VHSM PIN")
	if err != nil {
		return err
	}
	defer clear(pin)
	if err := lib.SetCardPIN(cmd.Context(), h, pin); err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), "VHSM PIN successfully set.")
	return nil
}
