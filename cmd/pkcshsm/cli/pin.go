package cli

import "github.com/spf13/cobra"

func newPINCommand(g *globalOptions) *cobra.Command {
	c := &cobra.Command{Use: "pin", Short: "PIN commands: set (by the SO), change", Args: cobra.NoArgs}
	c.AddCommand(newPINSetCommand(g), newPINChangeCommand(g))
	return c
}
