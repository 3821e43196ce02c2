package command

import "github.com/spf13/cobra"

func newOnlineCommand(a *app) *cobra.Command {
	o := onlineOptions{online: true}
	return &cobra.Command{
		Use:     "online APQN...",
		Short:   "Bring APQNs back online",
		Long:    `online brings the listed APQNs back online. It does not clear injected faults (see "hsmsim fault --clear").`,
		Example: `  hsmsim online 0e.0033`,
		RunE:    func(cmd *cobra.Command, args []string) error { return runOnline(a, o, cmd, args) },
	}
}
