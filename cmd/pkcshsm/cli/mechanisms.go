package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type mechanismsOptions struct {
	*globalOptions
	slot uint
}

func newMechanismsCommand(g *globalOptions) *cobra.Command {
	o := &mechanismsOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "mechanisms --slot N",
		Short: "List the mechanisms of a token with key sizes and flags",
		Args:  cobra.NoArgs,
		RunE:  o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.MarkFlagRequired("slot")
	return c
}

var mechFlagNames = []struct {
	f    ck.Flags
	name string
}{
	{ck.CKF_HW, "hw"}, {ck.CKF_ENCRYPT, "encrypt"}, {ck.CKF_DECRYPT, "decrypt"}, {ck.CKF_DIGEST, "digest"},
	{ck.CKF_SIGN, "sign"}, {ck.CKF_VERIFY, "verify"}, {ck.CKF_GENERATE, "generate"},
	{ck.CKF_GENERATE_KEY_PAIR, "generate_key_pair"}, {ck.CKF_WRAP, "wrap"}, {ck.CKF_UNWRAP, "unwrap"},
	{ck.CKF_EC_F_P, "ec_f_p"}, {ck.CKF_EC_NAMEDCURVE, "ec_namedcurve"}, {ck.CKF_EC_UNCOMPRESS, "ec_uncompress"},
}

func (o *mechanismsOptions) run(cmd *cobra.Command, _ []string) error {
	lib, err := o.open(cmd)
	if err != nil {
		return err
	}
	defer lib.Close()
	slot := tokenlib.SlotID(o.slot)
	ms, err := lib.GetMechanismList(slot)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "MECHANISM\tMIN\tMAX\tFLAGS")
	for _, m := range ms {
		i, err := lib.GetMechanismInfo(slot, m)
		if err != nil {
			return err
		}
		var fs []string
		for _, f := range mechFlagNames {
			if i.Flags&f.f != 0 {
				fs = append(fs, f.name)
			}
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", m, i.MinKeySize, i.MaxKeySize, strings.Join(fs, ","))
	}
	return w.Flush()
}
