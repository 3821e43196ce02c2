package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type pinChangeOptions struct {
	*globalOptions
	slot uint
	so   bool
}

func newPINChangeCommand(g *globalOptions) *cobra.Command {
	o := &pinChangeOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "change --slot N [--so]",
		Short: "Change the USER PIN, or with --so the SO PIN (C_SetPIN)",
		Args:  cobra.NoArgs,
		RunE:  o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().BoolVar(&o.so, "so", false, "change the SO PIN instead of the USER PIN")
	c.MarkFlagRequired("slot")
	return c
}

func (o *pinChangeOptions) run(cmd *cobra.Command, _ []string) error {
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	who := "USER PIN"
	if o.so {
		who = "SO PIN"
	}
	h, err := lib.OpenSession(tokenlib.SlotID(o.slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	r := o.prompter(cmd)
	old, err := r.PIN("Enter the current " + who + ": ")
	if err != nil {
		return err
	}
	defer clear(old)
	if o.so {
		// SetPIN changes the SO PIN only in an SO session.
		if err := lib.Login(h, ck.CKU_SO, old); err != nil {
			return fmt.Errorf("slot %d: SO login: %w", o.slot, err)
		}
	}
	pin, err := r.NewPIN(who)
	if err != nil {
		return err
	}
	defer clear(pin)
	if err := lib.SetPIN(h, old, pin); err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s of slot %d changed.\n", who, o.slot)
	return nil
}
