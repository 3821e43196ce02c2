package event

import (
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Version is the protocol version this package speaks. Both ends must
// speak the same version; there is no negotiation.
const Version = 2

// Limits. They bound what a peer can make the other side hold in memory.
const (
	// MaxFrame is the largest frame body accepted or sent. It is larger
	// than MaxPayload because an account lists every process with its
	// tokens: about 200 bytes per process and token, so a few thousand
	// processes fit.
	MaxFrame = 4 << 20
	// MaxPayload is the largest event payload.
	MaxPayload = 1 << 20
	// MaxTokens is the largest number of tokens one process may announce.
	MaxTokens = 256
	// maxText bounds free-text fields (error messages).
	maxText = 4096
	// maxName bounds names, ids, labels, serials and event types.
	maxName = 256
)

// Kind names the body of a [Message].
type Kind string

// The message kinds. Each is sent in one direction only.
const (
	KindHello         Kind = "hello"          // agent → daemon, first frame
	KindWelcome       Kind = "welcome"        // daemon → agent, answer to hello
	KindEvent         Kind = "event"          // daemon → agent
	KindReply         Kind = "reply"          // agent → daemon, one per event
	KindTokens        Kind = "tokens"         // agent → daemon, its token list changed
	KindBroadcast     Kind = "broadcast"      // admin → daemon
	KindAccount       Kind = "account"        // daemon → admin, answer to broadcast
	KindStatusRequest Kind = "status_request" // admin → daemon
	KindStatus        Kind = "status"         // daemon → admin
	KindError         Kind = "error"          // daemon → agent or admin, then usually close
)

// Message is the envelope of every frame. Exactly the field named by Kind is
// set; [Decode] and [Encode] refuse anything else.
type Message struct {
	V    int  `json:"v"`
	Kind Kind `json:"kind"`

	Hello         *Hello         `json:"hello,omitempty"`
	Welcome       *Welcome       `json:"welcome,omitempty"`
	Event         *Event         `json:"event,omitempty"`
	Reply         *Reply         `json:"reply,omitempty"`
	Tokens        *TokenUpdate   `json:"tokens,omitempty"`
	Broadcast     *Broadcast     `json:"broadcast,omitempty"`
	Account       *Account       `json:"account,omitempty"`
	StatusRequest *StatusRequest `json:"status_request,omitempty"`
	Status        *Status        `json:"status,omitempty"`
	Error         *Error         `json:"error,omitempty"`
}

// TokenType is the kind of a token that takes part in master key changes.
type TokenType string

// The token types.
const (
	CCA  TokenType = "cca"
	EP11 TokenType = "ep11"
)

// Token identifies one token loaded in one process. Tokens are addressed by
// serial; the label is for people.
type Token struct {
	Slot   uint32    `json:"slot"`
	Label  string    `json:"label"`
	Serial string    `json:"serial"`
	Type   TokenType `json:"type"`
}

// Hello is the first frame an agent sends. PID must be the pid the kernel
// reports for the connection (SO_PEERCRED); the daemon refuses a mismatch.
type Hello struct {
	PID     int32   `json:"pid"`
	UID     uint32  `json:"uid"`
	Program string  `json:"program"`
	Tokens  []Token `json:"tokens,omitempty"`
}

// TokenUpdate replaces the token list a process announced in its Hello. It
// affects broadcasts made after the daemon has read it.
type TokenUpdate struct {
	Tokens []Token `json:"tokens"`
}

// Welcome answers a Hello. PID is the caller's pid as the daemon sees it
// (equal to Hello.PID unless pid namespaces differ, which the daemon
// refuses today); Conn is the daemon's id for this connection.
type Welcome struct {
	Conn uint64 `json:"conn"`
	PID  int32  `json:"pid"`
}

// Event is what the daemon relays to processes. The admin leaves ID empty
// (the daemon assigns it) and may leave Timeout zero (the daemon's default
// timeout applies).
type Event struct {
	ID      string  `json:"id,omitempty"`
	Type    string  `json:"type"`
	OpID    string  `json:"op_id,omitempty"`
	Payload []byte  `json:"payload,omitempty"`
	Timeout Timeout `json:"timeout_ms,omitempty"`
	Target  *Target `json:"target,omitempty"`
}

// Timeout is how long the receiver of a frame has, counted from when it
// reads the frame; it crosses the socket in milliseconds. Each side turns
// it into a deadline on its own monotonic clock ([Timeout.Deadline]), so
// a step of the wall clock on either side (NTP, an operator's date
// command) neither stretches nor cuts a broadcast, and the two sides never
// compare their clocks.
type Timeout int64

// MaxTimeout bounds a Timeout on the wire (a day); the daemon caps it
// further by its configuration.
const MaxTimeout Timeout = 24 * 60 * 60 * 1000

// TimeoutOf converts d to a wire timeout, rounding up to a millisecond
// so a short positive duration never becomes "none".
func TimeoutOf(d time.Duration) Timeout {
	if d <= 0 {
		return 0
	}
	return Timeout((d + time.Millisecond - 1) / time.Millisecond)
}

// Duration is t as a time.Duration.
func (t Timeout) Duration() time.Duration { return time.Duration(t) * time.Millisecond }

// Deadline is the deadline t gives when its frame was read at now; now
// must come from time.Now, so the deadline carries the monotonic clock
// reading and time.Until measures on it.
func (t Timeout) Deadline(now time.Time) time.Time { return now.Add(t.Duration()) }

// Target narrows which processes receive an event. The daemon filters by it
// (only matching processes get the event and appear in the account) and
// passes it on, so a handler can tell which of its tokens are addressed
// ([Target.MatchToken]). The zero Target, like a nil one, matches
// everything.
type Target struct {
	// PIDs, if not empty, lists the only processes addressed.
	PIDs []int32 `json:"pids,omitempty"`
	// ExcludePIDs lists processes never addressed.
	ExcludePIDs []int32 `json:"exclude_pids,omitempty"`
	// ExcludeCaller asks the daemon to add the admin's own pid (from its
	// peer credentials) to ExcludePIDs: the admin tool handles its own
	// tokens in-process.
	ExcludeCaller bool `json:"exclude_caller,omitempty"`
	// Types, if not empty, addresses only tokens of these types.
	Types []TokenType `json:"types,omitempty"`
	// Serials, if not empty, addresses only tokens with these serials.
	Serials []string `json:"serials,omitempty"`
	// Tokens, if not empty, addresses only tokens whose serial and label
	// both equal one of these. The admin tool fills it with the tokens it
	// read from the token stores itself, so a process that claims tokens
	// that do not exist (or a real serial under another label) is not
	// addressed: a claim is never trusted unchecked.
	Tokens []TokenID `json:"tokens,omitempty"`
}

// TokenID names an existing token by serial and label, as read from its
// store. Both compare without trailing blanks (PKCS#11 pads them).
type TokenID struct {
	Serial string `json:"serial"`
	Label  string `json:"label"`
}

// Outcome is what happened to one token for one event.
type Outcome string

// The token outcomes.
const (
	Affected    Outcome = "affected"
	NotAffected Outcome = "not affected"
	Failed      Outcome = "failed"
)

// TokenResult is one token's answer to an event.
type TokenResult struct {
	Slot   uint32  `json:"slot"`
	Serial string  `json:"serial"`
	Result Outcome `json:"outcome"`
	// Objects counts the objects the token handled; ObjectsFailed those it
	// could not.
	Objects       int `json:"objects,omitempty"`
	ObjectsFailed int `json:"objects_failed,omitempty"`
	// Error and Class describe a failure (Result == Failed).
	Error string         `json:"error,omitempty"`
	Class errclass.Class `json:"class,omitempty"`
}

// Reply is a process's answer to one event.
type Reply struct {
	EventID string        `json:"event_id"`
	Tokens  []TokenResult `json:"tokens,omitempty"`
}

// Broadcast asks the daemon to relay Event to every addressed process and
// to answer with an [Account] once every process has answered, died, or
// the deadline has passed.
type Broadcast struct {
	Event Event `json:"event"`
}

// ProcessOutcome is what happened to one process for one event.
type ProcessOutcome string

// The process outcomes.
const (
	// Replied: the process answered; see its token results.
	Replied ProcessOutcome = "replied"
	// TimedOut: the process was connected but did not answer by the deadline.
	TimedOut ProcessOutcome = "timed out"
	// Disconnected: the process went away before answering.
	Disconnected ProcessOutcome = "disconnected"
)

// ProcessResult is one process's line in an [Account].
type ProcessResult struct {
	PID     int32  `json:"pid"`
	UID     uint32 `json:"uid"`
	Program string `json:"program"`
	// Command is the kernel's name for the process (/proc/PID/comm, read
	// by the daemon when the process connected); Program is only what the
	// process says about itself.
	Command string         `json:"command,omitempty"`
	Tokens  []Token        `json:"tokens,omitempty"`
	Outcome ProcessOutcome `json:"outcome"`
	Results []TokenResult  `json:"results,omitempty"`
}

// Account answers a [Broadcast]: one line per addressed process, in order
// of connection.
type Account struct {
	EventID string `json:"event_id"`
	Type    string `json:"type"`
	// Timeout is the time the daemon gave the processes to answer.
	Timeout   Timeout         `json:"timeout_ms,omitempty"`
	Processes []ProcessResult `json:"processes,omitempty"`
}

// StatusRequest asks the daemon for its [Status].
type StatusRequest struct{}

// Process describes one connected application process.
type Process struct {
	Conn    uint64  `json:"conn"`
	PID     int32   `json:"pid"`
	UID     uint32  `json:"uid"`
	Program string  `json:"program"`
	Command string  `json:"command,omitempty"` // as in [ProcessResult]
	Tokens  []Token `json:"tokens,omitempty"`
}

// Status describes the daemon and its connected processes.
type Status struct {
	PID       int32     `json:"pid"`
	Pending   int       `json:"pending"`
	Processes []Process `json:"processes,omitempty"`
}

// Error is a refusal or failure the daemon reports to a peer.
type Error struct {
	Class   errclass.Class `json:"class"`
	Message string         `json:"message"`
	Hint    string         `json:"hint,omitempty"`
}
