package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
)

const versionHint = "run pkcshsmd and the programs using the token library from the same pkcshsm release"

// Wrap puts body (a *Hello, *Welcome, *Event, *Reply, *TokenUpdate, *Broadcast, *Account,
// *StatusRequest, *Status or *Error) into an envelope of the current
// version. It panics on any other type: that is a programming error.
func Wrap(body any) Message {
	m := Message{V: Version}
	switch b := body.(type) {
	case *Hello:
		m.Kind, m.Hello = KindHello, b
	case *Welcome:
		m.Kind, m.Welcome = KindWelcome, b
	case *Event:
		m.Kind, m.Event = KindEvent, b
	case *Reply:
		m.Kind, m.Reply = KindReply, b
	case *TokenUpdate:
		m.Kind, m.Tokens = KindTokens, b
	case *Broadcast:
		m.Kind, m.Broadcast = KindBroadcast, b
	case *Account:
		m.Kind, m.Account = KindAccount, b
	case *StatusRequest:
		m.Kind, m.StatusRequest = KindStatusRequest, b
	case *Status:
		m.Kind, m.Status = KindStatus, b
	case *Error:
		m.Kind, m.Error = KindError, b
	default:
		panic(fmt.Sprintf("event.Wrap: unsupported body %T", body))
	}
	return m
}

// Encode validates m and returns its frame body (without the length
// prefix).
func Encode(m Message) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, errclass.New(errclass.InvalidArgument, "encode %s message: %w", m.Kind, err)
	}
	if len(b) > MaxFrame {
		return nil, errclass.New(errclass.InvalidArgument,
			"encode %s message: %d bytes exceed the frame limit of %d", m.Kind, len(b), MaxFrame)
	}
	return b, nil
}

// Decode parses and validates one frame body. On error it returns the zero
// Message.
func Decode(body []byte) (Message, error) {
	if len(body) > MaxFrame {
		return Message{}, errclass.New(errclass.InvalidArgument,
			"frame of %d bytes exceeds the limit of %d", len(body), MaxFrame)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var m Message
	if err := dec.Decode(&m); err != nil {
		return Message{}, errclass.New(errclass.InvalidArgument, "malformed frame: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Message{}, errclass.New(errclass.InvalidArgument, "malformed frame: trailing data after the message")
	}
	if err := m.Validate(); err != nil {
		return Message{}, err
	}
	return m, nil
}

// WriteMessage encodes m and writes it as one frame. The caller serialises
// concurrent writers.
func WriteMessage(w io.Writer, m Message) error {
	body, err := Encode(m)
	if err != nil {
		return err
	}
	frame := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(frame, uint32(len(body)))
	copy(frame[4:], body)
	if _, err := w.Write(frame); err != nil {
		return fmt.Errorf("write %s frame: %w", m.Kind, err)
	}
	return nil
}

// ReadMessage reads one frame and decodes it. It returns io.EOF, unwrapped,
// when the peer closed the connection between frames; a frame cut short is
// an InvalidArgument error. The length prefix is checked before the body is
// read, so an oversized frame costs nothing.
func ReadMessage(r io.Reader) (Message, error) {
	var hdr [4]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		switch {
		case errors.Is(err, io.EOF):
			return Message{}, io.EOF
		case errors.Is(err, io.ErrUnexpectedEOF):
			return Message{}, errclass.New(errclass.InvalidArgument,
				"truncated frame: connection closed after %d of 4 length bytes", n)
		}
		return Message{}, fmt.Errorf("read frame: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[:])
	if size == 0 {
		return Message{}, errclass.New(errclass.InvalidArgument, "empty frame")
	}
	if size > MaxFrame {
		return Message{}, errclass.New(errclass.InvalidArgument,
			"frame of %d bytes exceeds the limit of %d", size, MaxFrame)
	}
	body := make([]byte, size)
	if n, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Message{}, errclass.New(errclass.InvalidArgument,
				"truncated frame: connection closed after %d of %d bytes", n, size)
		}
		return Message{}, fmt.Errorf("read frame: %w", err)
	}
	return Decode(body)
}

func invalid(format string, args ...any) error {
	return errclass.New(errclass.InvalidArgument, format, args...)
}

// Validate checks the envelope and its body.
func (m Message) Validate() error {
	if m.V != Version {
		return errclass.Newh(errclass.FailedPrecondition, versionHint,
			"protocol version %d, this side speaks version %d", m.V, Version)
	}
	bodies := map[Kind]bool{
		KindHello: m.Hello != nil, KindWelcome: m.Welcome != nil, KindEvent: m.Event != nil,
		KindReply: m.Reply != nil, KindTokens: m.Tokens != nil, KindBroadcast: m.Broadcast != nil, KindAccount: m.Account != nil,
		KindStatusRequest: m.StatusRequest != nil, KindStatus: m.Status != nil, KindError: m.Error != nil,
	}
	if _, ok := bodies[m.Kind]; !ok {
		return invalid("unknown message kind %q", m.Kind)
	}
	for k, set := range bodies {
		if set && k != m.Kind {
			return invalid("%s message carries a %s body", m.Kind, k)
		}
	}
	if !bodies[m.Kind] {
		return invalid("%s message without its body", m.Kind)
	}
	var err error
	switch m.Kind {
	case KindHello:
		err = m.Hello.validate()
	case KindWelcome:
		if m.Welcome.PID <= 0 {
			err = invalid("pid %d out of range", m.Welcome.PID)
		}
	case KindEvent:
		err = m.Event.validate(true)
	case KindReply:
		err = m.Reply.validate()
	case KindTokens:
		err = validateTokens(m.Tokens.Tokens)
	case KindBroadcast:
		err = m.Broadcast.Event.validate(false)
	case KindAccount:
		err = m.Account.validate()
	case KindStatus:
		err = m.Status.validate()
	case KindError:
		err = m.Error.validate()
	}
	if err != nil {
		return fmt.Errorf("%s message: %w", m.Kind, err)
	}
	return nil
}

func checkName(what, s string, required bool, limit int) error {
	if required && s == "" {
		return invalid("%s is empty", what)
	}
	if len(s) > limit {
		return invalid("%s is %d bytes long, the limit is %d", what, len(s), limit)
	}
	return nil
}

func (t TokenType) valid() bool { return t == CCA || t == EP11 }

func (t Token) validate() error {
	if !t.Type.valid() {
		return invalid("token in slot %d: type %q is neither %q nor %q", t.Slot, t.Type, CCA, EP11)
	}
	if err := checkName("token label", t.Label, false, 32); err != nil {
		return err
	}
	return checkName("token serial", t.Serial, true, 16)
}

func validateTokens(tokens []Token) error {
	if len(tokens) > MaxTokens {
		return invalid("%d tokens, the limit is %d", len(tokens), MaxTokens)
	}
	for _, t := range tokens {
		if err := t.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (h *Hello) validate() error {
	if h.PID <= 0 {
		return invalid("pid %d out of range", h.PID)
	}
	if err := checkName("program", h.Program, true, maxName); err != nil {
		return err
	}
	return validateTokens(h.Tokens)
}

// validate checks an event; withID says whether the daemon must already
// have assigned id and timeout (an event it relays) or not (a request).
func (e *Event) validate(withID bool) error {
	if err := checkName("event id", e.ID, withID, maxName); err != nil {
		return err
	}
	if e.Timeout < 0 || e.Timeout > MaxTimeout {
		return invalid("event timeout %d ms out of range (0 to %d)", e.Timeout, MaxTimeout)
	}
	if withID && e.Timeout == 0 {
		return invalid("event %s has no timeout", e.ID)
	}
	if err := checkName("event type", e.Type, true, maxName); err != nil {
		return err
	}
	if err := checkName("operation id", e.OpID, false, maxName); err != nil {
		return err
	}
	if len(e.Payload) > MaxPayload {
		return invalid("payload of %d bytes exceeds the limit of %d", len(e.Payload), MaxPayload)
	}
	if e.Target != nil {
		return e.Target.validate()
	}
	return nil
}

func (t *Target) validate() error {
	const maxList = 4096
	if len(t.PIDs) > maxList || len(t.ExcludePIDs) > maxList || len(t.Types) > maxList || len(t.Serials) > maxList ||
		len(t.Tokens) > maxList {
		return invalid("target lists more than %d entries", maxList)
	}
	for _, p := range slices.Concat(t.PIDs, t.ExcludePIDs) {
		if p <= 0 {
			return invalid("target pid %d out of range", p)
		}
	}
	for _, ty := range t.Types {
		if !ty.valid() {
			return invalid("target token type %q is neither %q nor %q", ty, CCA, EP11)
		}
	}
	for _, s := range t.Serials {
		if err := checkName("target serial", s, true, 16); err != nil {
			return err
		}
	}
	for _, id := range t.Tokens {
		if err := checkName("target token serial", id.Serial, true, 16); err != nil {
			return err
		}
		if err := checkName("target token label", id.Label, false, 32); err != nil {
			return err
		}
	}
	return nil
}

func (r TokenResult) validate() error {
	switch r.Result {
	case Affected, NotAffected, Failed:
	default:
		return invalid("token %q: outcome %q is not one of %q, %q, %q", r.Serial, r.Result, Affected, NotAffected, Failed)
	}
	if err := checkName("token serial", r.Serial, true, 16); err != nil {
		return err
	}
	if r.Objects < 0 || r.ObjectsFailed < 0 {
		return invalid("token %q: negative object count", r.Serial)
	}
	if !r.Class.Valid() {
		return invalid("token %q: unknown error class %d", r.Serial, r.Class)
	}
	return checkName("error text", r.Error, false, maxText)
}

func validateResults(results []TokenResult) error {
	if len(results) > MaxTokens {
		return invalid("%d token results, the limit is %d", len(results), MaxTokens)
	}
	for _, r := range results {
		if err := r.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reply) validate() error {
	if err := checkName("event id", r.EventID, true, maxName); err != nil {
		return err
	}
	return validateResults(r.Tokens)
}

func (a *Account) validate() error {
	if err := checkName("event id", a.EventID, true, maxName); err != nil {
		return err
	}
	if a.Timeout < 0 || a.Timeout > MaxTimeout {
		return invalid("account timeout %d ms out of range (0 to %d)", a.Timeout, MaxTimeout)
	}
	for _, p := range a.Processes {
		switch p.Outcome {
		case Replied, TimedOut, Disconnected:
		default:
			return invalid("process %d: outcome %q is not one of %q, %q, %q", p.PID, p.Outcome, Replied, TimedOut, Disconnected)
		}
		if err := checkName("command", p.Command, false, maxName); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
		if err := validateTokens(p.Tokens); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
		if err := validateResults(p.Results); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
	}
	return nil
}

func (s *Status) validate() error {
	if s.Pending < 0 {
		return invalid("negative pending count")
	}
	for _, p := range s.Processes {
		if err := checkName("command", p.Command, false, maxName); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
		if err := validateTokens(p.Tokens); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
	}
	return nil
}

func (e *Error) validate() error {
	if !e.Class.Valid() {
		return invalid("unknown error class %d", e.Class)
	}
	if err := checkName("error message", e.Message, true, maxText); err != nil {
		return err
	}
	return checkName("error hint", e.Hint, false, maxText)
}
