// Package mkvp knows the master key types of IBM crypto adapters and their
// verification patterns.
//
// # Types
//
// An EP11 adapter domain has one master key, the wrapping key (WK). A CCA
// adapter domain has four: SYM (DES/3DES keys), ASYM (old RSA keys), AES (AES
// and HMAC keys) and APKA (ECC and newer RSA keys). pkcshsm's CCA tokens use
// SYM, AES and APKA, never ASYM.
//
// # Patterns
//
// A verification pattern identifies a master key without revealing it. CCA
// patterns are 8 bytes. EP11 patterns are 16 bytes; sysfs prints a 32-byte
// value of which only the first 16 bytes identify the key, so [Parse]
// accepts the 32-byte form and reports the ignored bytes to the caller.
//
// Parsing is strict: an optional "0x" prefix, then hex digits only, and at
// least the type's length. The upstream tool read "1g" as 0x01; we refuse it.
package mkvp

import (
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Type is a master key type.
type Type uint8

// The master key types, in the order the CLI lists them.
const (
	EP11WK Type = iota + 1
	CCASYM
	CCAASYM
	CCAAES
	CCAAPKA
)

// Types lists every type in CLI order.
func Types() []Type { return []Type{EP11WK, CCASYM, CCAASYM, CCAAES, CCAAPKA} }

// CCATypes lists the CCA types.
func CCATypes() []Type { return []Type{CCASYM, CCAASYM, CCAAES, CCAAPKA} }

var typeInfo = map[Type]struct {
	name, long, key string
	size            int
}{
	EP11WK:  {"EP11", "EP11 WK", "WK", 16},
	CCASYM:  {"CCA SYM", "CCA SYM", "SYM", 8},
	CCAASYM: {"CCA ASYM", "CCA ASYM", "ASYM", 8},
	CCAAES:  {"CCA AES", "CCA AES", "AES", 8},
	CCAAPKA: {"CCA APKA", "CCA APKA", "APKA", 8},
}

// String is the name `list` prints: "EP11", "CCA SYM", "CCA AES" ...
func (t Type) String() string {
	if i, ok := typeInfo[t]; ok {
		return i.name
	}
	return fmt.Sprintf("mktype(%d)", uint8(t))
}

// LongName is the name conflict messages print: "EP11 WK", "CCA AES" ...
func (t Type) LongName() string {
	if i, ok := typeInfo[t]; ok {
		return i.long
	}
	return t.String()
}

// Keyword is the register keyword: "WK", "SYM", "ASYM", "AES", "APKA".
func (t Type) Keyword() string {
	if i, ok := typeInfo[t]; ok {
		return i.key
	}
	return t.String()
}

// Size is the pattern length in bytes: 16 for EP11, 8 for CCA.
func (t Type) Size() int { return typeInfo[t].size }

// Valid reports whether t is a defined type.
func (t Type) Valid() bool { _, ok := typeInfo[t]; return ok }

// IsCCA reports whether t is one of the CCA master key types.
func (t Type) IsCCA() bool { return t >= CCASYM && t <= CCAAPKA }

// ParseType reads a type by keyword or name, case-insensitively: "aes",
// "CCA AES", "cca-aes", "wk", "ep11".
func ParseType(s string) (Type, error) {
	norm := strings.ToUpper(strings.NewReplacer("-", " ", "_", " ").Replace(strings.TrimSpace(s)))
	for _, t := range Types() {
		i := typeInfo[t]
		if norm == i.key || norm == i.name || norm == i.long {
			return t, nil
		}
	}
	return 0, errclass.Newh(errclass.InvalidArgument,
		"use one of SYM, ASYM, AES, APKA (CCA) or WK (EP11)", "unknown master key type %q", s)
}

// MarshalText encodes the keyword.
func (t Type) MarshalText() ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("invalid master key type %d", uint8(t))
	}
	return []byte(t.Keyword()), nil
}

// UnmarshalText parses a keyword or name.
func (t *Type) UnmarshalText(b []byte) error {
	v, err := ParseType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// maxSize is the longest pattern of any type.
const maxSize = 16

// Pattern is a verification pattern of 8 (CCA) or 16 (EP11) bytes. It is
// comparable and usable as a map key. The zero Pattern is "no pattern".
type Pattern struct {
	b [maxSize]byte
	n uint8
}

// New makes a pattern from exactly 8 or 16 bytes.
func New(b []byte) (Pattern, error) {
	if len(b) != 8 && len(b) != 16 {
		return Pattern{}, errclass.New(errclass.InvalidArgument,
			"verification pattern has %d bytes, want 8 (CCA) or 16 (EP11)", len(b))
	}
	var p Pattern
	p.n = uint8(copy(p.b[:], b))
	return p, nil
}

// ForType makes a pattern of type t from raw bytes, taking the first
// t.Size() bytes. It is for values read from hardware or sysfs (EP11 sysfs
// prints 32 bytes), not for operator input; use [Parse] for that.
func ForType(t Type, b []byte) (Pattern, error) {
	if !t.Valid() {
		return Pattern{}, errclass.New(errclass.InvalidArgument, "invalid master key type %d", uint8(t))
	}
	if len(b) < t.Size() {
		return Pattern{}, errclass.New(errclass.InvalidArgument,
			"%s verification pattern has %d bytes, want %d", t, len(b), t.Size())
	}
	return New(b[:t.Size()])
}

// Source says where an administrator finds the pattern of a new master
// key of type t. SYM is not in sysfs: the kernel's mkvps file has no SYM
// line.
func Source(t Type) string {
	switch t {
	case CCASYM:
		return "the TKE or 'panel.exe --mk-query --mktype=SYM --mkregister=NEW' ([RND]); SYM is not in sysfs (on the simulator: hsmsim show)"
	case CCAASYM:
		return "the TKE or 'panel.exe --mk-query --mktype=ASYM --mkregister=NEW' ([RND]), or the first 8 bytes of the 'ASYM NEW' line of /sys/bus/ap/devices/<card>.<domain>/mkvps (on the simulator: hsmsim show)"
	case CCAAES, CCAAPKA:
		return fmt.Sprintf("the '%s NEW' line of /sys/bus/ap/devices/<card>.<domain>/mkvps, or the TKE or 'panel.exe --mk-query --mktype=%[1]s --mkregister=NEW' ([VER]) (on the simulator: hsmsim show)", t.Keyword())
	case EP11WK:
		return "the 'WK NEW' line of /sys/bus/ap/devices/<card>.<domain>/mkvps, or 'ep11info -D' or the TKE (on the simulator: hsmsim show)"
	}
	return "the TKE"
}

// Parse reads an operator-supplied pattern for type t: an optional 0x or 0X
// prefix, then hex digits only.
//
// Too short, odd-length or non-hex input is an error. Extra bytes are
// accepted only where a longer form is printed by the system itself (EP11:
// the 32-byte sysfs value; CCA ASYM: the 16-byte sysfs value); they are
// ignored and their count is returned so the caller can warn. Other longer
// CCA patterns are an error.
func Parse(t Type, s string) (p Pattern, ignored int, err error) {
	if !t.Valid() {
		return Pattern{}, 0, errclass.New(errclass.InvalidArgument, "invalid master key type %d", uint8(t))
	}
	size := t.Size()
	hint := fmt.Sprintf("give the %s pattern as %d hex digits: %s", t, 2*size, Source(t))
	h := strings.TrimSpace(s)
	if strings.HasPrefix(h, "0x") || strings.HasPrefix(h, "0X") {
		h = h[2:]
	}
	for i, r := range h {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return Pattern{}, 0, errclass.Newh(errclass.InvalidArgument, hint,
				"%s pattern %q: character %q at position %d is not hexadecimal", t, s, r, i+1)
		}
	}
	switch {
	case len(h) < 2*size:
		return Pattern{}, 0, errclass.Newh(errclass.InvalidArgument, hint,
			"%s pattern %q is too short: %d hex digits, want %d", t, s, len(h), 2*size)
	case len(h)%2 != 0:
		return Pattern{}, 0, errclass.Newh(errclass.InvalidArgument, hint,
			"%s pattern %q has an odd number of hex digits", t, s)
	case len(h) > 2*size && !(t == EP11WK && len(h) == 64) && !(t == CCAASYM && len(h) == 32):
		return Pattern{}, 0, errclass.Newh(errclass.InvalidArgument, hint,
			"%s pattern %q is too long: %d hex digits, want %d", t, s, len(h), 2*size)
	}
	raw, err := hex.DecodeString(h)
	if err != nil { // unreachable after the checks above
		return Pattern{}, 0, errclass.Newh(errclass.InvalidArgument, hint, "%s pattern %q: %w", t, s, err)
	}
	p, err = New(raw[:size])
	return p, len(raw) - size, err
}

// Bytes returns a copy of the pattern bytes.
func (p Pattern) Bytes() []byte { return append([]byte(nil), p.b[:p.n]...) }

// Len is 0, 8 or 16.
func (p Pattern) Len() int { return int(p.n) }

// IsZero reports whether p is the zero Pattern (no pattern at all).
func (p Pattern) IsZero() bool { return p.n == 0 }

// String is upper-case hex, as `list` prints it.
func (p Pattern) String() string { return strings.ToUpper(hex.EncodeToString(p.b[:p.n])) }

// MarshalText encodes upper-case hex.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText decodes 16 or 32 hex digits (an empty text is the zero Pattern).
func (p *Pattern) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*p = Pattern{}
		return nil
	}
	raw, err := hex.DecodeString(string(b))
	if err != nil {
		return errclass.New(errclass.InvalidArgument, "verification pattern %q is not hexadecimal", b)
	}
	v, err := New(raw)
	if err != nil {
		return err
	}
	*p = v
	return nil
}
