package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// State is the state of an operation. The numbers are upstream's, so logs
// and habits carry over.
type State uint8

// The states.
const (
	Initial       State = 0
	Reenciphering State = 10
	Reenciphered  State = 11
	Finalizing    State = 20
	Canceling     State = 30
	Error         State = 100
)

var stateNames = map[State]string{
	Initial: "INITIAL", Reenciphering: "REENCIPHERING", Reenciphered: "REENCIPHERED",
	Finalizing: "FINALIZING", Canceling: "CANCELING", Error: "ERROR",
}

// String is the state's upper-case name.
func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("STATE(%d)", uint8(s))
}

// Valid reports whether s is a defined state.
func (s State) Valid() bool { _, ok := stateNames[s]; return ok }

// Text is what `list` prints for the state.
func (s State) Text() string {
	switch s {
	case Initial:
		return "Initial"
	case Reenciphering:
		return "Re-enciphering of key objects ongoing"
	case Reenciphered:
		return "Key objects have been re-enciphered,\nnew master key(s) can now be set/activated"
	case Finalizing:
		return "Finalizing"
	case Canceling:
		return "Canceling"
	case Error:
		return "Finalizing or canceling has errored"
	}
	return "Unknown"
}

// MarshalText encodes the name.
func (s State) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes the name.
func (s *State) UnmarshalText(b []byte) error {
	for v, n := range stateNames {
		if string(b) == n {
			*s = v
			return nil
		}
	}
	return errclass.New(errclass.DataLoss, "unknown operation state %q", b)
}

// transitions lists the moves the state machine allows. Every state has a
// way out: cancel completes INITIAL and REENCIPHERING, finalize or cancel
// REENCIPHERED, finalize FINALIZING, cancel CANCELING, and ERROR goes back
// to the state it came from (see [Op.CanMove]). Removal of the file (done,
// or rolled back) is not a state and is always allowed.
var transitions = map[State][]State{
	Initial:       {Reenciphering, Canceling},
	Reenciphering: {Reenciphered, Canceling},
	Reenciphered:  {Finalizing, Canceling},
	Finalizing:    {Error},
	Canceling:     {Error},
	Error:         {Finalizing, Canceling},
}

// CanMove reports whether the state machine allows from → to. Staying in
// the same state (a resumed pass re-saving progress) is allowed. It does not
// know where an ERROR came from; [Op.CanMove] does.
func CanMove(from, to State) bool {
	return from == to || slices.Contains(transitions[from], to)
}

// CanMove reports whether o may move to state to. An operation in ERROR
// may only go back to the state it failed in: a failed cancel has already
// dropped blobs under the new master key, so finalizing it would lose keys,
// and a failed finalize has already made new blobs current, so canceling it
// would.
func (o *Op) CanMove(to State) bool {
	if !CanMove(o.State, to) {
		return false
	}
	if o.State == Error && to != Error {
		if from, ok := o.failedIn(); ok {
			return to == from
		}
	}
	return true
}

// failedIn is the state the operation was in when it moved to ERROR.
func (o *Op) failedIn() (State, bool) {
	for i := len(o.Transitions) - 1; i >= 0; i-- {
		if st := o.Transitions[i].State; st != Error {
			return st, st == Finalizing || st == Canceling
		}
	}
	return 0, false
}

// Completes lists the commands that complete the operation from where it
// stands. Only REENCIPHERED offers a choice (finalize once every APQN has
// the new master key set, cancel before any has); every other state has
// exactly one way out, so a person following `list` cannot pick the wrong
// one after a crash.
func (o *Op) Completes() []Action {
	switch o.State {
	case Initial, Reenciphering, Canceling:
		return []Action{ActCancel}
	case Reenciphered:
		return []Action{ActFinalize, ActCancel}
	case Finalizing:
		return []Action{ActFinalize}
	case Error:
		switch from, ok := o.failedIn(); {
		case ok && from == Finalizing:
			return []Action{ActFinalize}
		case ok && from == Canceling:
			return []Action{ActCancel}
		}
		return []Action{ActFinalize, ActCancel}
	}
	return nil
}

// SetLosesKeys reports whether setting (activating) the new master keys now
// would lose keys: some key objects have no blob under the new master key,
// because the reencipher is not complete or a cancel has begun dropping
// them.
func (o *Op) SetLosesKeys() bool {
	switch o.State {
	case Initial, Reenciphering, Canceling:
		return true
	case Error:
		from, ok := o.failedIn()
		return !ok || from == Canceling
	}
	return false
}

// Steps record the step a command is about to take (intent before action):
// the step is saved before the step begins, so after a kill at any instant
// the file names the step that was in progress. A resumed command redoes
// every step of its state; each is idempotent.
const (
	// StepFirstPass: finalize's or cancel's first token-object pass.
	StepFirstPass = "first-pass"
	// StepBroadcast: the event to every other process (session objects).
	StepBroadcast = "broadcast"
	// StepSecondPass: finalize's or cancel's second token-object pass, for
	// objects other processes created during the first.
	StepSecondPass = "second-pass"
	// StepPass: reencipher's token-object pass, and the pass of the
	// automatic cancel after a failed reencipher.
	StepPass = "token-pass"
)

// StepText describes a step for `list`.
func StepText(step string) string {
	switch step {
	case StepFirstPass:
		return "first pass over the token objects"
	case StepBroadcast:
		return "telling every running process (session objects)"
	case StepSecondPass:
		return "second pass over the token objects"
	case StepPass:
		return "pass over the token objects"
	}
	return step
}

// Slot is one token affected by an operation, with the master key patterns
// it held before the change (what finalize retires and cancel keeps).
type Slot struct {
	ID        uint                       `json:"id"`
	Label     string                     `json:"label"`
	Serial    string                     `json:"serial"`
	TokenType string                     `json:"token_type"` // "cca" or "ep11"
	Current   map[mkvp.Type]mkvp.Pattern `json:"current"`
	Objects   int                        `json:"objects,omitempty"` // token objects handled by the last pass
}

// Transition records when an operation entered a state.
type Transition struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
}

// Op is one master key change operation as stored on disk.
type Op struct {
	ID    ID    `json:"id"`
	State State `json:"state"`
	// APQNs are the adapter domains whose master keys change.
	APQNs apqn.List `json:"apqns"`
	// New holds the pattern of the new master key per type.
	New map[mkvp.Type]mkvp.Pattern `json:"new"`
	// Slots are the affected tokens; empty until the queries passed.
	Slots []Slot `json:"slots"`
	// UID is the user who started the operation.
	UID int `json:"uid"`
	// Gen counts the writes of the file (1 when created). Of the file and
	// its copy, the valid one with the higher generation wins.
	Gen uint64 `json:"gen,omitempty"`
	// Step names the step in progress, recorded before it begins (one of
	// the Step constants; format version 1 recorded the last completed
	// step instead).
	Step string `json:"step,omitempty"`
	// LastError is the failure that put the operation into ERROR.
	LastError   string       `json:"last_error,omitempty"`
	Transitions []Transition `json:"transitions"`
}

// Types returns the master key types of the operation in CLI order.
func (o *Op) Types() []mkvp.Type {
	var out []mkvp.Type
	for _, t := range mkvp.Types() {
		if _, ok := o.New[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

// Created is when the operation was created (zero if unknown).
func (o *Op) Created() time.Time {
	if len(o.Transitions) == 0 {
		return time.Time{}
	}
	return o.Transitions[0].At
}

// Updated is when the operation last changed state.
func (o *Op) Updated() time.Time {
	if len(o.Transitions) == 0 {
		return time.Time{}
	}
	return o.Transitions[len(o.Transitions)-1].At
}

// Move changes the state, enforcing the state machine.
func (o *Op) Move(to State, now time.Time) error {
	if !o.CanMove(to) {
		return errclass.New(errclass.FailedPrecondition,
			"operation %s cannot move from %s to %s", o.ID, o.State, to)
	}
	if o.State != to || len(o.Transitions) == 0 {
		o.Transitions = append(o.Transitions, Transition{State: to, At: now.UTC()})
	}
	o.State = to
	return nil
}

// Clone returns a deep copy.
func (o *Op) Clone() *Op {
	c := *o
	c.APQNs = slices.Clone(o.APQNs)
	c.New = maps.Clone(o.New)
	c.Transitions = slices.Clone(o.Transitions)
	c.Slots = make([]Slot, len(o.Slots))
	for i, s := range o.Slots {
		s.Current = maps.Clone(s.Current)
		c.Slots[i] = s
	}
	if o.Slots == nil {
		c.Slots = nil
	}
	return &c
}

// Validate checks the invariants every stored operation satisfies.
func (o *Op) Validate() error {
	bad := func(format string, args ...any) error {
		return errclass.New(errclass.InvalidArgument, "operation %q: %s", o.ID, fmt.Sprintf(format, args...))
	}
	if _, err := ParseID(string(o.ID)); err != nil {
		return err
	}
	if !o.State.Valid() {
		return bad("unknown state %d", uint8(o.State))
	}
	if len(o.APQNs) == 0 {
		return bad("no APQNs")
	}
	seen := map[apqn.ID]bool{}
	for _, q := range o.APQNs {
		if seen[q] {
			return bad("APQN %s listed twice", q)
		}
		seen[q] = true
	}
	if len(o.New) == 0 {
		return bad("no new master key patterns")
	}
	for t, p := range o.New {
		if !t.Valid() || p.Len() != t.Size() {
			return bad("%s pattern %q has %d bytes, want %d", t, p, p.Len(), t.Size())
		}
	}
	slots := map[uint]bool{}
	for _, s := range o.Slots {
		if slots[s.ID] {
			return bad("slot %d listed twice", s.ID)
		}
		slots[s.ID] = true
		for t, p := range s.Current {
			if !t.Valid() || p.Len() != t.Size() {
				return bad("slot %d %s pattern %q has %d bytes", s.ID, t, p, p.Len())
			}
		}
	}
	return nil
}

// Conflict is one (APQN, MK type) pair two operations share.
type Conflict struct {
	Other ID
	APQN  apqn.ID
	Type  mkvp.Type
}

func (c Conflict) String() string {
	return fmt.Sprintf("operation '%s' also affects APQN %s and MK type '%s'", c.Other, c.APQN, c.Type.LongName())
}

// Conflicts lists the pairs o shares with other. Operations may run side
// by side only on disjoint APQNs or disjoint master key types.
func (o *Op) Conflicts(other *Op) []Conflict {
	var out []Conflict
	for _, q := range o.APQNs {
		if !other.APQNs.Contains(q) {
			continue
		}
		for _, t := range o.Types() {
			if _, ok := other.New[t]; ok {
				out = append(out, Conflict{Other: other.ID, APQN: q, Type: t})
			}
		}
	}
	return out
}

// ConflictError is returned when a new operation intersects active ones.
type ConflictError struct {
	Conflicts []Conflict
}

func (e *ConflictError) Error() string {
	var b bytes.Buffer
	b.WriteString("intersecting master key change operations are active")
	for _, c := range e.Conflicts {
		b.WriteString("; ")
		b.WriteString(c.String())
	}
	return b.String()
}

// Is makes errors.Is(err, errclass.Conflict) true.
func (e *ConflictError) Is(target error) bool { return target == errclass.Conflict }

// ErrClass classifies the error for errclass.Of.
func (e *ConflictError) ErrClass() errclass.Class { return errclass.Conflict }

// The file format: a magic line with the format version, the operation as
// JSON, and a trailer with the SHA-256 of everything before it. Anything
// else is not an operation file. Version 2 added the generation and
// records steps before they begin; version 1 files are still read.
const (
	magic         = "pkcshsm-mk-change-op"
	formatVersion = 2
	oldestVersion = 1
	sumPrefix     = "\nsha256:"
)

// Encode renders o in the file format. o must be valid.
func Encode(o *Op) ([]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	body, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return nil, errclass.New(errclass.Internal, "failed to encode operation %s: %w", o.ID, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d\n", magic, formatVersion)
	b.Write(body)
	sum := sha256.Sum256(b.Bytes())
	b.WriteString(sumPrefix)
	b.WriteString(hex.EncodeToString(sum[:]))
	b.WriteString("\n")
	return b.Bytes(), nil
}

// Decode parses and checks an operation file. Every failure is of class
// DataLoss: the bytes came from disk, not from a person.
func Decode(raw []byte) (*Op, error) {
	fail := func(format string, args ...any) (*Op, error) {
		return nil, errclass.New(errclass.DataLoss, "not a valid operation file: "+format, args...)
	}
	head, rest, ok := bytes.Cut(raw, []byte("\n"))
	if !ok {
		return fail("no header line")
	}
	var ver int
	if n, err := fmt.Sscanf(string(head), magic+" %d", &ver); n != 1 || err != nil || string(head) != fmt.Sprintf("%s %d", magic, ver) {
		return fail("header %q is not %q", truncate(head), magic+" <version>")
	}
	if ver < oldestVersion || ver > formatVersion {
		return fail("format version %d is not supported (this program reads versions %d to %d)", ver, oldestVersion, formatVersion)
	}
	i := bytes.LastIndex(rest, []byte(sumPrefix))
	if i < 0 {
		return fail("checksum trailer missing (file truncated?)")
	}
	body, trailer := rest[:i], rest[i+len(sumPrefix):]
	want, ok := bytes.CutSuffix(trailer, []byte("\n"))
	if !ok || len(want) != 64 {
		return fail("checksum trailer malformed")
	}
	sum := sha256.Sum256(raw[:len(head)+1+len(body)])
	if hex.EncodeToString(sum[:]) != string(want) {
		return fail("checksum mismatch (file damaged)")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var o Op
	if err := dec.Decode(&o); err != nil {
		return fail("%v", err)
	}
	if dec.More() {
		return fail("trailing data after the operation")
	}
	if ver == 1 && o.Gen != 0 {
		return fail("format version 1 has no generation")
	}
	if err := o.Validate(); err != nil {
		return nil, errclass.As(errclass.DataLoss, err)
	}
	return &o, nil
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}
