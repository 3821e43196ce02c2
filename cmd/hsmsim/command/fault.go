package command

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

type faultOptions struct {
	failAfter int
	latency   time.Duration
	checkstop bool
	clear     bool
}

func newFaultCommand(a *app) *cobra.Command {
	var o faultOptions
	cmd := &cobra.Command{
		Use:   "fault APQN... (--fail-after N | --latency D | --checkstop | --clear)",
		Short: "Inject faults into APQNs",
		Long: `fault injects faults into the listed APQNs, seen by every process:

  --fail-after N   the next N operations succeed, every later one fails as
                   unavailable (as if the adapter went away)
  --latency D      every operation takes D longer (e.g. 5ms, at most 1m)
  --checkstop      the APQN is checkstopped: unavailable, chkstop 1 in sysfs
  --clear          remove all of the above (an offline APQN stays offline)

--fail-after, --latency and --checkstop may be combined; --clear stands alone.`,
		Example: `  hsmsim fault 01.0033 --fail-after 3
  hsmsim fault 01.0033 --clear`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := apqnArgs(args)
			if err != nil {
				return err
			}
			fs := cmd.Flags()
			set := fs.Changed("fail-after") || fs.Changed("latency") || fs.Changed("checkstop")
			switch {
			case o.clear && set:
				return errclass.Newh(errclass.InvalidArgument, "run --clear on its own, then set the new faults",
					"--clear cannot be combined with other faults")
			case !o.clear && !set:
				return errclass.Newh(errclass.InvalidArgument, "add --fail-after N, --latency D, --checkstop or --clear",
					"no fault given")
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
				for _, id := range ids {
					steps := []func() error{}
					if o.clear {
						steps = append(steps, func() error { return tx.ClearFaults(id) })
					}
					if fs.Changed("fail-after") {
						steps = append(steps, func() error { return tx.FailAfter(id, o.failAfter) })
					}
					if fs.Changed("latency") {
						steps = append(steps, func() error { return tx.SetLatency(id, o.latency) })
					}
					if fs.Changed("checkstop") {
						steps = append(steps, func() error { return tx.SetCheckstop(id, o.checkstop) })
					}
					for _, s := range steps {
						if err := s(); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, id := range ids {
				f, err := h.Faults(id)
				if err != nil {
					return err
				}
				fail := "off"
				if f.FailAfter >= 0 {
					fail = fmt.Sprint(f.FailAfter)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s fail-after %s, latency %s, checkstop %v\n", id, fail, f.Latency, f.Checkstop)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.failAfter, "fail-after", 0, "operations that still succeed before every operation fails")
	f.DurationVar(&o.latency, "latency", 0, "latency added to every operation")
	f.BoolVar(&o.checkstop, "checkstop", false, "checkstop the APQN")
	f.BoolVar(&o.clear, "clear", false, "clear all faults")
	return cmd
}
