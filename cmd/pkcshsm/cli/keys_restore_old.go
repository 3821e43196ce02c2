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
recover them, and the command then exits with 4 even after restoring
others.

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

// verdict is what restore-old does with one key, and why.
type verdict struct {
	restore bool
	forced  bool   // restored although its current secure key is usable
	lost    bool   // no old blob and the current one is not usable
	skip    bool   // nothing to say (--all: a usable key without an old blob)
	why     string // why it is (not) restored
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

// judge decides for one key from its blobs and the APQNs' registers.
func (o *keysRestoreOldOptions) judge(av keyAttrs, queues []hsm.QueueInfo) verdict {
	cur, curErr := hsm.Inspect(av[ck.CKA_IBM_OPAQUE])
	curOK := curErr == nil && usable(cur, queues)
	curDesc := "unreadable"
	if curErr == nil {
		curDesc = cur.MKType.LongName() + " " + cur.Pattern.String()
	}
	if len(av[ck.CKA_IBM_OPAQUE_OLD]) == 0 {
		if !curOK {
			return verdict{lost: true, why: fmt.Sprintf("no old secure key, and the current one (%s) is not usable on the token's APQNs", curDesc)}
		}
		return verdict{skip: o.all, why: "has no CKA_IBM_OPAQUE_OLD (only keys of a finalized master key change keep one); its current secure key is usable"}
	}
	old, oldErr := hsm.Inspect(av[ck.CKA_IBM_OPAQUE_OLD])
	oldOK := oldErr == nil && usable(old, queues)
	oldDesc := "unreadable"
	if oldErr == nil {
		oldDesc = old.Pattern.String()
	}
	switch {
	case !curOK && oldOK:
		return verdict{restore: true, why: fmt.Sprintf("current secure key (%s) is not usable, the old one (%s) is", curDesc, oldDesc)}
	case !curOK:
		return verdict{why: fmt.Sprintf("neither the current secure key (%s) nor the old one (%s) is usable on the token's APQNs", curDesc, oldDesc)}
	case o.force:
		return verdict{restore: true, forced: true, why: fmt.Sprintf("forced: the current secure key (%s) is usable; the old one (%s) will be usable only where that master key is set", curDesc, oldDesc)}
	}
	return verdict{why: fmt.Sprintf("the current secure key (%s) is usable; restoring would only help after a rollback of the master key (use --force to restore anyway)", curDesc)}
}

func keysWord(n int) string {
	if n == 1 {
		return "1 key"
	}
	return fmt.Sprintf("%d keys", n)
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
	queues, err := lib.TokenAPQNs(tokenlib.SlotID(o.slot))
	if err != nil {
		return fmt.Errorf("slot %d: cannot read the registers of the token's APQNs: %w", o.slot, err)
	}
	// Two streaming passes over the selected keys, one page of handles at
	// a time: the first judges and shows every key, the second (after the
	// confirmation) judges each again and restores. A token of a million
	// keys is never in memory at once.
	out := cmd.OutOrStdout()
	matched, withOld, todo, forced, lost := 0, 0, 0, 0, 0
	var refused []error
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
		if r.HasOld {
			withOld++
		}
		v := o.judge(av, queues)
		what := fmt.Sprintf("key %d %s %q: %s", r.Handle, r.KeyType, r.Label, v.why)
		switch {
		case v.restore:
			todo++
			if v.forced {
				forced++
			}
			fmt.Fprintf(out, "  restore       %s\n", what)
		case v.lost:
			lost++
			fmt.Fprintf(out, "  LOST          %s\n", what)
			if !o.all {
				refused = append(refused, errors.New(what))
			}
		case !v.skip:
			fmt.Fprintf(out, "  keep          %s\n", what)
			if !o.all {
				refused = append(refused, errors.New(what))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if lost > 0 {
		fmt.Fprintf(out, "%s cannot be used and %s no old secure key to restore (LOST above): made under a master\n"+
			"key that is no longer set on the token's APQNs (for example while the adapters were rolled back).\n"+
			"To recover %s, have the security officer set that master key again (its pattern is shown\n"+
			"above), or re-create or re-import %s.\n",
			keysWord(lost), map[bool]string{true: "has", false: "have"}[lost == 1],
			map[bool]string{true: "it", false: "them"}[lost == 1], map[bool]string{true: "the key", false: "the keys"}[lost == 1])
	}
	switch {
	case len(unreadable) > 0:
		return fmt.Errorf("nothing was changed: %w", unreadableKeys(unreadable))
	case matched == 0:
		return errclass.Newh(errclass.NotFound, "list the keys with 'pkcshsm keys list'", "no key in slot %d matches the selection", o.slot)
	case o.all && withOld == 0 && todo == 0:
		return errclass.Newh(errclass.FailedPrecondition,
			"only keys of a finalized master key change keep an old secure key; nothing was changed",
			"no key in slot %d has CKA_IBM_OPAQUE_OLD", o.slot)
	case todo == 0 && o.all:
		return errclass.Newh(errclass.FailedPrecondition, "nothing was changed; --force restores keys whose current secure key is usable",
			"no key in slot %d needs its old secure key", o.slot)
	case todo == 0:
		// An explicit selection that restores nothing is an error that
		// names the reason for each key.
		return errclass.Newh(errclass.FailedPrecondition, "nothing was changed; 'pkcshsm keys list --slot N --hsm-mkvp' shows each key's master key",
			"no selected key in slot %d can be restored: %w", o.slot, errors.Join(refused...))
	}
	fmt.Fprintf(out, "Will restore the old secure key of %s; %d other %s not restored.\n", keysWord(todo),
		matched-todo, map[bool]string{true: "key is", false: "keys are"}[matched-todo == 1])
	pr := o.prompter(cmd)
	if forced > 0 {
		fmt.Fprintf(pr.Prompts(), "WARNING: --force restores %s whose current secure key works on this token's APQNs.\n"+
			"After the restore, %s only where the old master key is still set (CURRENT, or OLD on CCA);\n"+
			"the current secure key is kept in no other attribute.\n", keysWord(forced), map[bool]string{true: "it works", false: "they work"}[forced == 1])
	}
	if !o.yes {
		ok, err := pr.Confirm(fmt.Sprintf("Restore the old secure key of %s? [y/N] ", keysWord(todo)))
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
			return fmt.Errorf("key %d: %w (%s restored before)", k, err, keysWord(restored))
		}
		if r := describeKey(lib, h, k, av); r.Class == "PUBLIC_KEY" || !o.judge(av, queues).restore {
			return nil
		}
		if err := lib.RestoreOldBlob(h, k); err != nil {
			return fmt.Errorf("key %d: %w (%s restored before)", k, err, keysWord(restored))
		}
		restored++
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Restored the old secure key of %s in slot %d.\n", keysWord(restored), o.slot)
	if lost > 0 {
		// The restore did what it could, but the token still has keys
		// no adapter can use: that is not success (a master key change
		// of their type would refuse to start).
		return errclass.Newh(errclass.FailedPrecondition,
			fmt.Sprintf("have the security officer set their master key again, or delete them: 'pkcshsm keys delete --slot %d --lost'", o.slot),
			"%s in slot %d remain LOST (listed above; 'pkcshsm keys list --slot %d --lost' lists them again)", keysWord(lost), o.slot, o.slot)
	}
	return nil
}
