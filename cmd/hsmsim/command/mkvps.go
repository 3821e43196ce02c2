package command

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
)

type mkvpsOptions struct{}

func newMKVPsCommand(a *app) *cobra.Command {
	var _ mkvpsOptions
	cmd := &cobra.Command{
		Use:   "mkvps APQN",
		Short: "Print the sysfs mkvps attribute of an APQN",
		Long: `mkvps prints the mkvps attribute of one APQN exactly as the simulated sysfs
view holds it — the same bytes the kernel prints on a real system in
/sys/bus/ap/devices/XX.YYYY/mkvps.`,
		Example: `  hsmsim mkvps 01.0033`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errclass.Newh(errclass.InvalidArgument, "name one APQN, e.g. hsmsim mkvps 01.0033",
					"mkvps takes exactly one APQN, got %d arguments", len(args))
			}
			id, err := apqn.Parse(strings.TrimSpace(args[0]))
			if err != nil {
				return err
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			if _, err := h.Queue(cmd.Context(), id); err != nil {
				return err
			}
			path := filepath.Join(apqn.Bus{Root: h.SysfsRoot()}.QueueDir(id), "mkvps")
			raw, err := os.ReadFile(path)
			if err != nil {
				return errclass.Newh(errclass.DataLoss, "re-render the view with any officer step, or re-create the simulator",
					"read %s: %w", path, err)
			}
			if _, err := cmd.OutOrStdout().Write(raw); err != nil {
				return errclass.New(errclass.Unavailable, "write output: %w", err)
			}
			return nil
		},
	}
	return cmd
}
