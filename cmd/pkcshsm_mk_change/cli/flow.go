package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/pinentry"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

func exitWith(w io.Writer, err error) int {
	clierr.Print(w, Prog, err)
	return clierr.ExitCode(err)
}

// noArgs refuses positional arguments with the tool's message.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("see '%s %s -h'", Prog, cmd.Name()),
			"unrecognized argument '%s'", args[0])
	}
	return nil
}

func (c *command) openDir(readOnly bool) (*state.Dir, error) {
	return state.Open(c.opts.stateDir, state.Options{Logger: c.log, ReadOnly: readOnly, Now: c.deps.Now,
		Waiting: func(msg string) {
			if c.deps.Stderr != nil {
				clierr.Warn(c.deps.Stderr, Prog, "%s", msg)
			}
		}})
}

// session is one run of reencipher, finalize or cancel: the tokens, the
// daemon connection and the person at the terminal.
type session struct {
	*command
	cmd    *cobra.Command
	out    io.Writer
	errw   io.Writer
	ask    *pinentry.Reader
	tokens Tokens
	bc     Broadcaster // nil: event support disabled
	// errTerminal: standard error is a terminal, so progress may redraw
	// one line with \r.
	errTerminal bool
	// changed counts, per slot, the secure keys the passes of this
	// command changed (summary prints them).
	changed map[uint]int
	// dryRunProblem is what a dry run found that does not stop its other
	// checks (a read-only operation directory); it is its result.
	dryRunProblem error
	silent        []int32 // processes that did not answer a step of this run (stuck.go)
	failed        []int32 // processes that answered a reencipher step with a failure (stuck.go)
}

func (c *command) newSession(ctx context.Context, cmd *cobra.Command, withDaemon bool) (*session, error) {
	s := &session{command: c, cmd: cmd, out: cmd.OutOrStdout(), errw: cmd.ErrOrStderr(),
		ask:         pinentry.NewWith(cmd.InOrStdin(), cmd.ErrOrStderr(), pinentry.Options{Interrupt: c.intr.Done()}),
		errTerminal: isTerminal(cmd.ErrOrStderr())}
	if c.deps.OpenTokens == nil {
		return nil, errclass.New(errclass.Internal, "no token library configured")
	}
	tok, err := c.deps.OpenTokens(ctx, c.log, c.opts.config)
	if err != nil {
		return nil, fmt.Errorf("failed to load the token library: %w", err)
	}
	s.tokens = tok
	if withDaemon && c.deps.DialAdmin != nil {
		bc, err := c.deps.DialAdmin(ctx, c.opts.socket, c.opts.config)
		if err != nil {
			tok.Close()
			return nil, errclass.WithHint(fmt.Errorf("failed to connect to the pkcshsmd admin socket %s: %w", c.opts.socket, err),
				"start the daemon (systemctl start pkcshsmd) and run the command as root or a member of the admin group")
		}
		s.bc = bc
	}
	return s, nil
}

func (s *session) close() {
	if s.bc != nil {
		s.bc.Close()
	}
	if err := s.tokens.Close(); err != nil {
		s.log.Warn().Err(err).Msg("failed to close the token library")
	}
}

// slotsFor lists the slots, warning about absent tokens. With confirm, the
// person must agree to go on when a token is missing.
func (s *session) slotsFor(ctx context.Context, confirm bool) ([]Slot, error) {
	slots, err := s.tokens.Slots(ctx)
	if err != nil {
		return nil, err
	}
	if len(slots) == 0 {
		return nil, errclass.Newh(errclass.FailedPrecondition, "configure the tokens in pkcshsm.conf",
			"no slots are configured")
	}
	var missing []Slot
	for _, sl := range slots {
		if !sl.Present {
			missing = append(missing, sl)
		}
	}
	if len(missing) > 0 && confirm {
		var b strings.Builder
		b.WriteString("WARNING: The following slots have no token present:\n")
		for _, sl := range missing {
			fmt.Fprintf(&b, "  Slot %d", sl.ID)
			if sl.Reason != "" {
				fmt.Fprintf(&b, " (%s)", sl.Reason)
			}
			b.WriteString("\n")
		}
		if slices.Contains([]string{"info", "devel", "debug"}, s.opts.verbose) {
			// The reasons in general, beyond the one per slot above.
			fmt.Fprintf(&b, `Reasons for a token not being present can be that a prereq of the token
is not fulfilled, or the current user '%s' has no permissions to use
the token, i.e. because it is not a member of the token's user group.

`, s.deps.UserName)
		}
		b.WriteString(`ATTENTION: If you start a concurrent master key change operation while not
all expected tokens are present, the key objects of those tokens may be lost,
if the token would be affected by the master key change.
`)
		// The warning goes with the question, where the person answering
		// sees it.
		fmt.Fprint(s.ask.Prompts(), b.String())
		ok, err := s.ask.Confirm("Continue [y/N]? ")
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errclass.New(errclass.Aborted, "aborted by user")
		}
	}
	return slots, nil
}

// query asks every present token whether and how it takes part in action
// a. It returns the affected slots in slot order with their answers.
func (s *session) query(ctx context.Context, slots []Slot, op *state.Op, a state.Action, what string) ([]Slot, map[uint]QueryResult, error) {
	results := map[uint]QueryResult{}
	var affected []Slot
	var failed []error
	for _, sl := range slots {
		if !sl.Present {
			continue
		}
		r, err := s.tokens.Query(ctx, sl.ID, op, a)
		if err != nil {
			failed = append(failed, fmt.Errorf("Token in slot %d is unable to perform the %s: %w", sl.ID, what, err))
			continue
		}
		if r.Affected {
			affected = append(affected, sl)
			results[sl.ID] = r
		}
	}
	if len(failed) > 0 {
		// One error, printed once: the summary, then one line per token.
		return nil, nil, errclass.As(errclass.Of(failed[0]),
			fmt.Errorf("at least one token is unable to perform the %s, aborting:\n  %w", what,
				indented{errors.Join(failed...)}))
	}
	return affected, results, nil
}

// login asks for and checks the USER PIN of every slot.
func (s *session) login(ctx context.Context, slots []Slot) error {
	if s.ask.Interactive() {
		// What stdout showed before the question reaches the screen
		// first, also through a pipe.
		drain(s.out)
	}
	for _, sl := range slots {
		pin, err := s.ask.PIN(fmt.Sprintf("Enter the USER PIN for slot %d: ", sl.ID))
		if err != nil {
			return err
		}
		err = s.tokens.Login(ctx, sl.ID, pin)
		clear(pin)
		if err != nil {
			return fmt.Errorf("failed to log in to slot %d: %w", sl.ID, err)
		}
	}
	return nil
}

// passes runs the token-object pass of every slot, in parallel, with
// progress on a terminal. It records the object counts in op.
func (s *session) passes(ctx context.Context, op *state.Op, a state.Action) error {
	var (
		mu     sync.Mutex
		errs   []error
		counts = map[uint]int{}
		done   = map[uint]int{}
		total  = map[uint]int{}
		last   time.Time
		wg     sync.WaitGroup
	)
	show := func(force bool) {
		var d, t int
		for id := range total {
			d, t = d+done[id], t+total[id]
		}
		switch {
		case s.errTerminal && (force || time.Since(last) >= 200*time.Millisecond):
			last = time.Now()
			fmt.Fprintf(s.errw, "\r%d of %d key objects checked", d, t)
		case !s.errTerminal && s.opts.progress && !force:
			fmt.Fprintf(s.errw, "progress: %d of %d key objects checked\n", d, t)
		}
	}
	for _, sl := range op.Slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.tokens.Pass(ctx, sl.ID, op, a, func(d, t int) {
				mu.Lock()
				done[sl.ID], total[sl.ID] = d, t
				show(false)
				mu.Unlock()
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("slot %d (%s): %w", sl.ID, sl.Label, err))
				return
			}
			counts[sl.ID] = n
		}()
	}
	wg.Wait()
	failpoint.Hit("cli." + s.cmd.Name() + ".after-pass-" + a.String())
	if s.errTerminal && len(total) > 0 {
		show(true)
		fmt.Fprintln(s.errw)
	}
	for i := range op.Slots {
		sl := &op.Slots[i]
		sl.Objects = counts[sl.ID]
		// Summed over the passes of this command; summary prints it.
		if s.changed == nil {
			s.changed = map[uint]int{}
		}
		s.changed[sl.ID] += counts[sl.ID]
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return errclass.As(errclass.Of(errs[0]), fmt.Errorf("token-object pass failed: %w", errors.Join(errs...)))
	}
	s.log.Info().Str("op", string(op.ID)).Stringer("action", a).Interface("objects", counts).Msg("token-object pass done")
	return nil
}

// broadcast tells every other process to apply action a to its session
// objects and checks the per-process account. A process that failed or did
// not answer in time fails the step; one that disconnected is reported:
// when it reconnects it reconciles with the operation files.
func (s *session) broadcast(ctx context.Context, op *state.Op, a state.Action) error {
	if s.bc == nil {
		clierr.Warn(s.errw, Prog, "event support is disabled: running applications follow the change from the operation files only")
		return nil
	}
	ev := event.Event{
		Type: a.EventType(),
		OpID: string(op.ID),
		// A duration, not a time of day: the daemon counts it on its
		// own monotonic clock.
		Timeout: event.TimeoutOf(s.opts.timeout),
		Target:  s.target(op, a),
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.timeout+30*time.Second)
	defer cancel()
	failpoint.Hit("cli." + s.cmd.Name() + ".before-broadcast-" + a.String())
	acc, err := s.bc.Broadcast(ctx, ev)
	failpoint.Hit("cli." + s.cmd.Name() + ".after-broadcast-" + a.String())
	if err != nil {
		return fmt.Errorf("failed to send the %s event through pkcshsmd: %w", a, err)
	}
	var failed, gone []string
	replied := 0
	for _, p := range acc.Processes {
		who := p.Who()
		switch p.Outcome {
		case event.Replied:
			replied++
			for _, r := range p.Results {
				if r.Result == event.Failed {
					failed = append(failed, fmt.Sprintf("%s, slot %d: %s", who, r.Slot, r.Error))
				}
			}
			s.repliedProcess(p, a)
		case event.TimedOut:
			if f := s.silentProcess(p, a); f != "" {
				failed = append(failed, f)
			}
		case event.Disconnected:
			gone = append(gone, who)
		default:
			failed = append(failed, fmt.Sprintf("%s: unknown outcome %q", who, p.Outcome))
		}
	}
	if len(gone) > 0 {
		// One warning, however many processes ended (a thousand
		// applications restarted at once is one event, not a screenful).
		s.log.Info().Strs("processes", gone).Msg("disconnected during the step")
		clierr.Warn(s.errw, Prog, "%s disconnected during the %s step (%s); %s up from the operation files when %s",
			plural(len(gone), "1 process", fmt.Sprintf("%d processes", len(gone))), a, sample(gone),
			plural(len(gone), "it catches", "they catch"), plural(len(gone), "it reconnects", "they reconnect"))
	}
	s.log.Info().Str("op", string(op.ID)).Stringer("action", a).Int("processes", len(acc.Processes)).
		Int("replied", replied).Int("failed", len(failed)).Msg("broadcast done")
	if len(failed) > 0 {
		slices.Sort(failed)
		for _, f := range failed {
			fmt.Fprintf(s.errw, "  %s\n", f)
		}
		class := errclass.Aborted
		if strings.Contains(strings.Join(failed, "\n"), "did not answer") {
			class = errclass.DeadlineExceeded
		}
		// The failures are listed above, once; the error sums them up.
		err := errclass.New(class, "%d %s failed the %s step", len(failed), plural(len(failed), "process", "processes"), a)
		if h := s.silentHint(); h != "" && a == state.ActReencipher {
			err = errclass.WithHint(err, h)
		}
		return err
	}
	return nil
}

// tokenTypes lists the token types an operation concerns.
func tokenTypes(op *state.Op) []event.TokenType {
	var out []event.TokenType
	cca := false
	for t := range op.New {
		if t == mkvp.EP11WK {
			out = append(out, event.EP11)
		} else if t != mkvp.CCAASYM {
			cca = true
		}
	}
	if cca {
		out = append(out, event.CCA)
	}
	slices.Sort(out)
	return out
}

// save applies fn to the stored operation and returns what was stored. On
// failure it returns op unchanged (never nil), so a failure path can still
// name the operation and record the error.
func (s *session) save(ctx context.Context, d *state.Dir, op *state.Op, fn func(*state.Op) error) (*state.Op, error) {
	next, err := d.Update(ctx, op.ID, fn)
	if err != nil {
		if errclass.Of(err) == errclass.NotFound {
			err = errclass.Newh(errclass.NotFound,
				"another program removed the operation file; key objects may still carry blobs of this operation "+
					"('pkcshsm keys list' shows them): restore the file from a backup, then run the command 'pkcshsm_mk_change list' advises",
				"the file of master key change operation '%s' vanished while this command was running: %w", op.ID, err)
		}
		return op, &saveError{fmt.Errorf("failed to save master key change operation '%s': %w", op.ID, err), s.opts.stateDir}
	}
	failpoint.Hit(strings.TrimSuffix("cli."+s.cmd.Name()+".after-save-"+next.State.String()+"."+next.Step, "."))
	return next, nil
}

// saveError is a failure to write the operation file: a problem of the
// operation directory (full, not writable, read-only), not of a token.
type saveError struct {
	err error
	dir string
}

func (e *saveError) Error() string { return e.err.Error() }
func (e *saveError) Unwrap() error { return e.err }

// isSaveError reports whether err is (or wraps) a saveError.
func isSaveError(err error) bool {
	var se *saveError
	return errors.As(err, &se)
}

// dirHint is the hint for a saveError: what to fix, then what to run.
func dirHint(err error, then string) string {
	var se *saveError
	if !errors.As(err, &se) {
		return ""
	}
	return fmt.Sprintf("make the operation directory %s writable again (free space, permissions, a read-write mount), then %s", se.dir, then)
}

// summary prints, once the passes of action a are done, one line per slot
// that says how many secure keys the command changed and what that means
// (finalize and cancel make two passes; the line sums them). The count is
// of secure keys (key objects with a blob); the progress counts every key
// object.
func (s *session) summary(op *state.Op, a state.Action) {
	for _, sl := range op.Slots {
		if n := s.changed[sl.ID]; n > 0 {
			fmt.Fprintf(s.out, "Slot %d: %d %s %s.\n", sl.ID, n, plural(n, "secure key", "secure keys"), pastTense[a])
		}
	}
}

// maxNamed is how many processes a summary names.
const maxNamed = 3

// sample names the first maxNamed of whos and counts the rest ("-v info
// logs them all").
func sample(whos []string) string {
	if len(whos) <= maxNamed {
		return strings.Join(whos, ", ")
	}
	return fmt.Sprintf("%s and %d more; -v info lists them all", strings.Join(whos[:maxNamed], ", "), len(whos)-maxNamed)
}
