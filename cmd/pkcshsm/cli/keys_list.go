package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type keysListOptions struct {
	*globalOptions
	slot    uint
	hsmMKVP bool
	json    bool
}

func newKeysListCommand(g *globalOptions) *cobra.Command {
	o := &keysListOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "list --slot N [--hsm-mkvp] [--json]",
		Short: "List the keys of a token (asks for the USER PIN)",
		Long: `List the key objects the USER sees. With --hsm-mkvp, show for every secure
key the master key type and verification pattern its CKA_IBM_OPAQUE blob is
enciphered under, and which register (CURRENT, OLD, NEW) of the token's APQNs
holds that master key.

With --json, every secure key also carries "blobs": the master key type and
verification pattern of each of its blobs, as the blob headers say (no HSM
call): "current" (CKA_IBM_OPAQUE), "old" (CKA_IBM_OPAQUE_OLD, the backup a
finalize keeps) and "reenc" (CKA_IBM_OPAQUE_REENC, present during a change).`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().BoolVar(&o.hsmMKVP, "hsm-mkvp", false, "show the master key pattern of each secure key")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	c.MarkFlagRequired("slot")
	return c
}

func (o *keysListOptions) run(cmd *cobra.Command, _ []string) error {
	lib, h, err := o.openUser(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	keys, err := findKeys(lib, h)
	if err != nil {
		return err
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var queues []hsm.QueueInfo
	if o.hsmMKVP {
		if queues, err = lib.TokenAPQNs(tokenlib.SlotID(o.slot)); err != nil {
			return err
		}
	}
	recs := make([]keyRecord, 0, len(keys))
	for _, k := range keys {
		r := describeKey(lib, h, k)
		if o.json {
			r.Blobs = inspectBlobs(lib, h, k)
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
		recs = append(recs, r)
	}
	if o.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(recs)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	head := "HANDLE\tCLASS\tTYPE\tBITS\tLABEL\tID\tFLAGS"
	if o.hsmMKVP {
		head += "\tMK TYPE\tMKVP\tMATCH"
	}
	fmt.Fprintln(w, head)
	for _, r := range recs {
		line := fmt.Sprintf("%d\t%s\t%s\t%d\t%s\t%s\t%s", r.Handle, r.Class, r.KeyType, r.Bits, orDash(r.Label), orDash(r.ID), flags(r))
		if o.hsmMKVP {
			line += fmt.Sprintf("\t%s\t%s\t%s", orDash(r.MKType), orDash(r.MKVP), orDash(r.Match))
		}
		fmt.Fprintln(w, line)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%d keys\n", len(recs))
	return nil
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

// inspectBlobs reads the three blob attributes of key k; nil for a key
// without a secure key.
func inspectBlobs(lib *tokenlib.Library, h tokenlib.SessionHandle, k tokenlib.ObjectHandle) *keyBlobs {
	one := func(a ck.Attribute) *blobPattern {
		b := attr(lib, h, k, a)
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
