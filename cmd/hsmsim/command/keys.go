package command

import (
	"crypto/rand"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func randomKey(t mkvp.Type) ([]byte, error) {
	k := make([]byte, sim.KeySize(t))
	if _, err := rand.Read(k); err != nil {
		return nil, errclass.New(errclass.Internal, "random master key: %w", err)
	}
	return k, nil
}
