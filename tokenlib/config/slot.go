package config

import (
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// LoadCCA loads the token configuration of a CCA slot: the file named by
// confname, or [DefaultCCA] when the slot has none (as upstream, where a
// CCA slot without confname runs with defaults).
func (s *Slot) LoadCCA() (*CCA, error) {
	if s.Type != TypeCCA {
		return nil, errclass.New(errclass.InvalidArgument, "slot %d holds a token of type %s, not a CCA token", s.ID, s.Type)
	}
	if s.ConfName == "" {
		return DefaultCCA(), nil
	}
	c, err := LoadCCA(s.ConfName)
	if err != nil {
		return nil, fmt.Errorf("slot %d: %w", s.ID, err)
	}
	return c, nil
}

// LoadEP11 loads the token configuration of an EP11 slot: the file named by
// confname, default ep11tok.conf in the configuration directory. The file
// must exist, because an EP11 token needs an APQN mode.
func (s *Slot) LoadEP11() (*EP11, error) {
	if s.Type != TypeEP11 {
		return nil, errclass.New(errclass.InvalidArgument, "slot %d holds a token of type %s, not an EP11 token", s.ID, s.Type)
	}
	e, err := LoadEP11(s.ConfName)
	if err != nil {
		return nil, fmt.Errorf("slot %d: %w", s.ID, err)
	}
	return e, nil
}
