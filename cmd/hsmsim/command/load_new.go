package command

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

type loadNewOptions struct {
	apqns apqn.List
	typ   string
	key   string
	part  string
}

func newLoadNewCommand(a *app) *cobra.Command {
	var o loadNewOptions
	cmd := &cobra.Command{
		Use:   "load-new --apqns APQNS --type TYPE [--key HEX|-] [--part I/N]",
		Short: "Load a new master key into the NEW register",
		Long: `load-new loads a master key into the NEW register of every listed APQN — the
same key on all of them, as a TKE loads a domain group. Without --key the key
is random. With --key - the hex key is read from standard input.

CCA keys may be loaded in parts (--part 1/3, 2/3, 3/3): the parts are XORed,
NEW is partial until the last part and full after it. An EP11 wrapping key is
loaded in one step and is then uncommitted; commit it with "hsmsim commit".

Key sizes: SYM and ASYM 24 bytes, AES, APKA and WK 32 bytes.`,
		Example: `  hsmsim load-new --apqns 01.0033,02.0033 --type AES
  hsmsim load-new --apqns 01.0033 --type APKA --key 00112233...eeff --part 1/2`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := cmd.Flags()
			if err := requireFlag(fs, "apqns", "01.0033,02.0033"); err != nil {
				return err
			}
			if err := requireFlag(fs, "type", "AES"); err != nil {
				return err
			}
			t, err := parseType(o.typ)
			if err != nil {
				return err
			}
			var key []byte
			if fs.Changed("key") {
				s, err := readKeyArg(cmd, o.key)
				if err != nil {
					return err
				}
				if key, err = parseKey(t, s); err != nil {
					return err
				}
			}
			var part hsm.Part
			if fs.Changed("part") {
				if part, err = parsePart(o.part); err != nil {
					return err
				}
			}
			if err := sim.CheckPart(t, part); err != nil {
				return err
			}
			if key == nil {
				// One random key for every listed APQN.
				if key, err = randomKey(t); err != nil {
					return err
				}
			}
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			pats := map[apqn.ID]mkvp.Pattern{}
			err = h.Do(cmd.Context(), func(tx *sim.Tx) error {
				for _, id := range o.apqns {
					p, err := tx.LoadNew(id, t, key, part)
					if err != nil {
						return err
					}
					pats[id] = p
				}
				return nil
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, id := range o.apqns {
				q, err := h.Queue(cmd.Context(), id)
				if err != nil {
					return err
				}
				r := q.MK[t].New
				line := fmt.Sprintf("%s %s NEW: %s %s", id, t.Keyword(), r.State, patternText(pats[id]))
				if r.State == apqn.StatePartial {
					line = fmt.Sprintf("%s %s NEW: partial (part %d/%d loaded)", id, t.Keyword(), part.Index, part.Total)
				}
				fmt.Fprintln(w, strings.TrimSpace(line))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.Var(&o.apqns, "apqns", "APQNs to load, e.g. 01.0033,02.0033")
	f.StringVar(&o.typ, "type", "", "master key type: SYM, ASYM, AES, APKA (CCA) or WK (EP11)")
	f.StringVar(&o.key, "key", "", "the key in hex, or - to read it from standard input (default random)")
	f.StringVar(&o.part, "part", "", "key part I/N of a multi-part CCA load")
	return cmd
}
