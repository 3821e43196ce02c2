package command

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

type showOptions struct {
	json bool
}

// showRegister is one register in the JSON output.
type showRegister struct {
	State   string `json:"state"`
	Pattern string `json:"pattern,omitempty"`
}

// showQueue is one APQN in the JSON output.
type showQueue struct {
	APQN      apqn.ID                            `json:"apqn"`
	Type      string                             `json:"type"`
	Mode      string                             `json:"mode"`
	Status    string                             `json:"status"`
	FailAfter *int                               `json:"fail_after,omitempty"`
	LatencyMS float64                            `json:"latency_ms,omitempty"`
	Engines   int                                `json:"engines,omitempty"`
	Registers map[string]map[string]showRegister `json:"registers"`
	// EP11 only: the session limit and the logged-in sessions.
	MaxSessions *int          `json:"max_sessions,omitempty"`
	Sessions    []showSession `json:"sessions,omitempty"`
}

// showSession is one EP11 session in the JSON output.
type showSession struct {
	// Field is the first 8 bytes (hex) of the session field under the
	// CURRENT wrapping key, as keys bound to the session carry it.
	Field   string `json:"field"`
	Created string `json:"created"`
}

func newShowCommand(a *app) *cobra.Command {
	var o showOptions
	cmd := &cobra.Command{
		Use:   "show [--json]",
		Short: "List the simulated APQNs with their master key registers",
		Long: `show lists every simulated APQN like lszcrypt (CARD.DOM, TYPE, MODE, STATUS)
and below each its master key registers with states and verification
patterns, then the EP11 sessions logged in on each EP11 APQN (the first 8
bytes of the session field that keys bound to it carry, and when it was
logged in) and the APQN's session limit. With --json the same as a JSON
array.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := a.open()
			if err != nil {
				return err
			}
			defer h.Close()
			qs, err := h.Queues(cmd.Context())
			if err != nil {
				return err
			}
			out := make([]showQueue, 0, len(qs))
			for _, q := range qs {
				sq, err := describe(h, q)
				if err != nil {
					return err
				}
				out = append(out, sq)
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
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CARD.DOM\tTYPE\tMODE\tSTATUS")
			fmt.Fprintln(tw, "--------\t-----\t-----------\t-------")
			for i, q := range qs {
				sq := out[i]
				status := sq.Status
				var faults []string
				if sq.FailAfter != nil {
					faults = append(faults, fmt.Sprintf("fail-after %d", *sq.FailAfter))
				}
				if sq.LatencyMS > 0 {
					faults = append(faults, fmt.Sprintf("latency %gms", sq.LatencyMS))
				}
				if sq.Engines > 0 {
					faults = append(faults, fmt.Sprintf("%d engines", sq.Engines))
				}
				if len(faults) > 0 {
					status += " (" + strings.Join(faults, ", ") + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", q.ID, sq.Type, sq.Mode, status)
			}
			if err := tw.Flush(); err != nil {
				return errclass.New(errclass.Unavailable, "write output: %w", err)
			}
			fmt.Fprintln(w)
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "CARD.DOM\tMK\tNEW\t\tCURRENT\t\tOLD")
			for _, q := range qs {
				types := mkvp.CCATypes()
				if q.Mode == apqn.ModeEP11 {
					types = []mkvp.Type{mkvp.EP11WK}
				}
				for _, t := range types {
					r := q.MK[t]
					old := fmt.Sprintf("%s\t%s", r.Old.State, patternText(r.Old.Pattern))
					if t == mkvp.EP11WK {
						old = "-\t-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", q.ID, t.Keyword(),
						r.New.State, patternText(r.New.Pattern), r.Current.State, patternText(r.Current.Pattern), old)
				}
			}
			if err := tw.Flush(); err != nil {
				return errclass.New(errclass.Unavailable, "write output: %w", err)
			}
			return showSessions(w, out)
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON")
	return cmd
}

func describe(h *sim.HSM, q hsm.QueueInfo) (showQueue, error) {
	f, err := h.Faults(q.ID)
	if err != nil {
		return showQueue{}, err
	}
	typ, err := h.CardType(q.ID)
	if err != nil {
		return showQueue{}, err
	}
	sq := showQueue{APQN: q.ID, Type: typ, Mode: q.Mode.String(), Status: "online",
		Registers: map[string]map[string]showRegister{}}
	switch {
	case f.Checkstop:
		sq.Status = "chkstop"
	case !f.Online:
		sq.Status = "offline"
	}
	if f.FailAfter >= 0 {
		n := f.FailAfter
		sq.FailAfter = &n
	}
	sq.LatencyMS = float64(f.Latency.Microseconds()) / 1000
	sq.Engines = f.Engines
	if q.Mode == apqn.ModeEP11 {
		list, st, err := h.SessionList(q.ID)
		if err != nil {
			return showQueue{}, err
		}
		sq.MaxSessions = &st.Max
		sq.Sessions = []showSession{}
		for _, s := range list {
			sq.Sessions = append(sq.Sessions, showSession{Field: hex.EncodeToString(s.Field[:8]), Created: s.Created.Format(time.RFC3339)})
		}
	}
	for t, r := range q.MK {
		regs := map[string]showRegister{
			"new":     {r.New.State.String(), patternHex(r.New.Pattern)},
			"current": {r.Current.State.String(), patternHex(r.Current.Pattern)},
		}
		if t != mkvp.EP11WK {
			regs["old"] = showRegister{r.Old.State.String(), patternHex(r.Old.Pattern)}
		}
		sq.Registers[t.Keyword()] = regs
	}
	return sq, nil
}

// showSessions prints the EP11 session table.
func showSessions(w io.Writer, qs []showQueue) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, q := range qs {
		if q.MaxSessions == nil {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "CARD.DOM\tEP11 SESSIONS\tSESSION\tLOGGED IN")
			header = true
		}
		count := fmt.Sprintf("%d of %d", len(q.Sessions), *q.MaxSessions)
		if len(q.Sessions) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\n", q.APQN, count)
		}
		for i, s := range q.Sessions {
			if i > 0 {
				count = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", q.APQN, count, s.Field, s.Created)
		}
	}
	if err := tw.Flush(); err != nil {
		return errclass.New(errclass.Unavailable, "write output: %w", err)
	}
	return nil
}

func patternHex(p mkvp.Pattern) string {
	if p.IsZero() {
		return ""
	}
	return strings.ToLower(p.String())
}
