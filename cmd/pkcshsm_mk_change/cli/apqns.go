package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/state"
)

// checkAPQNs compares the operation's APQNs with the AP bus. An APQN that
// is not on the bus is refused by every action: a typo in --apqns must not
// become an operation that is later "finalized" on an adapter nobody
// checked. One that is offline or checkstopped is a warning at reencipher
// and cancel (the tokens that use it refuse on their own), and refused at
// finalize, where the new master key must be verified on every APQN.
func (s *session) checkAPQNs(ctx context.Context, op *state.Op, a state.Action) error {
	queues, err := s.tokens.Queues(ctx)
	if err != nil {
		return fmt.Errorf("failed to list the APQNs on the AP bus: %w", err)
	}
	online := map[apqn.ID]bool{}
	for _, q := range queues {
		online[q.ID] = q.Online
	}
	var unknown, offline []string
	for _, q := range op.APQNs {
		up, ok := online[q]
		switch {
		case !ok:
			unknown = append(unknown, q.String())
		case !up:
			offline = append(offline, q.String())
		}
	}
	if len(unknown) > 0 {
		return errclass.Newh(errclass.InvalidArgument,
			"lszcrypt lists the APQNs (on the simulator: hsmsim show); correct --apqns",
			"%s %s %s not on the AP bus", plural(len(unknown), "APQN", "APQNs"), strings.Join(unknown, ", "), plural(len(unknown), "is", "are"))
	}
	if len(offline) == 0 {
		return nil
	}
	list := strings.Join(offline, ", ")
	what := plural(len(offline), "APQN", "APQNs")
	is := plural(len(offline), "is", "are")
	if a == state.ActFinalize {
		return errclass.Newh(errclass.Unavailable,
			"bring the APQNs online (lszcrypt; on the simulator: hsmsim online), then run finalize again",
			"%s %s %s offline or checkstopped: the new master key cannot be verified there", what, list, is)
	}
	clierr.Warn(s.errw, Prog, "%s %s %s offline or checkstopped; tokens that use %s cannot take part",
		what, list, is, plural(len(offline), "it", "them"))
	return nil
}
