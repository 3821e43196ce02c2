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
	// Two streaming passes over the selected keys, one page of handles
	// at a time: the first shows them and counts, the second (after the
	// confirmation) restores them. A token of a million keys is never in
	// memory at once.
	out := cmd.OutOrStdout()
	matched, todo := 0, 0
	var without string
	var unreadable []string
	err = eachKey(lib, h, sel, func(k tokenlib.ObjectHandle, av keyAttrs, err error) error {
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("key %d: %v", k, err))
			return nil
		}
		r := describeKey(lib, h, k, av)
		if r.Class == "PUBLIC_KEY" {
			return nil
		}
		matched++
		if !r.HasOld {
			if without == "" {
				without = fmt.Sprintf("%d (%q)", r.Handle, r.Label)
			}
			return nil
		}
		todo++
		if o.all {
			fmt.Fprintf(out, "  key %d %s %q\n", r.Handle, r.KeyType, r.Label)
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case len(unreadable) > 0:
		return fmt.Errorf("nothing was changed: %w", unreadableKeys(unreadable))
	case matched == 0:
		return errclass.Newh(errclass.NotFound, "list the keys with 'pkcshsm keys list'", "no key in slot %d matches the selection", o.slot)
	case !o.all && without != "":
		return errclass.Newh(errclass.FailedPrecondition,
			"only keys of a finalized master key change keep an old secure key; nothing was changed",
			"key %s has no CKA_IBM_OPAQUE_OLD", without)
	case todo == 0:
		return errclass.Newh(errclass.FailedPrecondition,
			"only keys of a finalized master key change keep an old secure key; nothing was changed",
			"no key in slot %d has CKA_IBM_OPAQUE_OLD", o.slot)
	}
	if !o.all {
		// Shown only now that every selected key passed the check (a
		// label or id selects few keys; this is a second indexed search).
		err = eachKey(lib, h, sel, func(k tokenlib.ObjectHandle, av keyAttrs, err error) error {
			if err != nil {
				return fmt.Errorf("key %d: %w", k, err)
			}
			if r := describeKey(lib, h, k, av); r.Class != "PUBLIC_KEY" && r.HasOld {
				fmt.Fprintf(out, "  key %d %s %q\n", r.Handle, r.KeyType, r.Label)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if !o.yes {
		ok, err := o.prompter(cmd).Confirm(fmt.Sprintf("Restore the old secure key of these %d keys? [y/N] ", todo))
		if err != nil {
			return err
		}
		if !ok {
			return errclass.New(errclass.Aborted, "aborted; no key was changed")
		}
	}
	restored := 0
	err = eachKey(lib, h, sel, func(k tokenlib.ObjectHandle, av keyAttrs, err error) error {
		if err != nil {
			return fmt.Errorf("key %d: %w (%d of %d keys restored before)", k, err, restored, todo)
		}
		if r := describeKey(lib, h, k, av); r.Class == "PUBLIC_KEY" || !r.HasOld {
			return nil
		}
		if err := lib.RestoreOldBlob(h, k); err != nil {
			return fmt.Errorf("key %d: %w (%d of %d keys restored before)", k, err, restored, todo)
		}
		restored++
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Restored the old secure key of %d keys in slot %d.\n", restored, o.slot)
	return nil
}
