package apqn

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// RegState is the state of one master key register as the kernel reports it
// in the mkvps attribute.
type RegState uint8

// Register states. CCA NEW registers are Empty, Partial or Full; EP11 NEW
// registers are Empty, Uncommitted or Committed; CURRENT and OLD registers
// are Invalid or Valid. StateUnknown is the kernel's "- -" (query failed or
// queue offline).
const (
	StateUnknown RegState = iota
	StateEmpty
	StatePartial
	StateFull
	StateUncommitted
	StateCommitted
	StateInvalid
	StateValid
)

var regStateNames = [...]string{
	StateUnknown:     "-",
	StateEmpty:       "empty",
	StatePartial:     "partial",
	StateFull:        "full",
	StateUncommitted: "uncommitted",
	StateCommitted:   "committed",
	StateInvalid:     "invalid",
	StateValid:       "valid",
}

// String returns the kernel's word for the state ("-" for unknown).
func (s RegState) String() string {
	if int(s) < len(regStateNames) {
		return regStateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ParseRegState reads a state word as the kernel prints it.
func ParseRegState(s string) (RegState, error) {
	for i, n := range regStateNames {
		if strings.EqualFold(s, n) {
			return RegState(i), nil
		}
	}
	return StateUnknown, errclass.Newh(errclass.InvalidArgument,
		"use one of empty, partial, full, uncommitted, committed, invalid, valid",
		"unknown register state %q", s)
}

// MKVPLine is one line of the mkvps attribute: "AES CUR: valid 0x…".
type MKVPLine struct {
	// Key is the master key keyword: AES, APKA, ASYM (CCA) or WK (EP11).
	Key string
	// Register is NEW, CUR or OLD.
	Register string
	// State is StateUnknown for the kernel's "- -" lines.
	State RegState
	// Pattern is the verification pattern as printed (8 bytes for AES and
	// APKA, 16 for ASYM, 32 for WK); nil when the kernel prints "-".
	Pattern []byte
}

// MKVPs is the parsed content of one queue's mkvps attribute.
type MKVPs struct {
	Lines []MKVPLine
}

// patternLen gives the printed pattern length of each known keyword.
var patternLen = map[string]int{"AES": 8, "APKA": 8, "ASYM": 16, "WK": 32}

var registers = map[string]bool{"NEW": true, "CUR": true, "OLD": true}

// Lookup returns the line for key and register (e.g. "AES", "CUR").
func (m MKVPs) Lookup(key, register string) (MKVPLine, bool) {
	for _, l := range m.Lines {
		if l.Key == key && l.Register == register {
			return l, true
		}
	}
	return MKVPLine{}, false
}

// ParseMKVPs parses the mkvps attribute of a CCA or EP11 queue.
//
// Keywords are matched case-insensitively. Lines whose first word is not a
// known keyword are skipped, as newer kernels may add master key types; a
// known keyword with a malformed rest is an error. At least one known line
// must be present.
func ParseMKVPs(text []byte) (MKVPs, error) {
	var m MKVPs
	seen := map[string]bool{}
	for n, raw := range bytes.Split(text, []byte("\n")) {
		line := string(raw)
		if strings.TrimSpace(line) == "" {
			continue
		}
		words := strings.Fields(line)
		key := strings.ToUpper(words[0])
		want, known := patternLen[key]
		if !known {
			continue
		}
		bad := func(format string, args ...any) error {
			return errclass.New(errclass.InvalidArgument, "mkvps line %d %q: %s",
				n+1, line, fmt.Sprintf(format, args...))
		}
		if len(words) != 4 {
			return MKVPs{}, bad("want 4 fields, got %d", len(words))
		}
		reg, ok := strings.CutSuffix(strings.ToUpper(words[1]), ":")
		if !ok || !registers[reg] {
			return MKVPs{}, bad("register %q is not NEW:, CUR: or OLD:", words[1])
		}
		if key == "WK" && reg == "OLD" {
			return MKVPs{}, bad("EP11 wrapping keys have no OLD register")
		}
		if seen[key+" "+reg] {
			return MKVPs{}, bad("duplicate %s %s line", key, reg)
		}
		seen[key+" "+reg] = true
		l := MKVPLine{Key: key, Register: reg}
		if words[2] == "-" {
			if words[3] != "-" {
				return MKVPs{}, bad("unknown state with a pattern")
			}
			m.Lines = append(m.Lines, l)
			continue
		}
		st, err := ParseRegState(words[2])
		if err != nil || st == StateUnknown {
			return MKVPs{}, bad("unknown state %q", words[2])
		}
		if !stateFits(key, reg, st) {
			return MKVPs{}, bad("state %s is not possible for %s %s", st, key, reg)
		}
		l.State = st
		if words[3] == "-" {
			// Only EP11 prints "-" for a register without a key.
			if key != "WK" || (st != StateEmpty && st != StateInvalid) {
				return MKVPs{}, bad("missing pattern")
			}
			m.Lines = append(m.Lines, l)
			continue
		}
		h, ok := strings.CutPrefix(strings.ToLower(words[3]), "0x")
		if !ok {
			return MKVPs{}, bad("pattern %q lacks the 0x prefix", words[3])
		}
		if len(h) != 2*want {
			return MKVPs{}, bad("pattern has %d hex digits, want %d", len(h), 2*want)
		}
		p, err := hex.DecodeString(h)
		if err != nil {
			return MKVPs{}, bad("pattern %q is not hexadecimal", words[3])
		}
		if key == "WK" && (st == StateEmpty || st == StateInvalid) {
			return MKVPs{}, bad("state %s prints no pattern", st)
		}
		l.Pattern = p
		m.Lines = append(m.Lines, l)
	}
	if len(m.Lines) == 0 {
		return MKVPs{}, errclass.New(errclass.InvalidArgument,
			"mkvps holds no master key line (AES, APKA, ASYM or WK)")
	}
	return m, nil
}

func stateFits(key, reg string, st RegState) bool {
	switch {
	case reg != "NEW":
		return st == StateInvalid || st == StateValid
	case key == "WK":
		return st == StateEmpty || st == StateUncommitted || st == StateCommitted
	default:
		return st == StateEmpty || st == StatePartial || st == StateFull
	}
}

// Format renders the attribute exactly as the kernel prints it: one line per
// entry, "KEY REG: state 0xpattern", lowercase hex, "- -" for unknown states
// and "-" for a missing pattern. Entries are printed in the given order.
func (m MKVPs) Format() ([]byte, error) {
	var b bytes.Buffer
	for _, l := range m.Lines {
		want, ok := patternLen[l.Key]
		if !ok || !registers[l.Register] {
			return nil, errclass.New(errclass.InvalidArgument, "cannot format mkvps line %s %s", l.Key, l.Register)
		}
		fmt.Fprintf(&b, "%s %s: ", l.Key, l.Register)
		switch {
		case l.State == StateUnknown:
			b.WriteString("- -\n")
		case l.Pattern == nil && l.Key == "WK":
			fmt.Fprintf(&b, "%s -\n", l.State)
		case len(l.Pattern) != want:
			return nil, errclass.New(errclass.InvalidArgument,
				"mkvps %s %s pattern has %d bytes, want %d", l.Key, l.Register, len(l.Pattern), want)
		default:
			fmt.Fprintf(&b, "%s 0x%x\n", l.State, l.Pattern)
		}
	}
	return b.Bytes(), nil
}
