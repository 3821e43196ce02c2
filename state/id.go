package state

import (
	"crypto/rand"
	"unicode/utf8"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// ID names a master key change operation: six characters from [A-Za-z0-9],
// case-sensitive. It is the operation file's name, so it is validated
// wherever it comes in from outside.
type ID string

const (
	idLen     = 6
	idAlpha   = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	idHint    = "an operation id is the 6 letters and digits printed by 'pkcshsm_mk_change reencipher'; 'pkcshsm_mk_change list' shows the active ones"
	maxIDTry  = 100
	alphaSize = len(idAlpha)
)

// NewID draws a random ID.
func NewID() (ID, error) {
	var b [idLen]byte
	out := make([]byte, 0, idLen)
	for len(out) < idLen {
		if _, err := rand.Read(b[:]); err != nil {
			return "", errclass.New(errclass.Internal, "failed to draw an operation id: %w", err)
		}
		for _, c := range b {
			// Reject values that would bias the distribution.
			if int(c) < 256-256%alphaSize && len(out) < idLen {
				out = append(out, idAlpha[int(c)%alphaSize])
			}
		}
	}
	return ID(out), nil
}

// ParseID validates an operation id given by a person or read from a name.
func ParseID(s string) (ID, error) {
	// Characters, not bytes: "abcdé" is five characters, and the message
	// names the character, not a byte of its encoding.
	if n := utf8.RuneCountInString(s); n != idLen {
		return "", errclass.Newh(errclass.InvalidArgument, idHint,
			"invalid operation id %q: want %d characters, got %d", s, idLen, n)
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return "", errclass.Newh(errclass.InvalidArgument, idHint,
				"invalid operation id %q: character %q is not a letter or digit", s, c)
		}
	}
	return ID(s), nil
}

// String returns the id.
func (id ID) String() string { return string(id) }
