// Package failpoint names the durable steps of pkcshsm's processes so that
// tests can stop a real process at each of them.
//
// A step is marked with a one-line call:
//
//	failpoint.Hit("cli.reencipher.after-state-REENCIPHERING")
//
// or, where the caller can return an error:
//
//	if err := failpoint.Err("cli.finalize.before-commit"); err != nil {
//		return err
//	}
//
// In an ordinary build both calls compile to nothing: [Enabled] is false,
// the functions are empty and inlined, and the environment is never read
// (only the name argument is still evaluated, so keep names cheap: a
// literal, or a literal joined with a state or action name). Points sit at
// durable steps (a state write, a batch commit, a broadcast), never in a
// per-key loop.
// Only a binary built with the build tag "failpoints"
//
//	go build -tags failpoints ./cmd/pkcshsm_mk_change
//
// reads PKCSHSM_FAILPOINT and acts on it. Production binaries, packages and
// the CI's ordinary test run never carry the tag.
//
// # The environment
//
// PKCSHSM_FAILPOINT holds a comma-separated list of rules, each
//
//	name=action[@n]
//
// where action is one of
//
//	kill        the process sends itself SIGKILL (no deferred call, no flush)
//	sleep:DUR   the process sleeps for DUR (a Go duration, e.g. 200ms)
//	error       Err returns an error wrapping ErrInjected; Hit ignores the rule
//	exit:N      the process exits at once with status N (0-125)
//	value:N     [Int] returns N (a number ≥ 0) instead of its default:
//	            a knob, e.g. a smaller batch size so that few keys make
//	            several batches; Hit and Err ignore the rule
//
// and @n (n ≥ 1) makes the rule fire only at the n-th time the point is
// reached in this process; without it the rule fires every time. A name
// without "=action" means kill.
//
// PKCSHSM_FAILPOINT_LOG, if set, names a file to which the process appends
// "name action pid" (and fsyncs) before a rule fires, so a test can tell that
// the process stopped where it was meant to and not somewhere else.
// PKCSHSM_FAILPOINT_TRACE, if set, names a file to which every point reached
// is appended as "name pid": a test runs a scenario once with it to learn
// which points the scenario passes, then kills at each of them.
//
// A malformed PKCSHSM_FAILPOINT in a tagged build makes the first Hit print
// an error to stderr and exit with status 2: a test that misspells a rule
// must not pass silently.
//
// # Names
//
// Names are lower-case words, digits, dots, dashes and underscores, and may
// carry upper-case state names: "<process>.<flow>.<step>", where process is
// cli, daemon or agent. [Parse] rejects anything else, so a name can be
// found with a plain text search and is never confused with the syntax.
package failpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Environment variables read by tagged builds.
const (
	EnvSpec  = "PKCSHSM_FAILPOINT"
	EnvLog   = "PKCSHSM_FAILPOINT_LOG"
	EnvTrace = "PKCSHSM_FAILPOINT_TRACE"
)

// Action is what a rule does when it fires.
type Action uint8

// The actions.
const (
	Kill Action = iota + 1
	Sleep
	Error
	Exit
	Value
)

func (a Action) String() string {
	switch a {
	case Kill:
		return "kill"
	case Sleep:
		return "sleep"
	case Error:
		return "error"
	case Exit:
		return "exit"
	case Value:
		return "value"
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Rule is one parsed element of PKCSHSM_FAILPOINT.
type Rule struct {
	Name   string
	Action Action
	Sleep  time.Duration // for Sleep
	Status int           // for Exit
	Value  int           // for Value
	Nth    int           // fire only at the Nth hit; 0: every hit
}

// String formats r the way Parse reads it.
func (r Rule) String() string {
	s := r.Name + "=" + r.Action.String()
	switch r.Action {
	case Sleep:
		s += ":" + r.Sleep.String()
	case Exit:
		s += ":" + strconv.Itoa(r.Status)
	case Value:
		s += ":" + strconv.Itoa(r.Value)
	}
	if r.Nth > 0 {
		s += "@" + strconv.Itoa(r.Nth)
	}
	return s
}

// ValidName reports whether name may name a failpoint.
func ValidName(name string) bool {
	if name == "" || len(name) > 200 || name[0] == '.' || name[len(name)-1] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// Parse reads a PKCSHSM_FAILPOINT value. Empty elements are ignored; a name
// may appear only once.
func Parse(spec string) ([]Rule, error) {
	var rules []Rule
	seen := map[string]bool{}
	for _, elem := range strings.Split(spec, ",") {
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		r, err := parseRule(elem)
		if err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%s: failpoint %q appears twice", EnvSpec, r.Name)
		}
		seen[r.Name] = true
		rules = append(rules, r)
	}
	return rules, nil
}

func parseRule(elem string) (Rule, error) {
	name, act, hasAct := strings.Cut(elem, "=")
	if !ValidName(name) {
		return Rule{}, fmt.Errorf("%s: %q is not a failpoint name (letters, digits, '.', '-', '_')", EnvSpec, name)
	}
	r := Rule{Name: name, Action: Kill}
	if !hasAct {
		return r, nil
	}
	if a, nth, ok := strings.Cut(act, "@"); ok {
		n, err := strconv.Atoi(nth)
		if err != nil || n < 1 || strconv.Itoa(n) != nth {
			return Rule{}, fmt.Errorf("%s: %s: %q after '@' is not a hit count (1, 2, ...)", EnvSpec, name, nth)
		}
		r.Nth, act = n, a
	}
	verb, arg, hasArg := strings.Cut(act, ":")
	switch verb {
	case "kill", "error":
		if hasArg {
			return Rule{}, fmt.Errorf("%s: %s: action %s takes no argument", EnvSpec, name, verb)
		}
		r.Action = Kill
		if verb == "error" {
			r.Action = Error
		}
	case "sleep":
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil || d < 0 {
			return Rule{}, fmt.Errorf("%s: %s: sleep needs a duration, e.g. sleep:200ms", EnvSpec, name)
		}
		r.Action, r.Sleep = Sleep, d
	case "exit":
		n, err := strconv.Atoi(arg)
		if !hasArg || err != nil || n < 0 || n > 125 || strconv.Itoa(n) != arg {
			return Rule{}, fmt.Errorf("%s: %s: exit needs a status 0-125, e.g. exit:3", EnvSpec, name)
		}
		r.Action, r.Status = Exit, n
	case "value":
		n, err := strconv.Atoi(arg)
		if !hasArg || err != nil || n < 0 || strconv.Itoa(n) != arg {
			return Rule{}, fmt.Errorf("%s: %s: value needs a number ≥ 0, e.g. value:10", EnvSpec, name)
		}
		if r.Nth != 0 {
			return Rule{}, fmt.Errorf("%s: %s: a value rule takes no hit count", EnvSpec, name)
		}
		r.Action, r.Value = Value, n
	default:
		return Rule{}, fmt.Errorf("%s: %s: unknown action %q (kill, sleep:DUR, error, exit:N, value:N)", EnvSpec, name, verb)
	}
	return r, nil
}

// ErrInjected is the error Err returns when an error rule fires; the error
// returned wraps it and names the point.
var ErrInjected = errors.New("injected failure")
