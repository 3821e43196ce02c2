package cli

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
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
	force bool
}

func newKeysRestoreOldCommand(g *globalOptions) *cobra.Command {
	o := &keysRestoreOldOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "restore-old --slot N (--label L | --id HEX | --all) [--force] [--yes]",
		Short: "Move CKA_IBM_OPAQUE_OLD back into CKA_IBM_OPAQUE where the current secure key is not usable",
		Long: `After a finalized master key change every key keeps its previous secure key
in CKA_IBM_OPAQUE_OLD. If the security officer later rolls the adapters back
to the old master key outside a master key change, the current secure keys
no longer work; restore-old makes the old blob the key's CKA_IBM_OPAQUE again.

A key is restored only where that helps: its current secure key is not usable
on the token's APQNs (its master key is neither CURRENT nor, on CCA, OLD
there) and its old one is. --force restores keys whose current secure key is
usable too, after a warning. --all lists what will and will not be restored,
and why, before asking. Keys that have no old blob and are not usable (made
under a master key that is no longer set) are reported with the way to
recover them.

Asks for the USER PIN and, unless --yes, for a confirmation.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().StringVar(&o.label, "label", "", "restore the keys with this CKA_LABEL")
	c.Flags().StringVar(&o.id, "id", "", "restore the keys with this CKA_ID (hex)")
	c.Flags().BoolVar(&o.all, "all", false, "consider every key that has CKA_IBM_OPAQUE_OLD")
	c.Flags().BoolVar(&o.force, "force", false, "also restore keys whose current secure key is usable (after a warning)")
	c.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	c.MarkFlagRequired("slot")
	return c
}

// restoreItem is one key and what restore-old does with it.
type restoreItem struct {
	r       keyRecord
	restore bool
	forced  bool   // restored although its current secure key is usable
	why     string // why it is (not) restored
}

func (it restoreItem) String() string {
	return fmt.Sprintf("key %d %s %q: %s", it.r.Handle, it.r.KeyType, it.r.Label, it.why)
}

// usable reports whether a blob's master key is set on every one of the
// token's APQNs: as CURRENT, or (CCA) as OLD, which CCA adapters still
// accept. An EP11 blob needs the CURRENT wrapping key.
func usable(info hsm.BlobInfo, queues []hsm.QueueInfo) bool {
	if len(queues) == 0 {
		return false
	}
	for _, q := range queues {
		regs := q.MK[info.MKType]
		cur := regs.Current.State == apqn.StateValid && regs.Current.Pattern == info.Pattern
		old := info.MKType != mkvp.EP11WK && regs.Old.State == apqn.StateValid && regs.Old.Pattern == info.Pattern
		if !cur && !old {
			return false
		}
	}
	return true
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
	if len(keys) == 0 {
		return errclass.Newh(errclass.NotFound, "list the keys with 'pkcshsm keys list'", "no key in slot %d matches the selection", o.slot)
	}
	queues, err := lib.TokenAPQNs(tokenlib.SlotID(o.slot))
	if err != nil {
		return fmt.Errorf("slot %d: cannot read the registers of the token's APQNs: %w", o.slot, err)
	}
	var items []restoreItem
	var lost []restoreItem // no old blob, current not usable
	withOld := 0
	for _, k := range keys {
		r := describeKey(lib, h, k)
		if r.Class == "PUBLIC_KEY" {
			continue
		}
		it := restoreItem{r: r}
		cur, curErr := lib.KeyBlobInfo(h, k)
		curOK := curErr == nil && usable(cur, queues)
		oldBlob := attr(lib, h, k, ck.CKA_IBM_OPAQUE_OLD)
		if len(oldBlob) == 0 {
			if !curOK {
				it.why = fmt.Sprintf("no old secure key, and the current one (%s %s) is not usable on the token's APQNs", cur.MKType.LongName(), cur.Pattern)
				lost = append(lost, it)
			} else if !o.all {
				it.why = "has no CKA_IBM_OPAQUE_OLD (only keys of a finalized master key change keep one); its current secure key is usable"
				items = append(items, it)
			}
			continue
		}
		withOld++
		old, oldErr := hsm.Inspect(oldBlob)
		oldOK := oldErr == nil && usable(old, queues)
		switch {
		case !curOK && oldOK:
			it.restore = true
			it.why = fmt.Sprintf("current secure key (%s %s) is not usable, the old one (%s) is", cur.MKType.LongName(), cur.Pattern, old.Pattern)
		case !curOK:
			it.why = fmt.Sprintf("neither the current secure key (%s) nor the old one (%s) is usable on the token's APQNs", cur.Pattern, old.Pattern)
		case o.force:
			it.restore, it.forced = true, true
			it.why = fmt.Sprintf("forced: the current secure key (%s %s) is usable; the old one (%s) will be usable only where that master key is set", cur.MKType.LongName(), cur.Pattern, old.Pattern)
		default:
			it.why = fmt.Sprintf("the current secure key (%s %s) is usable; restoring would only help after a rollback of the master key (use --force to restore anyway)", cur.MKType.LongName(), cur.Pattern)
		}
		items = append(items, it)
	}
	var todo, skip []restoreItem
	for _, it := range items {
		if it.restore {
			todo = append(todo, it)
		} else {
			skip = append(skip, it)
		}
	}
	out := cmd.OutOrStdout()
	keysWord := func(n int) string {
		if n == 1 {
			return "1 key"
		}
		return fmt.Sprintf("%d keys", n)
	}
	if len(lost) > 0 {
		fmt.Fprintf(out, "%s cannot be used and %s no old secure key to restore:\n", keysWord(len(lost)), map[bool]string{true: "has", false: "have"}[len(lost) == 1])
		for _, it := range lost {
			fmt.Fprintf(out, "  %s\n", it)
		}
		fmt.Fprintln(out, "  They were made under a master key that is no longer set on the token's APQNs (for example")
		fmt.Fprintln(out, "  while the adapters were rolled back). To recover them, have the security officer set that")
		fmt.Fprintln(out, "  master key again (its pattern is shown above), or re-create or re-import the keys.")
	}
	if !o.all && len(todo) == 0 {
		// An explicit selection that restores nothing is an error, and
		// names why for each key.
		reasons := make([]error, 0, len(skip)+len(lost))
		for _, it := range append(skip, lost...) {
			reasons = append(reasons, errors.New(it.String()))
		}
		return errclass.Newh(errclass.FailedPrecondition, "nothing was changed; 'pkcshsm keys list --slot N --hsm-mkvp' shows each key's master key",
			"no selected key in slot %d can be restored: %w", o.slot, errors.Join(reasons...))
	}
	if o.all {
		if withOld == 0 && len(todo) == 0 {
			return errclass.Newh(errclass.FailedPrecondition,
				"only keys of a finalized master key change keep an old secure key; nothing was changed",
				"no key in slot %d has CKA_IBM_OPAQUE_OLD", o.slot)
		}
		if len(todo) > 0 {
			fmt.Fprintf(out, "Will restore the old secure key of %s:\n", keysWord(len(todo)))
			for _, it := range todo {
				fmt.Fprintf(out, "  %s\n", it)
			}
		}
		if len(skip) > 0 {
			fmt.Fprintf(out, "Will not restore %s:\n", keysWord(len(skip)))
			for _, it := range skip {
				fmt.Fprintf(out, "  %s\n", it)
			}
		}
		if len(todo) == 0 {
			return errclass.Newh(errclass.FailedPrecondition, "nothing was changed; --force restores keys whose current secure key is usable",
				"no key in slot %d needs its old secure key", o.slot)
		}
	} else {
		for _, it := range todo {
			fmt.Fprintf(out, "  %s\n", it)
		}
	}
	forced := 0
	for _, it := range todo {
		if it.forced {
			forced++
		}
	}
	pr := o.prompter(cmd)
	if forced > 0 {
		fmt.Fprintf(pr.Prompts(), "WARNING: --force restores %s whose current secure key works on this token's APQNs.\n"+
			"After the restore, %s only where the old master key is still set (CURRENT, or OLD on CCA);\n"+
			"the current secure key is kept in no other attribute.\n", keysWord(forced), map[bool]string{true: "it works", false: "they work"}[forced == 1])
	}
	if !o.yes {
		ok, err := pr.Confirm(fmt.Sprintf("Restore the old secure key of %s? [y/N] ", keysWord(len(todo))))
		if err != nil {
			return err
		}
		if !ok {
			return errclass.New(errclass.Aborted, "aborted; no key was changed")
		}
	}
	for i, it := range todo {
		if err := lib.RestoreOldBlob(h, tokenlib.ObjectHandle(it.r.Handle)); err != nil {
			return fmt.Errorf("key %d: %w (%d of %d keys restored before)", it.r.Handle, err, i, len(todo))
		}
	}
	fmt.Fprintf(out, "Restored the old secure key of %s in slot %d.\n", keysWord(len(todo)), o.slot)
	return nil
}
