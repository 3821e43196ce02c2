package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
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
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(damaged) > 0 {
		return errclass.WithHint(errclass.As(errclass.DataLoss, fmt.Errorf("%d token %s a damaged database:\n  %w",
			len(damaged), map[bool]string{true: "has", false: "have"}[len(damaged) == 1], errors.Join(damaged...))), errclass.Hint(damaged[0]))
	}
	return nil
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
