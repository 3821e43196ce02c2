package cli

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

// Processes that do not answer (STUCK PROCESSES in pkcshsm_mk_change(1)).
//
// No process can veto a change:
//
//   - an event addresses only processes that claim one of the operation's
//     tokens by serial and label as this tool read them from the token
//     stores; made-up claims are not addressed (event.Target.Tokens);
//   - a reencipher step fails when a process does not answer, because that
//     process may keep session keys without a blob under the new master key.
//     The account names it by pid and program; the operator stops it or
//     runs again with --exclude-pid PID, accepting that its session keys
//     fail once the new master key is set;
//   - finalize and cancel steps, the automatic cancel included, never wait
//     on a process that does not answer: such a process settles its own
//     session keys from the operation files when it runs again (the files
//     are the truth), so its silence is a warning. The automatic cancel
//     also skips the processes that did not answer the reencipher step or
//     answered it with a failure: they drop their blobs of the operation
//     themselves once its end is recorded, so neither a stuck nor a
//     hostile process can leave the operation in CANCELING.

// excludeFlag is the option of reencipher, finalize and cancel.
const excludeFlag = "exclude-pid"

// addExcludeFlag adds --exclude-pid to cmd.
func (c *command) addExcludeFlag(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&c.exclude, excludeFlag, nil,
		"do not address this process (pid; repeat or separate by commas): its session keys are left out, see STUCK PROCESSES in pkcshsm_mk_change(1)")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error { return c.parseExcluded() }
}

// parseExcluded validates --exclude-pid.
func (c *command) parseExcluded() error {
	c.excludePIDs = nil
	for _, s := range c.exclude {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || n <= 0 || n > math.MaxInt32 {
			return errclass.Newh(errclass.InvalidArgument,
				"give the pid of a process as the account of the failed step printed it, e.g. --exclude-pid 4711",
				"option --%s: %q is not a process id", excludeFlag, s)
		}
		c.excludePIDs = append(c.excludePIDs, int32(n))
	}
	return nil
}

// target addresses the processes that hold op's tokens, minus the excluded
// ones and, for a cancel, those that did not answer an earlier step of this
// run.
func (s *session) target(op *state.Op, a state.Action) *event.Target {
	t := &event.Target{ExcludeCaller: true, Types: tokenTypes(op)}
	for _, sl := range op.Slots {
		t.Tokens = append(t.Tokens, event.TokenID{Serial: sl.Serial, Label: sl.Label})
	}
	t.ExcludePIDs = slices.Clone(s.excludePIDs)
	if a == state.ActCancel {
		t.ExcludePIDs = append(t.ExcludePIDs, s.silent...)
		t.ExcludePIDs = append(t.ExcludePIDs, s.failed...)
	}
	if len(s.excludePIDs) > 0 {
		clierr.Warn(s.errw, Prog, "not addressing excluded process(es) %s: their session keys are not handled by the %s step",
			pidList(s.excludePIDs), a)
	}
	return t
}

// silentProcess handles a process that did not answer step a by its
// deadline. It returns the failure for a reencipher step and "" otherwise.
func (s *session) silentProcess(p event.ProcessResult, a state.Action) string {
	s.silent = append(s.silent, p.PID)
	if a == state.ActReencipher {
		return fmt.Sprintf("%s did not answer within %s", p.Who(), s.opts.timeout)
	}
	clierr.Warn(s.errw, Prog, "%s did not answer the %s step within %s; it settles its session keys from the operation files when it runs again",
		p.Who(), a, s.opts.timeout)
	return ""
}

// repliedProcess notes a process that answered a reencipher step with a
// failure for one of its tokens.
func (s *session) repliedProcess(p event.ProcessResult, a state.Action) {
	if a != state.ActReencipher {
		return
	}
	for _, r := range p.Results {
		if r.Result == event.Failed {
			s.failed = append(s.failed, p.PID)
			return
		}
	}
}

// silentHint is the way forward after a reencipher step that processes did
// not answer or failed.
func (s *session) silentHint() string {
	pids := slices.Concat(s.silent, s.failed)
	if len(pids) == 0 {
		return ""
	}
	return fmt.Sprintf("a process that does not answer or fails the step keeps session keys without a blob under the new master key: "+
		"make it answer (fix what it reports) or stop it, or, accepting that its session keys fail once the new master key is set, "+
		"run reencipher again with --%s %s (see STUCK PROCESSES in pkcshsm_mk_change(1))",
		excludeFlag, pidList(pids))
}

func pidList(pids []int32) string {
	var out []string
	for _, p := range pids {
		out = append(out, strconv.Itoa(int(p)))
	}
	return strings.Join(out, ",")
}
