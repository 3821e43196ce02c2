package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

// verify answers, from the key objects themselves, whether activating
// ("setting") the new master keys on some APQNs loses any key: it counts,
// per token of this host that uses those APQNs, the key objects (token
// objects from the stores, session objects of running processes through
// the daemon) that have no blob under the NEW pattern. It changes nothing
// and asks for no PIN (the stores keep each key's master key patterns in
// the clear, see tokenlib/store/census.go).

type verifyOptions struct {
	idOption
	apqns    apqn.List
	types    []string
	patterns map[mkvp.Type]*string
	json     bool
}

func (c *command) newVerifyCommand() *cobra.Command {
	o := &verifyOptions{patterns: map[mkvp.Type]*string{}}
	cmd := &cobra.Command{
		Use:   "verify {-a APQNS [-t TYPE]... [-e WKVP] [-s|-S|-A|-p MKVP]... | -i ID} [--json]",
		Short: "Check from the keys that setting the new master keys loses none",
		Long: `Check, before the security officer sets (activates) new master keys, that no
key object would be lost: for every token of this host that uses the APQNs,
count the key objects (token objects, and the session objects of running
applications through pkcshsmd) that have no blob under the new master key.
The new patterns are those in the APQNs' NEW registers (what a set
activates), for the types given with -t or the pattern options, or for every
type with a NEW register loaded; a pattern option must match the register.
With -i, the APQNs and patterns of that operation are checked, and its file
is compared with the keys. Nothing is changed and no PIN is needed.

Exit status 0: setting loses no key. 4: not ready; the counts, the reasons
and the one command that fixes it are printed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runVerify(cmd.Context(), cmd, o)
		},
	}
	f := cmd.Flags()
	f.VarP(&o.apqns, "apqns", "a", "APQNs the new master keys are to be set on, card.domain in hex as lszcrypt prints them; repeat to add more")
	f.StringSliceVarP(&o.types, "type", "t", nil, "master key type to check: SYM, ASYM, AES, APKA, WK, or cca (SYM, AES, APKA) or ep11 (WK); repeat or separate by commas")
	for _, pf := range patternFlags {
		o.patterns[pf.typ] = f.StringP(pf.long, pf.short, "", pf.help)
	}
	o.addFlag(cmd)
	f.BoolVar(&o.json, "json", false, "print the answer as one JSON object")
	return cmd
}

// readiness is verify's answer; its JSON form is a shared contract (the
// Ansible role and the runbook read it): do not rename fields.
type readiness struct {
	Ready    bool        `json:"ready"`
	APQNs    []string    `json:"apqns"`
	Types    []string    `json:"types"`
	Slots    []readySlot `json:"slots"`
	Problems []string    `json:"problems"`
	Fix      string      `json:"fix"`
	newp     map[mkvp.Type]mkvp.Pattern
	apqnList apqn.List
}

type readySlot struct {
	Slot                  uint     `json:"slot"`
	Token                 string   `json:"token"`
	TokenType             string   `json:"token_type"`
	Keys                  int      `json:"keys"`
	MissingNew            int      `json:"missing_new"`
	SessionKeysMissingNew int      `json:"session_keys_missing_new"`
	Lost                  int      `json:"lost"`
	Reasons               []string `json:"reasons"`
	serial                string
}

// verifyTarget is what verify checks: APQNs and, per type, the new pattern.
type verifyTarget struct {
	apqns apqn.List
	newp  map[mkvp.Type]mkvp.Pattern
	op    *state.Op // with -i
}

func (c *command) runVerify(ctx context.Context, cmd *cobra.Command, o *verifyOptions) error {
	byID := cmd.Flags().Changed("id")
	if byID {
		for _, n := range []string{"apqns", "type", "ep11-wkvp", "cca-sym-mkvp", "cca-asym-mkvp", "cca-aes-mkvp", "cca-apka-mkvp"} {
			if cmd.Flags().Changed(n) {
				return errclass.Newh(errclass.InvalidArgument, "give either -i ID or the APQNs (and types or patterns)",
					"option --%s cannot be combined with -i/--id", n)
			}
		}
	} else if !cmd.Flags().Changed("apqns") {
		return errclass.Newh(errclass.InvalidArgument, "name the APQNs with -a, e.g. -a 06.0033,0e.0033, or an operation with -i",
			"option -a/--apqns or -i/--id is required for the 'verify' command")
	}
	var tgt verifyTarget
	var given map[mkvp.Type]mkvp.Pattern
	var types []mkvp.Type
	if byID {
		id, err := state.ParseID(o.id)
		if err != nil {
			return err
		}
		d, err := c.openDir(true)
		if err != nil {
			return err
		}
		op, err := d.Load(ctx, id)
		d.Close()
		if err != nil {
			return err
		}
		tgt = verifyTarget{apqns: op.APQNs, newp: op.New, op: op}
	} else {
		var err error
		if types, given, err = o.parseTypes(cmd); err != nil {
			return err
		}
		tgt.apqns = o.apqns
	}
	s, err := c.newSession(ctx, cmd, false)
	if err != nil {
		return err
	}
	defer s.close()
	queues, err := s.tokens.Queues(ctx)
	if err != nil {
		return fmt.Errorf("failed to list the APQNs on the AP bus: %w", err)
	}
	var problems []string
	if !byID {
		tgt.newp, problems, err = newFromRegisters(queues, tgt.apqns, types, given)
		if err != nil {
			return err
		}
	}
	r, err := s.readiness(ctx, tgt, queues, true)
	if err != nil {
		return err
	}
	r.Problems = append(append([]string{}, problems...), r.Problems...) // [] in JSON, never null
	r.Ready = r.Ready && len(problems) == 0
	if !r.Ready && r.Fix == "" && len(problems) > 0 {
		r.Fix = "have the security officer load the intended new master keys into the NEW registers, then run verify again"
	}
	if o.json {
		enc := json.NewEncoder(s.out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprint(s.out, r.text())
	}
	if !r.Ready {
		return errclass.Newh(errclass.FailedPrecondition, r.Fix,
			"not ready: DO NOT SET/ACTIVATE the new master keys on %s", strings.Join(r.APQNs, ", "))
	}
	return nil
}

// parseTypes reads -t and the pattern options.
func (o *verifyOptions) parseTypes(cmd *cobra.Command) ([]mkvp.Type, map[mkvp.Type]mkvp.Pattern, error) {
	var types []mkvp.Type
	add := func(t mkvp.Type) {
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	for _, v := range o.types {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "cca":
			add(mkvp.CCASYM)
			add(mkvp.CCAAES)
			add(mkvp.CCAAPKA)
		case "ep11":
			add(mkvp.EP11WK)
		default:
			t, err := mkvp.ParseType(v)
			if err != nil {
				return nil, nil, fmt.Errorf("option -t/--type: %w", err)
			}
			add(t)
		}
	}
	given := map[mkvp.Type]mkvp.Pattern{}
	for _, pf := range patternFlags {
		if !cmd.Flags().Changed(pf.long) {
			continue
		}
		p, _, err := mkvp.Parse(pf.typ, *o.patterns[pf.typ])
		if err != nil {
			return nil, nil, fmt.Errorf("option -%s/--%s: %w", pf.short, pf.long, err)
		}
		given[pf.typ] = p
		add(pf.typ)
	}
	return types, given, nil
}

// newFromRegisters works out, per type, the pattern a set would activate
// on apqns: the NEW register (which all APQNs must agree on, and which a
// given pattern must match). Without types, every type with a loaded NEW
// register on some of the APQNs is checked. APQNs not on the bus are an
// error.
func newFromRegisters(queues []hsm.QueueInfo, apqns apqn.List, types []mkvp.Type, given map[mkvp.Type]mkvp.Pattern) (map[mkvp.Type]mkvp.Pattern, []string, error) {
	byID := map[apqn.ID]hsm.QueueInfo{}
	for _, q := range queues {
		byID[q.ID] = q
	}
	var unknown []string
	for _, q := range apqns {
		if _, ok := byID[q]; !ok {
			unknown = append(unknown, q.String())
		}
	}
	if len(unknown) > 0 {
		return nil, nil, errclass.Newh(errclass.InvalidArgument,
			"lszcrypt lists the APQNs (on the simulator: hsmsim show); correct --apqns",
			"%s %s %s not on the AP bus", plural(len(unknown), "APQN", "APQNs"), strings.Join(unknown, ", "), plural(len(unknown), "is", "are"))
	}
	explicit := len(types) > 0
	if !explicit {
		for _, t := range mkvp.Types() {
			for _, q := range apqns {
				if r, ok := byID[q].MK[t]; ok && r.New.State != apqn.StateEmpty && !r.New.Pattern.IsZero() {
					types = append(types, t)
					break
				}
			}
		}
	}
	newp := map[mkvp.Type]mkvp.Pattern{}
	var problems []string
	for _, t := range types {
		seen := map[mkvp.Pattern][]string{}
		var empty []string
		for _, q := range apqns {
			regs, ok := byID[q].MK[t]
			if !ok {
				continue // another mode's APQN
			}
			if regs.New.State == apqn.StateEmpty || regs.New.Pattern.IsZero() {
				empty = append(empty, q.String())
				continue
			}
			seen[regs.New.Pattern] = append(seen[regs.New.Pattern], q.String())
		}
		want, isGiven := given[t]
		switch {
		case len(seen) == 0 && isGiven:
			newp[t] = want
			problems = append(problems, fmt.Sprintf("no NEW %s master key is loaded on %s: nothing to set", t, strings.Join(empty, ", ")))
		case len(seen) == 0:
			if explicit && len(empty) > 0 {
				problems = append(problems, fmt.Sprintf("no NEW %s master key is loaded on %s: nothing to set", t, strings.Join(empty, ", ")))
			}
		default:
			pats := make([]mkvp.Pattern, 0, len(seen))
			for p := range seen {
				pats = append(pats, p)
			}
			slices.SortFunc(pats, func(a, b mkvp.Pattern) int { return strings.Compare(a.String(), b.String()) })
			if isGiven {
				newp[t] = want
			} else {
				newp[t] = pats[0]
			}
			for _, p := range pats {
				if p != newp[t] {
					problems = append(problems, fmt.Sprintf("the NEW %s register on %s holds %s, not %s: the APQNs would activate different master keys",
						t, strings.Join(seen[p], ", "), p, newp[t]))
				}
			}
			if len(empty) > 0 {
				problems = append(problems, fmt.Sprintf("no NEW %s master key is loaded on %s", t, strings.Join(empty, ", ")))
			}
		}
	}
	return newp, problems, nil
}

// readiness runs the census for tgt on every present token of this host,
// asks the running processes about their session keys, and compares with
// the operations of this host: the answer of verify, and what list checks
// before it says the keys can be set.
func (s *session) readiness(ctx context.Context, tgt verifyTarget, queues []hsm.QueueInfo, sessions bool) (*readiness, error) {
	r := &readiness{APQNs: []string{}, Types: []string{}, Slots: []readySlot{}, Problems: []string{},
		newp: tgt.newp, apqnList: tgt.apqns}
	for _, q := range tgt.apqns {
		r.APQNs = append(r.APQNs, q.String())
	}
	var types []mkvp.Type
	for _, t := range mkvp.Types() {
		if _, ok := tgt.newp[t]; ok {
			types = append(types, t)
			r.Types = append(r.Types, t.String())
		}
	}
	if len(types) == 0 {
		r.Ready = true // nothing would be set
		return r, nil
	}
	slots, err := s.tokens.Slots(ctx)
	if err != nil {
		return nil, err
	}
	for _, sl := range slots {
		if !sl.Present {
			if sl.Reason != "" && !strings.Contains(sl.Reason, "not initialized") {
				r.Problems = append(r.Problems, fmt.Sprintf("slot %d has no token present (%s): its keys cannot be counted", sl.ID, sl.Reason))
			}
			continue
		}
		cr, err := s.tokens.Census(ctx, sl.ID, tgt.apqns, tgt.newp)
		if err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("slot %d (%s): the keys cannot be counted: %v", sl.ID, sl.Label, err))
			continue
		}
		if !cr.Affected {
			continue
		}
		rs := readySlot{Slot: sl.ID, Token: sl.Label, TokenType: sl.Type, Keys: cr.Keys, MissingNew: cr.MissingNew,
			Lost: cr.Lost, Reasons: []string{}, serial: sl.Serial}
		if cr.MissingNew > 0 {
			rs.Reasons = append(rs.Reasons, fmt.Sprintf("%d of %d key objects have no blob under the new master key", cr.MissingNew, cr.Keys))
		}
		if cr.Unrecorded > 0 {
			rs.Reasons = append(rs.Reasons, fmt.Sprintf("%d of them were written by an older release and carry no re-enciphered blob", cr.Unrecorded))
		}
		if cr.Unreadable > 0 {
			rs.Reasons = append(rs.Reasons, fmt.Sprintf("%d of them hold a blob that is not a secure key this release can read", cr.Unreadable))
		}
		if cr.Lost > 0 {
			rs.Reasons = append(rs.Reasons, fmt.Sprintf("%d key objects are under a master key no APQN of the token has in any register: no adapter can use them", cr.Lost))
		}
		r.Slots = append(r.Slots, rs)
	}
	if sessions {
		s.sessionCensus(ctx, r, types)
	}
	d, err := s.openDir(true)
	var ops []*state.Op
	if err == nil {
		ops, _, err = d.List(ctx)
		d.Close()
	}
	if err != nil && errclass.Of(err) != errclass.NotFound {
		r.Problems = append(r.Problems, fmt.Sprintf("the operation directory cannot be read: %v", err))
	}
	s.judge(r, tgt, ops)
	if tgt.op != nil {
		// The token stores' journals against the operation file.
		truth := s.crossCheck(ctx, tgt.op)
		for _, w := range truth.warnings {
			r.Problems = append(r.Problems, "WARNING: "+w)
		}
		if len(truth.warnings) > 0 {
			r.Ready = false
		}
		switch {
		case truth.next == state.ActFinalize || (truth.next != 0 && r.Fix == ""):
			r.Fix = fmt.Sprintf("pkcshsm_mk_change %s --id %s", truth.next, tgt.op.ID)
		case len(truth.warnings) > 0 && r.Fix == "":
			r.Fix = "fix the problems listed, then run verify again"
		}
	}
	return r, nil
}

// sessionCensus asks every running process, through the daemon, how many
// of its session keys lack a blob under the new patterns.
func (s *session) sessionCensus(ctx context.Context, r *readiness, types []mkvp.Type) {
	if s.deps.DialAdmin == nil {
		return
	}
	bc, err := s.deps.DialAdmin(ctx, s.opts.socket, s.opts.config)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("the session keys of running applications cannot be counted: pkcshsmd (%s) does not answer: %v", s.opts.socket, err))
		return
	}
	if bc == nil {
		return // event support disabled: no process keeps a session with a daemon
	}
	defer bc.Close()
	payload, err := json.Marshal(state.CensusRequest{APQNs: r.apqnList, New: r.newp})
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("census request: %v", err))
		return
	}
	tt := tokenTypes(&state.Op{New: r.newp})
	// A census only reads: a process gets a short while to answer (one
	// that does not is reported, and verify is not ready).
	wait := min(s.opts.timeout, 15*time.Second)
	ev := event.Event{Type: state.CensusEventType, Payload: payload, Timeout: event.TimeoutOf(wait),
		Target: &event.Target{ExcludeCaller: true, Types: tt}}
	acc, err := bc.Broadcast(ctx, ev)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("the session keys of running applications cannot be counted: %v", err))
		return
	}
	for _, p := range acc.Processes {
		switch p.Outcome {
		case event.Replied:
		case event.Disconnected:
			continue // gone, and its session keys with it
		default:
			r.Problems = append(r.Problems, fmt.Sprintf("%s did not answer: its session keys cannot be counted", p.Who()))
			continue
		}
		for _, tr := range p.Results {
			if tr.Result == event.Failed {
				r.Problems = append(r.Problems, fmt.Sprintf("%s, slot %d: %s", p.Who(), tr.Slot, tr.Error))
				continue
			}
			if tr.Result != event.Affected || tr.ObjectsFailed == 0 {
				continue
			}
			for i := range r.Slots {
				if r.Slots[i].serial == tr.Serial {
					r.Slots[i].SessionKeysMissingNew += tr.ObjectsFailed
					r.Slots[i].Reasons = append(r.Slots[i].Reasons, fmt.Sprintf("%s holds %d session keys without a blob under the new master key", p.Who(), tr.ObjectsFailed))
				}
			}
		}
	}
}

// judge decides readiness and the one command that fixes it, comparing
// the keys with the operations of this host.
func (s *session) judge(r *readiness, tgt verifyTarget, ops []*state.Op) {
	covering := func(sl readySlot) *state.Op {
		if tgt.op != nil {
			for _, os := range tgt.op.Slots {
				if os.ID == sl.Slot {
					return tgt.op
				}
			}
		}
		for _, op := range ops {
			shares := false
			for t := range tgt.newp {
				if p, ok := op.New[t]; ok && p == tgt.newp[t] {
					shares = true
				}
			}
			if !shares {
				continue
			}
			for _, os := range op.Slots {
				if os.ID == sl.Slot && (os.Serial == "" || os.Serial == sl.serial) {
					return op
				}
			}
		}
		return nil
	}
	var fixes []string
	addFix := func(f string) {
		if !slices.Contains(fixes, f) {
			fixes = append(fixes, f)
		}
	}
	lost := false
	for i := range r.Slots {
		sl := &r.Slots[i]
		if sl.Lost > 0 {
			lost = true
		}
		if sl.MissingNew == 0 && sl.SessionKeysMissingNew == 0 {
			continue
		}
		op := covering(*sl)
		switch {
		case op == nil:
			sl.Reasons = append(sl.Reasons, "no master key change operation of this host covers this token: "+
				"DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS")
			addFix(reencipherCommand(tgt))
		case op.State == state.Reenciphered:
			sl.Reasons = append(sl.Reasons, fmt.Sprintf("WARNING: operation %s says REENCIPHERED, but the keys say otherwise "+
				"(its file was restored from an older copy, or changed); the truth is in the token stores", op.ID))
			addFix(fmt.Sprintf("pkcshsm_mk_change cancel --id %s && %s", op.ID, reencipherCommand(verifyTarget{apqns: op.APQNs, newp: op.New})))
		case op.State == state.Reenciphering || op.State == state.Initial:
			sl.Reasons = append(sl.Reasons, fmt.Sprintf("operation %s has not re-enciphered every key yet (%s)", op.ID, op.State))
			if next := op.Completes(); len(next) > 0 {
				addFix(fmt.Sprintf("pkcshsm_mk_change %s --id %s", next[0], op.ID))
			}
		default:
			sl.Reasons = append(sl.Reasons, fmt.Sprintf("operation %s is %s", op.ID, op.State))
			if next := op.Completes(); len(next) > 0 {
				addFix(fmt.Sprintf("pkcshsm_mk_change %s --id %s", next[0], op.ID))
			}
		}
	}
	missing := 0
	for _, sl := range r.Slots {
		missing += sl.MissingNew + sl.SessionKeysMissingNew
	}
	r.Ready = missing == 0 && !lost && len(r.Problems) == 0
	switch {
	case len(fixes) > 0:
		r.Fix = strings.Join(fixes, "; ")
	case lost:
		r.Fix = "restore the previous master key into the adapters' registers (the security officer), or the keys from backups: " +
			"no command of this host can recover keys under a master key no adapter has"
	case len(r.Problems) > 0:
		r.Fix = "fix the problems listed, then run verify again"
	}
	if tgt.op != nil && r.Ready && tgt.op.State != state.Reenciphered {
		r.Ready = false
		next := tgt.op.Completes()
		r.Problems = append(r.Problems, fmt.Sprintf("operation %s is %s, not REENCIPHERED", tgt.op.ID, tgt.op.State))
		if len(next) > 0 {
			r.Fix = fmt.Sprintf("pkcshsm_mk_change %s --id %s", next[0], tgt.op.ID)
		}
	}
}

// reencipherCommand is the reencipher command line for a target.
func reencipherCommand(tgt verifyTarget) string {
	var b strings.Builder
	b.WriteString("pkcshsm_mk_change reencipher -a ")
	var qs []string
	for _, q := range tgt.apqns {
		qs = append(qs, q.String())
	}
	b.WriteString(strings.Join(qs, ","))
	for _, pf := range patternFlags {
		if p, ok := tgt.newp[pf.typ]; ok {
			fmt.Fprintf(&b, " -%s %s", pf.short, p)
		}
	}
	return b.String()
}

// text renders the answer for a person.
func (r *readiness) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "APQNs:        %s\n", strings.Join(r.APQNs, ", "))
	var pats []string
	for _, t := range mkvp.Types() {
		if p, ok := r.newp[t]; ok {
			pats = append(pats, fmt.Sprintf("%s %s", t, p))
		}
	}
	if len(pats) == 0 {
		pats = []string{"(none loaded)"}
	}
	fmt.Fprintf(&b, "New patterns: %s\n", strings.Join(pats, ", "))
	for _, sl := range r.Slots {
		fmt.Fprintf(&b, "Slot %d: Label: %s (%s): %d key %s, %d without a blob under the new master key, %d session %s without, %d lost\n",
			sl.Slot, sl.Token, sl.TokenType, sl.Keys, plural(sl.Keys, "object", "objects"), sl.MissingNew,
			sl.SessionKeysMissingNew, plural(sl.SessionKeysMissingNew, "key", "keys"), sl.Lost)
		for _, why := range sl.Reasons {
			fmt.Fprintf(&b, "    %s\n", why)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "Problem: %s\n", p)
	}
	if r.Ready {
		if len(r.Types) == 0 {
			b.WriteString("Ready: no new master key is loaded on these APQNs; there is nothing to set.\n")
		} else {
			b.WriteString("Ready: every key object has a blob under the new master key; setting them loses no key.\n")
		}
		return b.String()
	}
	missing := 0
	for _, sl := range r.Slots {
		missing += sl.MissingNew + sl.SessionKeysMissingNew
	}
	fmt.Fprintf(&b, "NOT READY: DO NOT SET/ACTIVATE THE NEW MASTER KEYS ON %s: %d KEY %s WOULD BE LOST.\n",
		strings.Join(r.APQNs, ", "), missing, plural(missing, "OBJECT", "OBJECTS"))
	if r.Fix != "" {
		fmt.Fprintf(&b, "Fix:          %s\n", r.Fix)
	}
	return b.String()
}

// summary says in one line how many keys setting would lose.
func (r *readiness) summary() string {
	missing, lost := 0, 0
	for _, sl := range r.Slots {
		missing += sl.MissingNew + sl.SessionKeysMissingNew
		lost += sl.Lost
	}
	out := fmt.Sprintf("%d key %s no blob under the new master key", missing, plural(missing, "object has", "objects have"))
	if lost > 0 {
		out += fmt.Sprintf(", %d %s under a master key no adapter has", lost, plural(lost, "is", "are"))
	}
	return out
}

// keyChecks are the checks list makes from the keys: per operation in
// REENCIPHERED the check of verify -i (or why it could not run), and
// the tokens of this host a loaded NEW register concerns that no
// operation covers.
type keyChecks struct {
	ops     map[state.ID]*readiness
	failed  map[state.ID]string
	truth   map[state.ID]storeTruth // operations not in REENCIPHERED whose stores disagree
	foreign *readiness              // nil: nothing to report
}

// keyChecks runs list's checks. They never fail list: a check that cannot
// run is reported as not done.
func (c *command) keyChecks(ctx context.Context, cmd *cobra.Command, ops []*state.Op) keyChecks {
	chk := keyChecks{ops: map[state.ID]*readiness{}, failed: map[state.ID]string{}, truth: map[state.ID]storeTruth{}}
	fail := func(why string) keyChecks {
		for _, op := range ops {
			if op.State == state.Reenciphered {
				chk.failed[op.ID] = why
			}
		}
		return chk
	}
	if c.deps.OpenTokens == nil {
		return fail("no token library")
	}
	s, err := c.newSession(ctx, cmd, false)
	if err != nil {
		return fail(err.Error())
	}
	defer s.close()
	queues, err := s.tokens.Queues(ctx)
	if err != nil {
		return fail(fmt.Sprintf("the APQNs cannot be listed: %v", err))
	}
	for _, op := range ops {
		if op.State != state.Reenciphered {
			if t := s.crossCheck(ctx, op); len(t.warnings) > 0 {
				chk.truth[op.ID] = t
			}
			continue
		}
		// The token objects only: asking every process would make list
		// wait for a stopped one; verify asks them.
		r, err := s.readiness(ctx, verifyTarget{apqns: op.APQNs, newp: op.New, op: op}, queues, false)
		if err != nil {
			chk.failed[op.ID] = err.Error()
			continue
		}
		chk.ops[op.ID] = r
	}
	chk.foreign = s.foreignCheck(ctx, queues)
	return chk
}

// foreignCheck looks for tokens of this host that a loaded NEW register
// concerns and that no operation of this host covers: the change was
// started on another host sharing the adapter domains, and a set would
// lose their keys. It also counts keys already under a master key no
// adapter has. nil: nothing to report.
func (s *session) foreignCheck(ctx context.Context, queues []hsm.QueueInfo) *readiness {
	var loaded apqn.List
	for _, q := range queues {
		for _, regs := range q.MK {
			if regs.New.State != apqn.StateEmpty && !regs.New.Pattern.IsZero() {
				loaded = append(loaded, q.ID)
				break
			}
		}
	}
	var all apqn.List
	for _, q := range queues {
		all = append(all, q.ID)
	}
	r := &readiness{Slots: []readySlot{}, Problems: []string{}}
	if len(loaded) > 0 {
		newp, _, err := newFromRegisters(queues, loaded, nil, nil)
		if err == nil {
			if rr, err := s.readiness(ctx, verifyTarget{apqns: loaded, newp: newp}, queues, false); err == nil {
				r = rr
			}
		}
	}
	var out []readySlot
	for _, sl := range r.Slots {
		for _, why := range sl.Reasons {
			if strings.Contains(why, "DO NOT SET ON THIS HOST") {
				out = append(out, sl)
				break
			}
		}
	}
	// Keys already lost to an activation: a census against the CURRENT
	// registers finds them whatever is loaded.
	cur := map[mkvp.Type]mkvp.Pattern{}
	for _, q := range queues {
		for t, regs := range q.MK {
			if !regs.Current.Pattern.IsZero() {
				cur[t] = regs.Current.Pattern
			}
		}
	}
	lost := map[uint]int{}
	if len(cur) > 0 {
		slots, _ := s.tokens.Slots(ctx)
		for _, sl := range slots {
			if !sl.Present {
				continue
			}
			cr, err := s.tokens.Census(ctx, sl.ID, all, cur)
			if err == nil && cr.Lost > 0 {
				lost[sl.ID] = cr.Lost
				found := false
				for i := range out {
					if out[i].Slot == sl.ID {
						out[i].Lost, found = cr.Lost, true
					}
				}
				if !found {
					out = append(out, readySlot{Slot: sl.ID, Token: sl.Label, TokenType: sl.Type, Lost: cr.Lost})
				}
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	r.Slots = out
	return r
}

// foreignText renders foreignCheck's findings for list.
func (r *readiness) foreignText() string {
	var b strings.Builder
	for _, sl := range r.Slots {
		if sl.MissingNew > 0 || sl.SessionKeysMissingNew > 0 {
			fmt.Fprintf(&b, "WARNING: A NEW MASTER KEY IS LOADED ON %s, BUT NO MASTER KEY CHANGE OPERATION OF\n"+
				"         THIS HOST COVERS SLOT %d (%s): %d KEY %s NO BLOB UNDER IT.\n"+
				"         DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS: run '%s'\n"+
				"         (if the change was called off, the security officer clears the NEW register instead)\n",
				strings.Join(r.APQNs, ", "), sl.Slot, sl.Token, sl.MissingNew+sl.SessionKeysMissingNew,
				plural(sl.MissingNew+sl.SessionKeysMissingNew, "OBJECT HAS", "OBJECTS HAVE"), r.Fix)
		}
		if sl.Lost > 0 {
			fmt.Fprintf(&b, "WARNING: SLOT %d (%s): %d KEY %s UNDER A MASTER KEY NO ADAPTER HAS ANY MORE: the new\n"+
				"         master key was activated without this host re-enciphering; 'pkcshsm keys restore-old'\n"+
				"         and 'cancel' cannot bring them back. Have the security officer reload the previous\n"+
				"         master key, or restore the keys from a backup.\n",
				sl.Slot, sl.Token, sl.Lost, plural(sl.Lost, "OBJECT IS", "OBJECTS ARE"))
		}
	}
	return b.String()
}
