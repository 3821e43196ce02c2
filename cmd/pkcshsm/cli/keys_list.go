package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type keysListOptions struct {
	*globalOptions
	slot    uint
	hsmMKVP bool
	json    bool
	lost    bool
}

func newKeysListCommand(g *globalOptions) *cobra.Command {
	o := &keysListOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "list --slot N [--hsm-mkvp] [--lost] [--json]",
		Short: "List the keys of a token (asks for the USER PIN)",
		Long: `List the key objects the USER sees. With --hsm-mkvp, show for every secure
key the master key type and verification pattern its CKA_IBM_OPAQUE blob is
enciphered under, and which register (CURRENT, OLD, NEW) of the token's APQNs
holds that master key.

With --json, every secure key also carries "blobs": the master key type and
verification pattern of each of its blobs, as the blob headers say (no HSM
call): "current" (CKA_IBM_OPAQUE), "old" (CKA_IBM_OPAQUE_OLD, the backup a
finalize keeps) and "reenc" (CKA_IBM_OPAQUE_REENC, present during a change).

With --lost, list only the LOST keys: secure keys under a master key that no
register (CURRENT, or OLD on CCA) of the token's APQNs holds, with no other
blob that is usable there (nothing for restore-old or finalize to bring
back). They cannot be used, and a master key change of their type refuses
to start while they exist; 'pkcshsm keys delete --lost' removes them. The
command exits with 4 when there is at least one.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().BoolVar(&o.hsmMKVP, "hsm-mkvp", false, "show the master key pattern of each secure key")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	c.Flags().BoolVar(&o.lost, "lost", false, "list only the LOST keys (usable under no master key of the token's APQNs); exit 4 if there are any")
	c.MarkFlagRequired("slot")
	return c
}

func (o *keysListOptions) run(cmd *cobra.Command, _ []string) error {
	lib, h, err := o.openUser(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	var queues []hsm.QueueInfo
	if o.hsmMKVP || o.lost {
		if queues, err = lib.TokenAPQNs(tokenlib.SlotID(o.slot)); err != nil {
			return err
		}
	}
	out := cmd.OutOrStdout()
	// The keys are written out page by page as they are read, so the
	// command's memory does not grow with the token: JSON as one array
	// (the same bytes json.Encoder with a two-blank indent writes), the
	// table aligned within each page of listPage keys.
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "HANDLE\tCLASS\tTYPE\tBITS\tLABEL\tID\tFLAGS"
	if o.hsmMKVP {
		head += "\tMK TYPE\tMKVP\tMATCH"
	}
	if !o.json {
		fmt.Fprintln(w, head)
	}
	n := 0
	var unreadable []string
	err = eachKey(lib, h, nil, func(k tokenlib.ObjectHandle, av keyAttrs, err error) error {
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("key %d: %v", k, err))
			return nil
		}
		if o.lost && lostReason(av, queues) == "" {
			return nil
		}
		r := describeKey(lib, h, k, av)
		if o.json {
			r.Blobs = inspectBlobs(av)
		}
		if o.hsmMKVP && r.Class != "PUBLIC_KEY" {
			info, err := lib.KeyBlobInfo(h, k)
			if err != nil {
				return fmt.Errorf("key %d: %w", k, err)
			}
			r.MKType, r.MKVP, r.Match = info.MKType.LongName(), info.Pattern.String(), matchRegisters(info, queues)
			if r.Bits == 0 {
				r.Bits = info.Bits
			}
		}
		n++
		if o.json {
			b, err := json.MarshalIndent(r, "  ", "  ")
			if err != nil {
				return err
			}
			sep := ",\n  "
			if n == 1 {
				sep = "[\n  "
			}
			_, err = fmt.Fprintf(out, "%s%s", sep, b)
			return err
		}
		line := fmt.Sprintf("%d\t%s\t%s\t%d\t%s\t%s\t%s", r.Handle, r.Class, r.KeyType, r.Bits, orDash(r.Label), orDash(r.ID), flags(r))
		if o.hsmMKVP {
			line += fmt.Sprintf("\t%s\t%s\t%s", orDash(r.MKType), orDash(r.MKVP), orDash(r.Match))
		}
		fmt.Fprintln(w, line)
		if n%listPage == 0 {
			return w.Flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	if o.json {
		end := "\n]\n"
		if n == 0 {
			end = "[]\n"
		}
		if _, err := fmt.Fprint(out, end); err != nil {
			return err
		}
	} else {
		if err := w.Flush(); err != nil {
			return err
		}
		if o.lost {
			fmt.Fprintf(out, "%s LOST\n", keysWord(n))
		} else {
			fmt.Fprintf(out, "%s\n", keysWord(n))
		}
	}
	if err := unreadableKeys(unreadable); err != nil {
		return err
	}
	if o.lost && n > 0 {
		return errclass.Newh(errclass.FailedPrecondition,
			fmt.Sprintf("have the security officer set their master key again, or delete them: 'pkcshsm keys delete --slot %d --lost'", o.slot),
			"slot %d has %s LOST: usable under no master key of the token's APQNs", o.slot, keysWord(n))
	}
	return nil
}

// unreadableKeys is the error for keys that could not be read (a damaged
// token database): every other key was listed or handled.
func unreadableKeys(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	shown := errs
	if len(shown) > 10 {
		shown = shown[:10]
	}
	return errclass.Newh(errclass.DataLoss, "restore the token directory from a backup, or destroy the damaged objects",
		"%d key objects could not be read: %s", len(errs), strings.Join(shown, "; "))
}

// listPage is how many handles keys list and restore-old take from one
// FindObjects call and hold at a time.
var listPage = 512

// keyAttrs holds the attributes describeKey and inspectBlobs read of one
// key, read in one C_GetAttributeValue; an absent one is nil.
type keyAttrs map[ck.Attribute][]byte

// describedAttrs are the attributes in keyAttrs.
var describedAttrs = []ck.Attribute{ck.CKA_CLASS, ck.CKA_KEY_TYPE, ck.CKA_LABEL, ck.CKA_ID, ck.CKA_CHECK_VALUE,
	ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE, ck.CKA_LOCAL, ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD,
	ck.CKA_VALUE_LEN, ck.CKA_MODULUS_BITS, ck.CKA_MODULUS, ck.CKA_EC_PARAMS}

// readKeyAttrs reads describedAttrs of object k: lengths first, then the
// values. Attributes the object does not have (or keeps secret) read as
// nil; any other error (a damaged object, a vanished handle) is returned.
func readKeyAttrs(lib *tokenlib.Library, h tokenlib.SessionHandle, k tokenlib.ObjectHandle) (keyAttrs, error) {
	req := make([]tokenlib.AttrRequest, len(describedAttrs))
	for i, a := range describedAttrs {
		req[i].Type = a
	}
	expected := func(err error) bool {
		switch tokenlib.RV(err) {
		case ck.CKR_OK, ck.CKR_ATTRIBUTE_TYPE_INVALID, ck.CKR_ATTRIBUTE_SENSITIVE:
			return true
		}
		return false
	}
	if err := lib.GetAttributeValue(h, k, req); !expected(err) {
		return nil, err
	}
	for i := range req {
		if req[i].Len >= 0 {
			req[i].Buf = make([]byte, req[i].Len)
		}
	}
	if err := lib.GetAttributeValue(h, k, req); !expected(err) {
		return nil, err
	}
	av := make(keyAttrs, len(req))
	for _, r := range req {
		if r.Len >= 0 {
			av[r.Type] = r.Buf[:r.Len]
		}
	}
	return av, nil
}

// eachKey calls fn for every key object the session sees that matches
// extra, in handle order, reading one page of handles at a time. A key
// that cannot be read is passed with its error; fn decides.
func eachKey(lib *tokenlib.Library, h tokenlib.SessionHandle, extra []tokenlib.Attribute, fn func(tokenlib.ObjectHandle, keyAttrs, error) error) error {
	if err := lib.FindObjectsInit(h, extra); err != nil {
		return err
	}
	defer lib.FindObjectsFinal(h)
	for {
		hs, err := lib.FindObjects(h, listPage)
		if err != nil {
			return err
		}
		if len(hs) == 0 {
			return nil
		}
		for _, k := range hs {
			av, err := readKeyAttrs(lib, h, k)
			if tokenlib.RV(err) == ck.CKR_OBJECT_HANDLE_INVALID {
				continue // destroyed since the search found it
			}
			if err == nil {
				cls, _ := tokenlib.DecodeUlong(av[ck.CKA_CLASS])
				if !slices.Contains(keyClasses, ck.ObjectClass(cls)) {
					continue
				}
			}
			if err := fn(k, av, err); err != nil {
				return err
			}
		}
	}
}

// keyBlobs describes the blob attributes of one key; an absent attribute
// is omitted.
type keyBlobs struct {
	Current *blobPattern `json:"current,omitempty"`
	Old     *blobPattern `json:"old,omitempty"`
	Reenc   *blobPattern `json:"reenc,omitempty"`
}

// blobPattern is what a blob's header says, or why it could not be read.
type blobPattern struct {
	MKType string `json:"mk_type,omitempty"`
	MKVP   string `json:"mkvp,omitempty"`
	Error  string `json:"error,omitempty"`
}

// inspectBlobs describes the three blob attributes of a key; nil for a key
// without a secure key.
func inspectBlobs(av keyAttrs) *keyBlobs {
	one := func(a ck.Attribute) *blobPattern {
		b := av[a]
		if len(b) == 0 {
			return nil
		}
		info, err := hsm.Inspect(b)
		if err != nil {
			return &blobPattern{Error: err.Error()}
		}
		return &blobPattern{MKType: info.MKType.LongName(), MKVP: info.Pattern.String()}
	}
	kb := &keyBlobs{Current: one(ck.CKA_IBM_OPAQUE), Old: one(ck.CKA_IBM_OPAQUE_OLD), Reenc: one(ck.CKA_IBM_OPAQUE_REENC)}
	if *kb == (keyBlobs{}) {
		return nil
	}
	return kb
}

func flags(r keyRecord) string {
	var fs []string
	for _, f := range []struct {
		on   bool
		name string
	}{{r.Sensitive, "sensitive"}, {r.Extractable, "extractable"}, {r.Local, "local"}, {r.HasReenc, "reenc"}, {r.HasOld, "old"}} {
		if f.on {
			fs = append(fs, f.name)
		}
	}
	return orDash(strings.Join(fs, ","))
}

// matchRegisters says which register of the APQNs holds the key's master
// key: "CURRENT" when it is the same on every APQN, else one entry per
// APQN ("01.0033=CURRENT,02.0033=OLD"); "none" where no register matches.
func matchRegisters(info hsm.BlobInfo, queues []hsm.QueueInfo) string {
	var per []string
	same := true
	for _, q := range queues {
		regs := q.MK[info.MKType]
		m := "none"
		switch info.Pattern {
		case regs.Current.Pattern:
			m = "CURRENT"
		case regs.Old.Pattern:
			m = "OLD"
		case regs.New.Pattern:
			m = "NEW"
		}
		if len(per) > 0 && !strings.HasSuffix(per[0], "="+m) {
			same = false
		}
		per = append(per, q.ID.String()+"="+m)
	}
	if len(per) == 0 {
		return "none"
	}
	if same {
		_, m, _ := strings.Cut(per[0], "=")
		return m
	}
	return strings.Join(per, ",")
}
