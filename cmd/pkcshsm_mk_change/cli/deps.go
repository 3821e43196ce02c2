// Package cli is the pkcshsm_mk_change command: it initiates, lists,
// finalizes and cancels concurrent HSM master key changes.
//
// The command works with three things, all injected through [Deps] so tests
// can replace them: the token library in this process ([Tokens]: slots,
// queries against the adapters, USER login, token-object passes), the
// daemon's admin socket ([Broadcaster]: tells every other process to handle
// its session objects and reports per process how it went), and the
// operation directory (package state), which is the source of truth that
// every process also follows on its own.
//
// # Recovery
//
// Intent before action: the state and the step about to be taken are
// saved before any step that changes key objects (finalize and cancel move
// to FINALIZING/CANCELING before their first pass), and every step is
// idempotent, so a command killed at any point is completed by the one
// command list names: finalize resumes FINALIZING and a failed finalize,
// cancel resumes INITIAL, REENCIPHERING, CANCELING and a failed cancel,
// and REENCIPHERED takes either. A failure during reencipher cancels
// automatically and names the slot or process that failed. While a
// reencipher, finalize or cancel runs it holds the operation's claim, so a
// second command on the same operation is refused with its pid.
package cli

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

// Slot describes one configured slot as the tool sees it.
type Slot struct {
	ID      uint
	Present bool // false: the token could not be loaded in this process
	Label   string
	Serial  string
	Type    string // "cca" or "ep11"
	// Reason says why a token is not present.
	Reason string
}

// QueryResult is a token's answer to the checks before an action.
type QueryResult struct {
	// Affected is false when the operation does not concern the token.
	Affected bool
	// Current holds the token's current master key patterns for the
	// operation's types (filled by the reencipher query).
	Current map[mkvp.Type]mkvp.Pattern
}

// CensusResult is a token's answer to the readiness census
// (Tokens.Census): what activating the new patterns does to its token
// objects.
type CensusResult struct {
	Affected bool
	// Keys counts the key objects under a master key type being changed,
	// MissingNew those without a blob under the new pattern (lost by the
	// activation), Unrecorded and Unreadable the part of MissingNew whose
	// master key could not be read without the PIN, Lost the keys under
	// master keys no APQN of the token has in any register.
	Keys, MissingNew, Unrecorded, Unreadable, Lost int
}

// LastPass is a token store's journal entry: which operation and action
// last committed a page of a pass there, and whether that pass completed.
type LastPass struct {
	Op     state.ID
	Action string
	Done   bool
}

// Progress is called during a token-object pass.
type Progress func(done, total int)

// Tokens is the token library as the tool uses it, in its own process.
type Tokens interface {
	// Slots lists every configured slot in slot order.
	Slots(ctx context.Context) ([]Slot, error)
	// Query checks, against the adapters and the token configuration,
	// whether slot can take part in action a of op. It changes nothing.
	Query(ctx context.Context, slot uint, op *state.Op, a state.Action) (QueryResult, error)
	// Login logs the USER in on slot.
	Login(ctx context.Context, slot uint, pin []byte) error
	// Check verifies slot, the USER logged in, before anything is
	// recorded: its store (integrity, schema, data key) and its key
	// objects. It returns the first few key objects op cannot re-encipher
	// (LOST: under a master key that is neither current[type] nor the
	// new one) and their number. It changes nothing.
	Check(ctx context.Context, slot uint, op *state.Op, current map[mkvp.Type]mkvp.Pattern) (lost []string, n int, err error)
	// CheckStore is the part of Check that needs no login: the store's
	// integrity, schema version and data key wrap.
	CheckStore(ctx context.Context, slot uint) error
	// Pass applies action a of op to every token object of slot and
	// returns how many key objects it changed. It is idempotent.
	Pass(ctx context.Context, slot uint, op *state.Op, a state.Action, progress Progress) (int, error)
	// Census counts, without a PIN, the token objects of slot that have no
	// blob under the patterns in newp (readiness to activate them on
	// apqns). Affected is false when the change does not concern the slot.
	Census(ctx context.Context, slot uint, apqns apqn.List, newp map[mkvp.Type]mkvp.Pattern) (CensusResult, error)
	// LastPass reads slot's journal: the master key change pass that
	// touched its token objects last (ok false: none ever did).
	LastPass(ctx context.Context, slot uint) (p LastPass, ok bool, err error)
	// Queues lists the APQNs on the AP bus with their state.
	Queues(ctx context.Context) ([]hsm.QueueInfo, error)
	// Close logs out and releases the tokens.
	Close() error
}

// Broadcaster sends an event to every other process through the daemon.
type Broadcaster interface {
	Broadcast(ctx context.Context, ev event.Event) (event.Account, error)
	Close() error
}

// Deps are the command's connections to the outside world.
type Deps struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Layout         paths.Layout
	// OpenTokens loads the token library in this process, configured by
	// configPath (pkcshsm.conf).
	OpenTokens func(ctx context.Context, log zerolog.Logger, configPath string) (Tokens, error)
	// DialAdmin connects to the daemon's admin socket. It returns a nil
	// Broadcaster (and no error) when the configuration (configPath)
	// disables event support.
	DialAdmin func(ctx context.Context, socket, configPath string) (Broadcaster, error)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// UserName names the invoking user in the missing-token warning.
	UserName string
	// Signals delivers SIGINT and SIGTERM (nil: never interrupted).
	Signals <-chan os.Signal
}
