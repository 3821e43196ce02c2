package testenv

import (
	"bytes"
	"context"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// LoadNew is the security officer loading a new master key of type t (made
// of the byte key repeated) into the NEW register of each APQN, committed
// for EP11. It returns the new key's verification pattern as the tools
// take it (-A, -e ...).
func (r *Root) LoadNew(t mkvp.Type, key byte, apqns ...apqn.ID) string {
	r.T.Helper()
	h := r.Sim()
	size := 32
	if t == mkvp.CCASYM {
		size = 24
	}
	var p mkvp.Pattern
	for _, q := range apqns {
		var err error
		if p, err = h.LoadNew(context.Background(), q, t, bytes.Repeat([]byte{key}, size), hsm.Part{}); err != nil {
			r.T.Fatal(err)
		}
		if t == mkvp.EP11WK {
			if err := h.Commit(context.Background(), q); err != nil {
				r.T.Fatal(err)
			}
		}
	}
	return p.String()
}

// SetNew is the officer activating the NEW master key of type t on each
// APQN.
func (r *Root) SetNew(t mkvp.Type, apqns ...apqn.ID) {
	r.T.Helper()
	h := r.Sim()
	for _, q := range apqns {
		if err := h.Set(context.Background(), q, t); err != nil {
			r.T.Fatal(err)
		}
	}
}
