package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type slotsOptions struct{ *globalOptions }

func newSlotsCommand(g *globalOptions) *cobra.Command {
	o := &slotsOptions{g}
	return &cobra.Command{
		Use:   "slots",
		Short: "List the configured slots and the state of their tokens",
		Long: `List the configured slots and the state of their tokens. Each token's
database is checked (SQLite's integrity check, the schema version, the token
record and the USER PIN's wrap of the data key); a database that fails is
shown as DAMAGED, the problems are listed below the table, and the command
exits with 8.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
}

func (o *slotsOptions) run(cmd *cobra.Command, _ []string) error {
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	var warnings []string
	fmt.Fprintln(w, "SLOT\tTYPE\tTOKEN\tLABEL\tSTATE\tSO PIN\tUSER PIN")
	var damaged []error
	for _, id := range lib.GetSlotList() {
		ti, err := lib.GetTokenInfo(id)
		if err != nil {
			return err
		}
		state := "uninitialized"
		if ti.Flags&ck.CKF_TOKEN_INITIALIZED != 0 {
			state = "initialized"
			if err := lib.CheckStore(cmd.Context(), id); err != nil {
				state = "DAMAGED"
				damaged = append(damaged, fmt.Errorf("slot %d: %w", id, err))
			}
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", id, strings.ToUpper(ti.TokenType.String()), ti.TokenName,
			orDash(strings.TrimRight(ti.Label, " ")), state,
			pinState(ti.Flags, ck.CKF_SO_PIN_LOCKED, ck.CKF_SO_PIN_FINAL_TRY, ck.CKF_SO_PIN_COUNT_LOW, ti.SOPINFailures, ti.Flags&ck.CKF_TOKEN_INITIALIZED != 0),
			pinState(ti.Flags, ck.CKF_USER_PIN_LOCKED, ck.CKF_USER_PIN_FINAL_TRY, ck.CKF_USER_PIN_COUNT_LOW, ti.UserPINFailures, ti.Flags&ck.CKF_USER_PIN_INITIALIZED != 0))
		if state == "initialized" {
			warnings = append(warnings, mkChangeWarnings(cmd, lib, id)...)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, m := range warnings {
		fmt.Fprintln(cmd.OutOrStdout(), m)
	}
	if len(damaged) > 0 {
		return errclass.WithHint(errclass.As(errclass.DataLoss, fmt.Errorf("%d token %s a damaged database:\n  %w",
			len(damaged), map[bool]string{true: "has", false: "have"}[len(damaged) == 1], errors.Join(damaged...))), errclass.Hint(damaged[0]))
	}
	return nil
}

// mkChangeWarnings says, in capitals, when a master key change of another
// host concerns the token: a NEW register of its APQNs is loaded, no
// operation of this host covers it and keys lack a blob under the new
// master key (a set would lose them); and when keys are already under a
// master key no adapter has.
func mkChangeWarnings(cmd *cobra.Command, lib *tokenlib.Library, id tokenlib.SlotID) []string {
	u, err := lib.MKChangeForeign(cmd.Context(), id)
	if err != nil {
		return []string{fmt.Sprintf("Slot %d: the keys could not be checked against the adapters' master keys: %v", id, err)}
	}
	var qs []string
	for _, q := range u.APQNs {
		qs = append(qs, q.String())
	}
	var out []string
	if len(u.New) > 0 && !u.Covered && u.MissingNew > 0 {
		var pats, flags []string
		for _, t := range mkvp.Types() {
			if p, ok := u.New[t]; ok {
				pats = append(pats, fmt.Sprintf("%s %s", t, p))
				flags = append(flags, fmt.Sprintf("-%s %s", map[mkvp.Type]string{mkvp.EP11WK: "e", mkvp.CCASYM: "s",
					mkvp.CCAASYM: "S", mkvp.CCAAES: "A", mkvp.CCAAPKA: "p"}[t], p))
			}
		}
		out = append(out, fmt.Sprintf("WARNING: slot %d: a new master key (%s) is loaded on %s, and no master key change\n"+
			"         operation of this host covers the token: %d key %s no blob under it.\n"+
			"         DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS: run 'pkcshsm_mk_change reencipher -a %s %s'",
			id, strings.Join(pats, ", "), strings.Join(qs, ", "), u.MissingNew, plural(u.MissingNew, "object has", "objects have"),
			strings.Join(qs, ","), strings.Join(flags, " ")))
	}
	if u.Lost > 0 {
		out = append(out, fmt.Sprintf("WARNING: slot %d: %d KEY %s UNDER A MASTER KEY NO ADAPTER HAS ANY MORE: a new master key\n"+
			"         was activated without this host re-enciphering them. Have the security officer reload the\n"+
			"         previous master key, or restore the keys from a backup.",
			id, u.Lost, plural(u.Lost, "OBJECT IS", "OBJECTS ARE")))
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many

}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// pinState describes a PIN: not set, ok, or how many wrong attempts.
func pinState(flags, locked, final, low ck.Flags, failures int, set bool) string {
	switch {
	case !set:
		return "not set"
	case flags&locked != 0:
		return "LOCKED"
	case flags&final != 0:
		return fmt.Sprintf("final try (%d wrong)", failures)
	case failures > 0:
		return fmt.Sprintf("set (%d wrong)", failures)
	}
	return "set"
}
