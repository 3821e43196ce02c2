package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type pinSetOptions struct {
	*globalOptions
	slot uint
}

func newPINSetCommand(g *globalOptions) *cobra.Command {
	o := &pinSetOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "set --slot N",
		Short: "Set the USER PIN as the security officer (C_InitPIN)",
		Long:  "Set (or reset and unlock) the USER PIN. Asks for the SO PIN, then the new USER PIN twice.",
		Args:  cobra.NoArgs,
		RunE:  o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.MarkFlagRequired("slot")
	return c
}

func (o *pinSetOptions) run(cmd *cobra.Command, _ []string) error {
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	slot := tokenlib.SlotID(o.slot)
	h, err := lib.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	r := o.prompter(cmd)
	so, err := r.PIN("Enter the SO PIN: ")
	if err != nil {
		return err
	}
	defer clear(so)
	if err := lib.Login(h, ck.CKU_SO, so); err != nil {
		return fmt.Errorf("slot %d: SO login: %w", o.slot, err)
	}
	pin, err := r.NewPIN("USER PIN")
	if err != nil {
		return err
	}
	defer clear(pin)
	if err := lib.InitPIN(h, pin); err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "USER PIN of slot %d set.\n", o.slot)
	return nil
}
