package cli

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type keysRestoreOldOptions struct {
	*globalOptions
	slot  uint
	label string
	id    string
	all   bool
	yes   bool
}

func newKeysRestoreOldCommand(g *globalOptions) *cobra.Command {
	o := &keysRestoreOldOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "restore-old --slot N (--label L | --id HEX | --all) [--yes]",
		Short: "Move CKA_IBM_OPAQUE_OLD back into CKA_IBM_OPAQUE (undo a finalized MK change for keys)",
		Long: `After a finalized master key change every key keeps its previous secure key
in CKA_IBM_OPAQUE_OLD. restore-old makes that blob the key's CKA_IBM_OPAQUE
again, e.g. when the master key change must be rolled back on the adapters.
Asks for the USER PIN and, unless --yes, for a confirmation.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().StringVar(&o.label, "label", "", "restore the keys with this CKA_LABEL")
	c.Flags().StringVar(&o.id, "id", "", "restore the keys with this CKA_ID (hex)")
	c.Flags().BoolVar(&o.all, "all", false, "restore every key that has CKA_IBM_OPAQUE_OLD")
	c.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	c.MarkFlagRequired("slot")
	return c
}

func (o *keysRestoreOldOptions) run(cmd *cobra.Command, _ []string) error {
	n := 0
	for _, set := range []bool{o.label != "", o.id != "", o.all} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errclass.Newh(errclass.InvalidArgument, "select the keys with exactly one of --label, --id or --all", "no single key selection given")
	}
	var sel []tokenlib.Attribute
	switch {
	case o.label != "":
		sel = []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, o.label)}
	case o.id != "":
		id, err := hex.DecodeString(o.id)
		if err != nil || len(id) == 0 {
			return errclass.Newh(errclass.InvalidArgument, "give the id as hex digits, e.g. --id 0a1b", "invalid --id %q", o.id)
		}
		sel = []tokenlib.Attribute{tokenlib.Bytes(ck.CKA_ID, id)}
	}
	lib, h, err := o.openUser(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	keys, err := findKeys(lib, h, sel...)
	if err != nil {
		return err
	}
	var todo []keyRecord
	var without []string
	for _, k := range keys {
		r := describeKey(lib, h, k)
		if r.Class == "PUBLIC_KEY" {
			continue
		}
		if r.HasOld {
			todo = append(todo, r)
		} else {
			without = append(without, fmt.Sprintf("%d (%q)", r.Handle, r.Label))
		}
	}
	switch {
	case len(keys) == 0:
		return errclass.Newh(errclass.NotFound, "list the keys with 'pkcshsm keys list'", "no key in slot %d matches the selection", o.slot)
	case !o.all && len(without) > 0:
		return errclass.Newh(errclass.FailedPrecondition,
			"only keys of a finalized master key change keep an old secure key; nothing was changed",
			"key %s has no CKA_IBM_OPAQUE_OLD", without[0])
	case len(todo) == 0:
		return errclass.Newh(errclass.FailedPrecondition,
			"only keys of a finalized master key change keep an old secure key; nothing was changed",
			"no key in slot %d has CKA_IBM_OPAQUE_OLD", o.slot)
	}
	out := cmd.OutOrStdout()
	for _, r := range todo {
		fmt.Fprintf(out, "  key %d %s %q\n", r.Handle, r.KeyType, r.Label)
	}
	if !o.yes {
		ok, err := o.prompter(cmd).Confirm(fmt.Sprintf("Restore the old secure key of these %d keys? [y/N] ", len(todo)))
		if err != nil {
			return err
		}
		if !ok {
			return errclass.New(errclass.Aborted, "aborted; no key was changed")
		}
	}
	for i, r := range todo {
		if err := lib.RestoreOldBlob(h, tokenlib.ObjectHandle(r.Handle)); err != nil {
			return fmt.Errorf("key %d: %w (%d of %d keys restored before)", r.Handle, err, i, len(todo))
		}
	}
	fmt.Fprintf(out, "Restored the old secure key of %d keys in slot %d.\n", len(todo), o.slot)
	return nil
}
