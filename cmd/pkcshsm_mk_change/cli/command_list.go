package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/state"
)

type listOptions struct {
	idOption
	json bool
}

func (c *command) newListCommand() *cobra.Command {
	o := &listOptions{}
	cmd := &cobra.Command{
		Use:   "list [-i ID] [--json]",
		Short: "List the active master key change operations",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runList(cmd.Context(), cmd, o)
		},
	}
	o.addFlag(cmd)
	cmd.Flags().BoolVar(&o.json, "json", false, "print the operations as JSON")
	return cmd
}

func (c *command) runList(ctx context.Context, cmd *cobra.Command, o *listOptions) error {
	d, err := c.openDir(true)
	if errclass.Of(err) == errclass.NotFound && !cmd.Flags().Changed("id") {
		return printOps(cmd.OutOrStdout(), nil, o.json) // nothing was ever started
	}
	if err != nil {
		return err
	}
	defer d.Close()
	var ops []*state.Op
	if cmd.Flags().Changed("id") {
		id, err := state.ParseID(o.id)
		if err != nil {
			return err
		}
		op, err := d.Load(ctx, id)
		if err != nil {
			return err
		}
		ops = []*state.Op{op}
	} else {
		var broken []state.Broken
		ops, broken, err = d.List(ctx)
		if err != nil {
			return err
		}
		for _, b := range broken {
			clierr.Warn(cmd.ErrOrStderr(), Prog, "unreadable operation file %s skipped: %v", b.Name, b.Err)
		}
	}
	return printOps(cmd.OutOrStdout(), ops, o.json)
}

func printOps(w io.Writer, ops []*state.Op, asJSON bool) error {
	if asJSON {
		if ops == nil {
			ops = []*state.Op{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ops)
	}
	for i, op := range ops {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, formatOp(op))
	}
	return nil
}

// formatOp renders one operation in the layout of upstream's list, with
// the creation time, initiator and last error added.
func formatOp(op *state.Op) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Operation:       %s\n", op.ID)
	fmt.Fprintf(&b, "    State:       %s\n", strings.ReplaceAll(op.State.Text(), "\n", "\n                 "))
	if !op.Created().IsZero() {
		fmt.Fprintf(&b, "    Created:     %s by uid %d\n", op.Created().Format("2006-01-02 15:04:05 MST"), op.UID)
		fmt.Fprintf(&b, "    Updated:     %s\n", op.Updated().Format("2006-01-02 15:04:05 MST"))
	}
	if op.LastError != "" {
		fmt.Fprintf(&b, "    Last error:  %s\n", op.LastError)
	}
	b.WriteString("    APQNs:\n")
	for _, q := range op.APQNs {
		fmt.Fprintf(&b, "        %s\n", q)
	}
	b.WriteString("    New master key verification patterns:\n")
	for _, t := range op.Types() {
		fmt.Fprintf(&b, "        Type:    %s\n        MKVP:    %s\n", t, op.New[t])
	}
	b.WriteString("    Affected slots:\n")
	for _, sl := range op.Slots {
		fmt.Fprintf(&b, "        Slot: %d", sl.ID)
		if sl.Label != "" {
			fmt.Fprintf(&b, " Label: %s", sl.Label)
		}
		b.WriteString("\n")
		if len(sl.Current) > 0 {
			b.WriteString("            Current master key verification patterns:\n")
			for _, t := range op.Types() {
				if p, ok := sl.Current[t]; ok {
					fmt.Fprintf(&b, "                Type:    %s\n                MKVP:    %s\n", t, p)
				}
			}
		}
	}
	return b.String()
}
