package event

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Err turns a received Error back into a Go error of the same class and
// hint, so errors.Is(err, errclass.PermissionDenied) works on the far side
// of the socket.
func (e *Error) Err() error {
	class := e.Class
	if class == errclass.Unknown {
		class = errclass.Internal
	}
	return errclass.Newh(class, e.Hint, "pkcshsmd: %s", e.Message)
}

// ErrorFrom builds the wire form of err: its class, message and hint.
func ErrorFrom(err error) *Error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if len(msg) > maxText {
		msg = msg[:maxText]
	}
	hint := errclass.Hint(err)
	if len(hint) > maxText {
		hint = hint[:maxText]
	}
	return &Error{Class: errclass.Of(err), Message: msg, Hint: hint}
}

// ResultFor builds tok's result from err: Failed with err's message and
// class, or NotAffected when err is nil.
func ResultFor(tok Token, err error) TokenResult {
	if err == nil {
		return TokenResult{Slot: tok.Slot, Serial: tok.Serial, Result: NotAffected}
	}
	msg := err.Error()
	if len(msg) > maxText {
		msg = msg[:maxText]
	}
	return TokenResult{Slot: tok.Slot, Serial: tok.Serial, Result: Failed, Error: msg, Class: errclass.Of(err)}
}

// MatchToken reports whether tok is addressed by t. A nil Target matches
// every token.
func (t *Target) MatchToken(tok Token) bool {
	if t == nil {
		return true
	}
	if len(t.Types) > 0 && !slices.Contains(t.Types, tok.Type) {
		return false
	}
	if len(t.Serials) > 0 && !slices.Contains(t.Serials, tok.Serial) {
		return false
	}
	if len(t.Tokens) > 0 && !slices.ContainsFunc(t.Tokens, func(id TokenID) bool {
		return strings.TrimRight(id.Serial, " ") == strings.TrimRight(tok.Serial, " ") &&
			strings.TrimRight(id.Label, " ") == strings.TrimRight(tok.Label, " ")
	}) {
		return false
	}
	return true
}

// MatchProcess reports whether a process with this pid and these tokens is
// addressed by t: its pid is selected and not excluded and, if t names token
// types, serials or tokens, at least one of its tokens matches. A nil Target
// matches every process.
func (t *Target) MatchProcess(pid int32, tokens []Token) bool {
	if t == nil {
		return true
	}
	if len(t.PIDs) > 0 && !slices.Contains(t.PIDs, pid) {
		return false
	}
	if slices.Contains(t.ExcludePIDs, pid) {
		return false
	}
	if len(t.Types) == 0 && len(t.Serials) == 0 && len(t.Tokens) == 0 {
		return true
	}
	return slices.ContainsFunc(tokens, t.MatchToken)
}

// Tally counts an account's processes and token results.
type Tally struct {
	Processes    int // processes addressed
	Replied      int
	TimedOut     int
	Disconnected int
	Affected     int // token results
	NotAffected  int
	Failed       int
}

// Tally counts the account.
func (a *Account) Tally() Tally {
	var t Tally
	for _, p := range a.Processes {
		t.Processes++
		switch p.Outcome {
		case Replied:
			t.Replied++
		case TimedOut:
			t.TimedOut++
		case Disconnected:
			t.Disconnected++
		}
		for _, r := range p.Results {
			switch r.Result {
			case Affected:
				t.Affected++
			case NotAffected:
				t.NotAffected++
			case Failed:
				t.Failed++
			}
		}
	}
	return t
}

// Who names a process in messages: "process PID (program)", with the
// kernel's command name too when it differs from what the process claims.
func (p ProcessResult) Who() string {
	if p.Command != "" && p.Command != p.Program && !strings.HasPrefix(p.Program, p.Command) {
		return fmt.Sprintf("process %d (%s, running %s)", p.PID, p.Program, p.Command)
	}
	return fmt.Sprintf("process %d (%s)", p.PID, p.Program)
}

// Err summarises an account as an error: nil when every addressed process
// replied and no token failed. Otherwise the error joins one line per
// process that did not answer (class DeadlineExceeded or Unavailable) and
// per failed token (its own class), so errclass.Of reports the first.
func (a *Account) Err() error {
	var errs []error
	for _, p := range a.Processes {
		switch p.Outcome {
		case TimedOut:
			errs = append(errs, errclass.New(errclass.DeadlineExceeded,
				"%s did not answer event %s by its deadline", p.Who(), a.EventID))
		case Disconnected:
			errs = append(errs, errclass.New(errclass.Unavailable,
				"%s disconnected before answering event %s", p.Who(), a.EventID))
		}
		for _, r := range p.Results {
			if r.Result == Failed {
				class := r.Class
				if class == errclass.Unknown {
					class = errclass.Internal
				}
				errs = append(errs, errclass.New(class, "%s, token %s in slot %d: %s",
					p.Who(), r.Serial, r.Slot, r.Error))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("event %s (%s): %w", a.EventID, a.Type, errors.Join(errs...))
}
