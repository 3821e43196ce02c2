// Package errclass is the closed set of error classes every pkcshsm
// component speaks.
//
// Errors are created where they happen, with a message a person can act on,
// and classified once with one of the classes below. Context is added on the
// way up with fmt.Errorf("...: %w", err); the class survives the wrapping.
// Only the edges convert a class into something else: the CLI into an exit
// code, the daemon socket into a status code, the token library into a
// PKCS#11 CK_RV.
//
// # Hints
//
// An error may carry a hint: one sentence that says how to fix the problem.
// The CLIs print it as a separate "hint:" line. [Hint] returns the hint
// nearest to the outside of the chain.
package errclass

import (
	"errors"
	"fmt"
	"io/fs"
)

// Class is one of a small, closed set of error kinds. The zero Class is
// [Unknown].
type Class uint8

// The classes. The numbering is part of the wire protocol and of the
// documented exit codes: append only.
const (
	// Unknown is returned by [Of] for errors that carry no class.
	Unknown Class = iota
	// InvalidArgument: the input is malformed (flag, APQN, pattern, template, frame).
	InvalidArgument
	// NotFound: the named thing (operation, slot, key, APQN) does not exist.
	NotFound
	// FailedPrecondition: the system is not in the state the request needs
	// (a register not loaded, an operation in the wrong state).
	FailedPrecondition
	// Conflict: the request collides with something already there (an
	// intersecting operation, a duplicate label).
	Conflict
	// Unavailable: a component is down or unreachable (APQN offline, daemon
	// not running). Retrying later may succeed.
	Unavailable
	// PermissionDenied: the caller is not allowed (peer credentials, PIN).
	PermissionDenied
	// DataLoss: stored data is corrupt or unreadable.
	DataLoss
	// Aborted: the operation was stopped (user said no, EOF at a prompt,
	// a peer failed and the whole operation was rolled back).
	Aborted
	// DeadlineExceeded: a bounded wait ran out.
	DeadlineExceeded
	// Internal: a bug or an unexpected failure of the environment.
	Internal
)

var classNames = [...]string{
	Unknown:            "unknown",
	InvalidArgument:    "invalid argument",
	NotFound:           "not found",
	FailedPrecondition: "failed precondition",
	Conflict:           "conflict",
	Unavailable:        "unavailable",
	PermissionDenied:   "permission denied",
	DataLoss:           "data loss",
	Aborted:            "aborted",
	DeadlineExceeded:   "deadline exceeded",
	Internal:           "internal",
}

// String returns the class name in lower case, e.g. "not found".
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Error makes a Class usable as a sentinel: errors.Is(err, errclass.NotFound)
// reports whether err is of that class.
func (c Class) Error() string { return c.String() }

// Valid reports whether c is one of the defined classes.
func (c Class) Valid() bool { return int(c) < len(classNames) }

// Classes lists every defined class in numeric order.
func Classes() []Class {
	out := make([]Class, 0, len(classNames))
	for c := range classNames {
		out = append(out, Class(c))
	}
	return out
}

// classError is a message (with optional wrapped causes) tagged with a class
// and an optional hint.
type classError struct {
	class Class
	err   error // the message; may wrap causes via %w
	hint  string
}

func (e *classError) Error() string { return e.err.Error() }
func (e *classError) Unwrap() error { return e.err }

// Is lets errors.Is match the class sentinel.
func (e *classError) Is(target error) bool {
	c, ok := target.(Class)
	return ok && c == e.class
}

// New returns an error of class c with a formatted message. The format may
// use %w to wrap causes; their classes are shadowed by c for [Of].
func New(c Class, format string, args ...any) error {
	return &classError{class: c, err: fmt.Errorf(format, args...)}
}

// Newh is [New] with a hint saying how to fix the problem.
func Newh(c Class, hint, format string, args ...any) error {
	return &classError{class: c, err: fmt.Errorf(format, args...), hint: hint}
}

// WithHint attaches a hint to err, keeping its class. A nil err stays nil.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &classError{class: Of(err), err: err, hint: hint}
}

// As re-classifies err as c, keeping its message and its hint.
func As(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &classError{class: c, err: err}
}

// Classifier is implemented by structured error types that carry a class
// of their own (such as a list of conflicts).
type Classifier interface {
	ErrClass() Class
}

// Of returns the class of the outermost classified error in err's chain, or
// [Unknown]. A bare Class used as an error is its own class.
func Of(err error) Class {
	for err != nil {
		switch e := err.(type) {
		case *classError:
			return e.class
		case Class:
			return e
		case Classifier:
			return e.ErrClass()
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if c := Of(inner); c != Unknown {
					return c
				}
			}
			return Unknown
		}
		err = errors.Unwrap(err)
	}
	return Unknown
}

// Hint returns the outermost hint in err's chain, or "".
func Hint(err error) string {
	for err != nil {
		if e, ok := err.(*classError); ok && e.hint != "" {
			return e.hint
		}
		if m, ok := err.(interface{ Unwrap() []error }); ok {
			for _, inner := range m.Unwrap() {
				if h := Hint(inner); h != "" {
					return h
				}
			}
			return ""
		}
		err = errors.Unwrap(err)
	}
	return ""
}

// FS classifies a failed file-system call: a missing file is NotFound, a
// refused one PermissionDenied, anything else Unavailable. The message
// reads "failed to <what>: <err>".
func FS(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return New(NotFound, "failed to %s: %w", msg, err)
	case errors.Is(err, fs.ErrPermission):
		return New(PermissionDenied, "failed to %s: %w", msg, err)
	}
	return New(Unavailable, "failed to %s: %w", msg, err)
}
