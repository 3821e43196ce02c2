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
	sessions  int
	engines   int
}

func newFaultCommand(a *app) *cobra.Command {
	var o faultOptions
	cmd := &cobra.Command{
		Use:   "fault APQN... (--fail-after N | --latency D | --engines N | --checkstop | --max-sessions N | --clear)",
		Short: "Inject faults into APQNs",
		Long: `fault injects faults into the listed APQNs, seen by every process:

  --fail-after N   the next N operations succeed, every later one fails as
                   unavailable (as if the adapter went away)
  --latency D      every operation takes D longer (e.g. 5ms, at most 1m):
                   the adapter's service time per request, accurate to
                   some tens of microseconds
  --engines N      the APQN serves at most N requests at once (1..64);
                   with --latency D it completes at most N/D requests
                   per second, further requests queue as on a real
                   adapter; 0 (the default) is no limit. The engines are
                   shared by every process; no process holds a lock
                   while it waits
  --checkstop      the APQN is checkstopped: unavailable, chkstop 1 in sysfs
  --max-sessions N the EP11 APQN holds at most N EP11 sessions (0: the
                   default, 64); sessions logged in stay, further logins
                   fail while the APQN is full
  --clear          remove all of the above except the session limit and the
                   engines (an offline APQN stays offline)

--fail-after, --latency, --engines, --checkstop and --max-sessions may be
combined; --clear stands alone. Figures modelled on real adapters are in
hsmsim(1), ADAPTER TIME.`,
		Example: `  hsmsim fault 01.0033 --fail-after 3
  hsmsim fault 06.0033 --max-sessions 2
  hsmsim fault 01.0033 02.0033 --latency 1ms --engines 4
  hsmsim fault 01.0033 --clear`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := apqnArgs(args)
			if err != nil {
				return err
			}
			fs := cmd.Flags()
			set := fs.Changed("fail-after") || fs.Changed("latency") || fs.Changed("engines") || fs.Changed("checkstop") || fs.Changed("max-sessions")
			switch {
			case o.clear && set:
				return errclass.Newh(errclass.InvalidArgument, "run --clear on its own, then set the new faults",
					"--clear cannot be combined with other faults")
			case !o.clear && !set:
				return errclass.Newh(errclass.InvalidArgument, "add --fail-after N, --latency D, --engines N, --checkstop, --max-sessions N or --clear",
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
					if fs.Changed("engines") {
						steps = append(steps, func() error { return tx.SetEngines(id, o.engines) })
					}
					if fs.Changed("checkstop") {
						steps = append(steps, func() error { return tx.SetCheckstop(id, o.checkstop) })
					}
					if fs.Changed("max-sessions") {
						steps = append(steps, func() error { return tx.SetMaxSessions(id, o.sessions) })
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
				engines := "unlimited"
				if f.Engines > 0 {
					engines = fmt.Sprint(f.Engines)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s fail-after %s, latency %s, engines %s, checkstop %v\n", id, fail, f.Latency, engines, f.Checkstop)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.failAfter, "fail-after", 0, "operations that still succeed before every operation fails")
	f.DurationVar(&o.latency, "latency", 0, "latency added to every operation")
	f.IntVar(&o.engines, "engines", 0, "requests the APQN serves at once (0: no limit)")
	f.BoolVar(&o.checkstop, "checkstop", false, "checkstop the APQN")
	f.BoolVar(&o.clear, "clear", false, "clear all faults")
	f.IntVar(&o.sessions, "max-sessions", 0, "EP11 session limit of the APQN (0: the default)")
	return cmd
}
