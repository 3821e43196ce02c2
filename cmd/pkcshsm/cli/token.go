package cli

import "github.com/spf13/cobra"

func newTokenCommand(g *globalOptions) *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Token commands: init, backup, restore", Args: cobra.NoArgs}
	c.AddCommand(newTokenInitCommand(g), newTokenBackupCommand(g), newTokenRestoreCommand(g))
	return c
}
