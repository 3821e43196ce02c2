package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

type tokenRestoreOptions struct {
	*globalOptions
	slot  uint
	force bool
	yes   bool
}

func newTokenRestoreCommand(g *globalOptions) *cobra.Command {
	o := &tokenRestoreOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "restore --slot N FILE [--force] [--yes]",
		Short: "Replace a token's database with a backup written by 'pkcshsm token backup'",
		Long: `Replace the token's database with FILE, a backup written by 'pkcshsm token
backup'. Every change made to the token since the backup is lost: keys
created since are gone, keys deleted since come back, and each key has the
blobs it had then. Stop the applications that use the token first (the
daemon's status lists them): a process that holds the database open is
named and the restore refused.

FILE is checked first (SQLite's integrity check, schema version, an
initialized token record); a damaged backup changes nothing. The restore is
refused while a master key change operation is active on this host: the
backup may lack the blobs under the new master key that the operation
recorded as made. --force restores anyway and prints what that means for
each active operation. Asks for a confirmation unless --yes.`,
		Args: exactArgs(1, "name the backup file, e.g. pkcshsm token restore --slot 2 /root/slot2.db"),
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().BoolVar(&o.force, "force", false, "restore even while a master key change operation is active (its consequences are printed)")
	c.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	c.MarkFlagRequired("slot")
	return c
}

func (o *tokenRestoreOptions) run(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	backup := args[0]
	if err := store.CheckFile(ctx, backup); err != nil {
		return fmt.Errorf("nothing was changed: %w", err)
	}
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	db, err := lib.StorePath(tokenlib.SlotID(o.slot))
	lib.Close() // the store must not be open here while it is replaced
	if err != nil {
		return err
	}
	// A process holding the old database open would go on writing to it
	// (and its WAL) after the restore: refused, whatever --force says.
	if holders := dbHolders(db); len(holders) > 0 {
		return errclass.Newh(errclass.FailedPrecondition, "stop these processes first (the daemon's status lists the applications using the token), then run the command again",
			"refusing to restore slot %d: the token database is open in %s", o.slot, strings.Join(holders, ", "))
	}
	active, err := activeOperations(ctx)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	pr := o.prompter(cmd)
	if len(active) > 0 {
		if !o.force {
			return errclass.Newh(errclass.FailedPrecondition,
				"complete or cancel the operation first (pkcshsm_mk_change list says how), or restore with --force after reading what it means",
				"refusing to restore slot %d while %s active:\n  %s", o.slot,
				map[bool]string{true: "a master key change operation is", false: "master key change operations are"}[len(active) == 1],
				strings.Join(active, "\n  "))
		}
		fmt.Fprintf(pr.Prompts(), "WARNING: --force restores slot %d while these master key change operations are active:\n  %s\n"+
			"The restored database holds the keys as they were when the backup was taken. Keys re-enciphered\n"+
			"since have no blob under the new master key any more, and keys finalized since are back under the\n"+
			"old one: do NOT have the new master key set on the token's APQNs until the keys are re-enciphered\n"+
			"again ('pkcshsm_mk_change verify' tells whether setting it loses any key; cancel the operation and\n"+
			"run reencipher again). Keys created since the backup are gone.\n", o.slot, strings.Join(active, "\n  "))
	}
	fmt.Fprintf(out, "Slot %d: %s will be replaced by %s; every change since the backup is lost.\n", o.slot, db, backup)
	if !o.yes {
		ok, err := pr.Confirm(fmt.Sprintf("Restore slot %d from %s? [y/N] ", o.slot, backup))
		if err != nil {
			return err
		}
		if !ok {
			return errclass.New(errclass.Aborted, "aborted; the token was not changed")
		}
	}
	if err := store.Restore(ctx, filepath.Dir(db), backup); err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	fmt.Fprintf(out, "Token in slot %d restored from %s.\n", o.slot, backup)
	return nil
}

// activeOperations describes every master key change operation of this
// host ("ID STATE" or "NAME: unreadable ..."); none when the operation
// directory does not exist.
func activeOperations(ctx context.Context) ([]string, error) {
	d, err := state.Open(paths.FromEnv().MKChangeDir(), state.Options{ReadOnly: true})
	if errclass.Of(err) == errclass.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ops, broken, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, op := range ops {
		out = append(out, fmt.Sprintf("%s %s", op.ID, op.State))
	}
	for _, b := range broken {
		if !b.Recovered {
			out = append(out, fmt.Sprintf("%s: unreadable operation file (%v)", b.Name, b.Err))
		}
	}
	return out, nil
}
