package command

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
)

type hostDoubleOptions struct {
	lib string
}

// newHostDoubleCommand is the server of the host-library test doubles
// (hsm/hostdouble): the C libraries libcsulcca.so and libep11.so that
// `make host-doubles` builds start it with a socketpair on standard input
// and output. It is hidden: nobody runs it by hand.
func newHostDoubleCommand(a *app) *cobra.Command {
	var o hostDoubleOptions
	cmd := &cobra.Command{
		Use:    "host-double --lib cca|ep11",
		Short:  "Serve the calls of the CCA or EP11 host-library test double (test only)",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var lib uint8
			switch o.lib {
			case "cca":
				lib = hostdouble.LibCCA
			case "ep11":
				lib = hostdouble.LibEP11
			default:
				return errclass.Newh(errclass.InvalidArgument, "give --lib cca or --lib ep11", "unknown --lib %q", o.lib)
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			srv, err := hostdouble.NewServer(lib, h, a.log, os.Getenv)
			if err != nil {
				return err
			}
			return srv.Serve(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.lib, "lib", "", "the library whose calls to serve: cca or ep11")
	return cmd
}
