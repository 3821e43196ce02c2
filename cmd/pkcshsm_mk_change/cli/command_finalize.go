package cli

import (
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/state"
)

func (c *command) newFinalizeCommand() *cobra.Command {
	o := &idOption{}
	cmd := &cobra.Command{
		Use:   "finalize -i ID",
		Short: "Finish a master key change once the new keys are active",
		Long: `Finish a master key change once the security officer has set (activated) the
new master keys on every APQN of the operation: the blobs under the new master
key become current (CKA_IBM_OPAQUE) and the previous ones are kept in
CKA_IBM_OPAQUE_OLD. An interrupted finalize is completed by running it again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runComplete(cmd.Context(), cmd, o, state.ActFinalize)
		},
	}
	o.addFlag(cmd)
	c.addExcludeFlag(cmd)
	return cmd
}
