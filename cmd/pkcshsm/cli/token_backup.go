package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib"
)

type tokenBackupOptions struct {
	*globalOptions
	slot uint
}

func newTokenBackupCommand(g *globalOptions) *cobra.Command {
	o := &tokenBackupOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "backup --slot N FILE",
		Short: "Write a consistent copy of a token's database to FILE, while it is in use",
		Long: `Write a consistent copy of the token's database (its objects, the sealed
secure keys and the PIN wraps) to FILE, which must not exist. Applications
go on using the token meanwhile: the copy is SQLite's VACUUM INTO of one
snapshot, so it holds every transaction committed before it started and none
after. FILE is written beside its final name, checked, fsynced and renamed,
and gets mode 0600: it opens with the token's PINs, like the token itself.
A database that fails its integrity check is refused (it would not restore
anything better). 'pkcshsm token restore' puts a backup back.

Take one before a master key change: a token database damaged during the
change can then be restored instead of the change being stuck.`,
		Args: exactArgs(1, "name the backup file, e.g. pkcshsm token backup --slot 2 /root/slot2.db"),
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.MarkFlagRequired("slot")
	return c
}

func (o *tokenBackupOptions) run(cmd *cobra.Command, args []string) error {
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	if err := lib.BackupStore(cmd.Context(), tokenlib.SlotID(o.slot), args[0]); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Token in slot %d backed up to %s.\n", o.slot, args[0])
	return nil
}

// exactArgs accepts exactly n positional arguments; otherwise the error
// says what to give.
func exactArgs(n int, hint string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return errclass.Newh(errclass.InvalidArgument, hint, "'%s' takes %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}
