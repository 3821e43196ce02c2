package cli

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type tokenInitOptions struct {
	*globalOptions
	slot  uint
	label string
	yes   bool
}

func newTokenInitCommand(g *globalOptions) *cobra.Command {
	o := &tokenInitOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "init --slot N --label LABEL",
		Short: "Initialize the token in a slot (C_InitToken)",
		Long: `Initialize the token in a slot. A new token gets the SO PIN entered twice.
An initialized token is re-initialized with its current SO PIN: every object
is destroyed and the USER PIN is cleared, after a confirmation.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().StringVar(&o.label, "label", "", "token label (at most 32 bytes)")
	c.Flags().BoolVarP(&o.yes, "yes", "y", false, "do not ask before re-initializing")
	c.MarkFlagRequired("slot")
	c.MarkFlagRequired("label")
	return c
}

func (o *tokenInitOptions) run(cmd *cobra.Command, _ []string) error {
	// The label is checked before any PIN is asked.
	if err := checkLabel(o.label); err != nil {
		return err
	}
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	slot := tokenlib.SlotID(o.slot)
	ti, err := lib.GetTokenInfo(slot)
	if err != nil {
		return err
	}
	r := o.prompter(cmd)
	var pin []byte
	if ti.Flags&ck.CKF_TOKEN_INITIALIZED != 0 {
		if !o.yes {
			ok, err := r.Confirm(fmt.Sprintf("The token in slot %d is initialized; re-initializing destroys all its objects. Continue? [y/N] ", o.slot))
			if err != nil {
				return err
			}
			if !ok {
				return errclass.New(errclass.Aborted, "aborted; the token was not changed")
			}
		}
		if pin, err = r.PIN("Enter the SO PIN: "); err != nil {
			return err
		}
	} else if pin, err = r.NewPIN("SO PIN"); err != nil {
		return err
	}
	defer clear(pin)
	if err := lib.InitToken(slot, pin, o.label); err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Token in slot %d initialized with label %q.\n", o.slot, o.label)
	return nil
}

// checkLabel refuses a token label the token cannot take as given: empty
// or blank (labels are blank-padded, so it would read as no label), over
// 32 bytes (CK_TOKEN_INFO's label field), not UTF-8, or with control
// characters (a newline would break every listing).
func checkLabel(label string) error {
	const hint = "give a label of 1 to 32 bytes of printable UTF-8, not only blanks"
	switch {
	case strings.TrimRight(label, " ") == "":
		return errclass.Newh(errclass.InvalidArgument, hint, "invalid token label %q: it is empty or blank", label)
	case len(label) > 32:
		return errclass.Newh(errclass.InvalidArgument, hint, "invalid token label %q: %d bytes, at most 32", label, len(label))
	case !utf8.ValidString(label):
		return errclass.Newh(errclass.InvalidArgument, hint, "invalid token label %q: not UTF-8", label)
	case strings.IndexFunc(label, unicode.IsControl) >= 0:
		return errclass.Newh(errclass.InvalidArgument, hint, "invalid token label %q: it has a control character", label)
	}
	return nil
}
