package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type keysDeleteOptions struct {
	*globalOptions
	slot   uint
	handle string
	label  string
	lost   bool
	yes    bool
}

func newKeysDeleteCommand(g *globalOptions) *cobra.Command {
	o := &keysDeleteOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "delete --slot N (--handle H | --label L | --lost) [--yes]",
		Short: "Destroy key objects of a token (asks for the USER PIN and a confirmation)",
		Long: `Destroy the selected key objects of a token (C_DestroyObject): one key by its
handle (as 'pkcshsm keys list' shows it), every key with a label, or, with
--lost, every LOST key: a secure key under a master key that no register
of the token's APQNs holds and with no other usable blob ('pkcshsm keys
list --lost' shows them and why). A master key change refuses to start
while a token has LOST keys of its types; deleting them is the way out when
their master key will not be set again.

The keys to be destroyed are listed first; the command then asks for a
confirmation (unless --yes). A destroyed key cannot be brought back except
from a backup of the token ('pkcshsm token backup'). Asks for the USER PIN.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().StringVar(&o.handle, "handle", "", "destroy the key with this object handle")
	c.Flags().StringVar(&o.label, "label", "", "destroy the keys with this CKA_LABEL")
	c.Flags().BoolVar(&o.lost, "lost", false, "destroy every LOST key (see 'keys list --lost')")
	c.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	c.MarkFlagRequired("slot")
	return c
}

func (o *keysDeleteOptions) run(cmd *cobra.Command, _ []string) error {
	n := 0
	for _, set := range []bool{o.handle != "", o.label != "", o.lost} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errclass.Newh(errclass.InvalidArgument, "select the keys with exactly one of --handle, --label or --lost", "no single key selection given")
	}
	var want tokenlib.ObjectHandle
	if o.handle != "" {
		v, err := strconv.ParseUint(o.handle, 10, 32)
		if err != nil || v == 0 {
			return errclass.Newh(errclass.InvalidArgument, "give the handle as 'pkcshsm keys list' shows it, e.g. --handle 17", "invalid --handle %q", o.handle)
		}
		want = tokenlib.ObjectHandle(v)
	}
	var sel []tokenlib.Attribute
	if o.label != "" {
		sel = []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, o.label)}
	}
	lib, h, err := o.openUser(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	var queues []hsm.QueueInfo
	if o.lost {
		if queues, err = lib.TokenAPQNs(tokenlib.SlotID(o.slot)); err != nil {
			return fmt.Errorf("slot %d: cannot read the registers of the token's APQNs: %w", o.slot, err)
		}
	}
	out := cmd.OutOrStdout()
	var doomed []tokenlib.ObjectHandle
	var unreadable []string
	err = eachKey(lib, h, sel, func(k tokenlib.ObjectHandle, av keyAttrs, err error) error {
		if want != 0 && k != want {
			return nil
		}
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("key %d: %v", k, err))
			return nil
		}
		why := ""
		if o.lost {
			if why = lostReason(av, queues); why == "" {
				return nil
			}
			why = ": LOST, " + why
		}
		r := describeKey(lib, h, k, av)
		fmt.Fprintf(out, "  delete  key %d %s %s %q%s\n", r.Handle, r.Class, r.KeyType, r.Label, why)
		doomed = append(doomed, k)
		return nil
	})
	if err != nil {
		return err
	}
	if err := unreadableKeys(unreadable); err != nil {
		return fmt.Errorf("nothing was deleted: %w", err)
	}
	if len(doomed) == 0 {
		if o.lost {
			fmt.Fprintf(out, "Slot %d has no LOST key; nothing to delete.\n", o.slot)
			return nil
		}
		return errclass.Newh(errclass.NotFound, "list the keys with 'pkcshsm keys list'", "no key in slot %d matches the selection", o.slot)
	}
	if !o.yes {
		ok, err := o.prompter(cmd).Confirm(fmt.Sprintf("Destroy %s in slot %d? This cannot be undone. [y/N] ", keysWord(len(doomed)), o.slot))
		if err != nil {
			return err
		}
		if !ok {
			return errclass.New(errclass.Aborted, "aborted; no key was deleted")
		}
	}
	for i, k := range doomed {
		if err := lib.DestroyObject(h, k); err != nil && tokenlib.RV(err) != ck.CKR_OBJECT_HANDLE_INVALID {
			return fmt.Errorf("key %d: %w (%s deleted before)", k, err, keysWord(i))
		}
	}
	fmt.Fprintf(out, "Deleted %s in slot %d.\n", keysWord(len(doomed)), o.slot)
	return nil
}
