package tokenlib

import (
	"context"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Info is CK_INFO; strings are blank padded to their C sizes.
type Info struct {
	CryptokiVersion    Version
	ManufacturerID     string // 32
	Flags              ck.Flags
	LibraryDescription string // 32
	LibraryVersion     Version
}

// GetInfo describes the library (C_GetInfo).
func (l *Library) GetInfo() Info {
	return Info{
		CryptokiVersion:    Version{2, 40},
		ManufacturerID:     pad(manufacturer, 32),
		LibraryDescription: pad("pkcshsm CCA/EP11 secure-key tokens", 32),
		LibraryVersion:     Version{1, 0},
	}
}

// SeedRandom is C_SeedRandom: the tokens' random source cannot be seeded.
func (l *Library) SeedRandom(h SessionHandle, seed []byte) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	s.mu.Unlock()
	return newErr(ck.CKR_RANDOM_SEED_NOT_SUPPORTED, errclass.FailedPrecondition, "the token's random source cannot be seeded")
}

// GetObjectSize is C_GetObjectSize: the number of bytes of the object's
// attribute values, an approximation of what it occupies in the store.
func (l *Library) GetObjectSize(h SessionHandle, oh ObjectHandle) (uint, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	o, err := t.objectLocked(context.Background(), oh)
	t.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, v := range o.attrs {
		n += len(v)
	}
	return uint(n), nil
}
