package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

var errNotEP11 = errclass.Newh(errclass.InvalidArgument, "pick the slot of an EP11 token (`pkcshsm slots`)", "not an EP11 token")

type ep11ShowOptions struct {
	*globalOptions
	slot uint
	json bool
}

// ep11SessionJSON is one stored session in `show --json`.
type ep11SessionJSON struct {
	ID      string   `json:"id"`
	PID     int      `json:"pid"`
	Running bool     `json:"running"`
	Program string   `json:"program,omitempty"`
	Created string   `json:"created"`
	APQNs   []string `json:"apqns"`
	Strict  bool     `json:"strict"`
	VHSM    bool     `json:"vhsm"`
	Corrupt bool     `json:"corrupt,omitempty"`
}

func newEP11SessionShowCommand(g *globalOptions) *cobra.Command {
	o := &ep11ShowOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "show --slot N [--json]",
		Short: "List the EP11 sessions stored in a token",
		Long: `show lists the EP11 sessions the token keeps in hidden objects: session id,
owning process (and whether it still runs), program, creation time, the
APQNs it is logged in on, and which mode logged it in.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().BoolVar(&o.json, "json", false, "print JSON")
	c.MarkFlagRequired("slot")
	return c
}

func sessionJSON(r ep11sess.Record) ep11SessionJSON {
	j := ep11SessionJSON{ID: r.ID.String(), PID: r.PID, Running: r.PID != 0 && ep11sess.Alive(r.PID), Program: r.Program,
		Created: r.Created.Format("2006-01-02T15:04:05Z"), APQNs: []string{}, Strict: r.Strict != nil, VHSM: r.VHSM != nil,
		Corrupt: r.PID == 0}
	for _, q := range r.APQNs {
		j.APQNs = append(j.APQNs, q.String())
	}
	return j
}

func (o *ep11ShowOptions) run(cmd *cobra.Command, _ []string) error {
	lib, h, err := o.openSessionTool(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	recs, err := lib.EP11Sessions(cmd.Context(), h)
	if recs == nil && err != nil {
		return fmt.Errorf("slot %d: %w", o.slot, err)
	}
	if err != nil {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
	}
	out := make([]ep11SessionJSON, 0, len(recs))
	for _, r := range recs {
		if r.PID == os.Getpid() {
			continue
		}
		out = append(out, sessionJSON(r))
	}
	w := cmd.OutOrStdout()
	if o.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return errclass.New(errclass.Internal, "encode JSON: %w", err)
		}
		return nil
	}
	fmt.Fprintf(w, "Using slot #%d...\n\nList of EP11 sessions:\n\n", o.slot)
	for _, s := range out {
		fmt.Fprintf(w, "%s:\n", strings.ToUpper(s.ID))
		if s.Corrupt {
			fmt.Fprintf(w, "\tunreadable session object (remove it with `pkcshsm ep11-session logout --slot %d --id %s --force`)\n\n", o.slot, s.ID)
			continue
		}
		running := ""
		if s.Running {
			running = " (still running)"
		}
		fmt.Fprintf(w, "\tPid:\t%d%s\n", s.PID, running)
		if s.Program != "" {
			fmt.Fprintf(w, "\tProgram:\t%s\n", s.Program)
		}
		fmt.Fprintf(w, "\tDate:\t%s\n", strings.Replace(strings.TrimSuffix(s.Created, "Z"), "T", " ", 1)+" UTC")
		var modes []string
		if s.Strict {
			modes = append(modes, "STRICT_MODE")
		}
		if s.VHSM {
			modes = append(modes, "VHSM_MODE")
		}
		fmt.Fprintf(w, "\tMode:\t%s\n", strings.Join(modes, ", "))
		fmt.Fprintf(w, "\tAPQNs:\n")
		for _, q := range s.APQNs {
			fmt.Fprintf(w, "\t\t%s\n", q)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d EP11-Sessions displayed\n", len(out))
	return nil
}
