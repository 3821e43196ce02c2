// Package apqn names adjunct processor queues (APQNs) — a crypto adapter
// card and a domain on it — and reads the AP bus from a sysfs root.
//
// # Identifiers
//
// An APQN is written card.domain in hexadecimal, as lszcrypt prints it:
// "0a.0024". The card is at most 0xff, the domain at most 0xffff. [Parse]
// accepts one or two hex digits for the card and one to four for the domain
// and nothing else; [ID.String] prints the listing form "0A.0024" and
// [ID.SysfsName] the kernel's lowercase form "0a.0024".
//
// # Lists
//
// [ParseList] reads a list separated by commas or blanks; empty entries and
// duplicates are errors, because an operator who typed them most likely
// mistyped something else. [List] implements the flag.Value/pflag.Value
// interface, so repeated options add up.
//
// # The AP bus
//
// [Bus] reads cards, queues and their attributes from a sysfs root: /sys on
// real hardware, the simulator's view otherwise. It is the only code in this
// package that does I/O.
package apqn

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// ID is one adjunct processor queue: a card and a domain.
type ID struct {
	Card   uint8
	Domain uint16
}

const formHint = "write an APQN as card.domain in hex, as lszcrypt prints it, e.g. 0a.0024"

// Parse reads one APQN in the form card.domain (hex).
func Parse(s string) (ID, error) {
	card, dom, ok := strings.Cut(s, ".")
	if !ok || card == "" || dom == "" {
		return ID{}, errclass.Newh(errclass.InvalidArgument, formHint,
			"invalid APQN %q: want card.domain", s)
	}
	c, err := parseHex(card, 2, 0xff)
	if err != nil {
		return ID{}, errclass.Newh(errclass.InvalidArgument, formHint,
			"invalid APQN %q: card %w", s, err)
	}
	d, err := parseHex(dom, 4, 0xffff)
	if err != nil {
		return ID{}, errclass.Newh(errclass.InvalidArgument, formHint,
			"invalid APQN %q: domain %w", s, err)
	}
	return ID{Card: uint8(c), Domain: uint16(d)}, nil
}

// parseHex reads 1..maxDigits hex digits (no prefix, no sign).
func parseHex(s string, maxDigits int, limit uint64) (uint64, error) {
	for _, r := range s {
		if !isHex(r) {
			return 0, fmt.Errorf("%q is not hexadecimal", s)
		}
	}
	if len(s) > maxDigits {
		return 0, fmt.Errorf("%q is longer than %d hex digits (at most 0x%x)", s, maxDigits, limit)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v > limit {
		return 0, fmt.Errorf("%q exceeds 0x%x", s, limit)
	}
	return v, nil
}

func isHex(r rune) bool {
	return (r >= '0' && r <= '9') || (r >= 'a' && r <= 'f') || (r >= 'A' && r <= 'F')
}

// MustParse is Parse for constants in tests and examples; it panics on error.
func MustParse(s string) ID {
	id, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return id
}

// String returns the listing form, upper case: "0A.0024".
func (id ID) String() string { return fmt.Sprintf("%02X.%04X", id.Card, id.Domain) }

// SysfsName returns the kernel's queue device name, lower case: "0a.0024".
func (id ID) SysfsName() string { return fmt.Sprintf("%02x.%04x", id.Card, id.Domain) }

// CardName returns the kernel's card device name: "card0a".
func (id ID) CardName() string { return fmt.Sprintf("card%02x", id.Card) }

// Compare orders by card, then domain.
func (id ID) Compare(o ID) int {
	if c := cmp.Compare(id.Card, o.Card); c != 0 {
		return c
	}
	return cmp.Compare(id.Domain, o.Domain)
}

// MarshalText encodes the listing form, so IDs read well in JSON.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses the card.domain form.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// List is an ordered set of APQNs. As a flag value, each Set adds entries.
type List []ID

// ParseList reads APQNs separated by commas or blanks. Empty entries and
// duplicates are errors.
func ParseList(s string) (List, error) {
	var l List
	if err := l.Set(s); err != nil {
		return nil, err
	}
	return l, nil
}

// Set adds the APQNs in s to the list (flag.Value).
func (l *List) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return errclass.Newh(errclass.InvalidArgument, formHint, "empty APQN list")
	}
	// Blanks and commas both separate; a comma with only blanks around it on
	// both sides still marks one boundary, but two commas mark an empty entry.
	var fields []string
	for part := range strings.SplitSeq(s, ",") {
		words := strings.Fields(part)
		if len(words) == 0 {
			return errclass.Newh(errclass.InvalidArgument,
				"remove the extra comma", "empty entry in APQN list %q", s)
		}
		fields = append(fields, words...)
	}
	seen := make(map[ID]bool, len(*l)+len(fields))
	for _, id := range *l {
		seen[id] = true
	}
	out := *l
	for _, f := range fields {
		id, err := Parse(f)
		if err != nil {
			return err
		}
		if seen[id] {
			return errclass.Newh(errclass.InvalidArgument,
				"name each APQN once", "APQN %s is listed more than once", id)
		}
		seen[id] = true
		out = append(out, id)
	}
	*l = out
	return nil
}

// String joins the listing forms with commas (flag.Value).
func (l *List) String() string {
	if l == nil {
		return ""
	}
	parts := make([]string, len(*l))
	for i, id := range *l {
		parts[i] = id.String()
	}
	return strings.Join(parts, ",")
}

// Type names the value kind in help texts (pflag.Value).
func (l *List) Type() string { return "apqns" }

// Contains reports whether id is in the list.
func (l List) Contains(id ID) bool {
	for _, x := range l {
		if x == id {
			return true
		}
	}
	return false
}
