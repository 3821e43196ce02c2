package cli

import (
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/state"
)

func (c *command) newCancelCommand() *cobra.Command {
	o := &idOption{}
	cmd := &cobra.Command{
		Use:   "cancel -i ID",
		Short: "Cancel a master key change before any APQN activated the new key",
		Long: `Cancel a master key change as long as no APQN of the operation has activated
the new master key: the blobs under the new master key are dropped. An
interrupted cancel, or an operation left behind by a crash, is completed by
running cancel (again).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runComplete(cmd.Context(), cmd, o, state.ActCancel)
		},
	}
	o.addFlag(cmd)
	c.addExcludeFlag(cmd)
	return cmd
}
