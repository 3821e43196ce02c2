package sim

import (
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/hsmtest"
)

var (
	ccaIDs  = []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}
	ep11IDs = []apqn.ID{apqn.MustParse("06.0033"), apqn.MustParse("0e.0033")}
	bg      = context.Background()
)

func testTopology() Topology {
	return Topology{Groups: []Group{
		{Mode: apqn.ModeCCA, APQNs: ccaIDs},
		{Mode: apqn.ModeEP11, APQNs: ep11IDs},
	}}
}

// newSim makes and opens a fresh simulator in a temporary directory.
func newSim(t *testing.T) (*HSM, string) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, testTopology()); err != nil {
		t.Fatal(err)
	}
	return openSim(t, dir), dir
}

func openSim(t testing.TB, dir string) *HSM {
	t.Helper()
	h, err := Open(dir, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestContract(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) hsmtest.Env {
		h, _ := newSim(t)
		return hsmtest.Env{Backend: h, Officer: h, CCA: ccaIDs, EP11: ep11IDs}
	})
}
