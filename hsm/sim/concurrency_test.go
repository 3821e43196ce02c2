package sim

import (
	"errors"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// TestConcurrentUseDuringChanges runs workers on two handles while an
// officer goroutine loads and sets master keys over and over. Every
// operation must either succeed or fail because its key's master key went
// away (ErrWrongMK) — never with a torn or corrupt view of the state.
func TestConcurrentUseDuringChanges(t *testing.T) {
	officer, dir := newSim(t)
	handles := []*HSM{openSim(t, dir), openSim(t, dir)}
	const rounds = 15
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i, h := range handles {
		for _, q := range []apqn.ID{ccaIDs[i], ep11IDs[i]} {
			wg.Add(1)
			go func(h *HSM, q apqn.ID) {
				defer wg.Done()
				for {
					k, err := h.GenerateKey(bg, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128})
					if err != nil {
						errs <- err
						return
					}
					_, err = h.Encrypt(bg, q, k, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
					if err != nil && !errors.Is(err, hsm.ErrWrongMK) {
						errs <- err
						return
					}
					select {
					case <-done:
						return
					default:
					}
				}
			}(h, q)
		}
	}
	for r := 0; r < rounds; r++ {
		err := officer.Do(bg, func(tx *Tx) error {
			for _, q := range ccaIDs {
				if _, err := tx.LoadNew(q, mkvp.CCAAES, nil, hsm.Part{}); err != nil {
					return err
				}
				if err := tx.Set(q, mkvp.CCAAES); err != nil {
					return err
				}
			}
			for _, q := range ep11IDs {
				if _, err := tx.LoadNew(q, mkvp.EP11WK, nil, hsm.Part{}); err != nil {
					return err
				}
				if err := tx.Commit(q); err != nil {
					return err
				}
				if err := tx.Set(q, mkvp.EP11WK); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every handle ends on the officer's last keys.
	want := mustQueue(t, officer, ccaIDs[0]).MK[mkvp.CCAAES].Current.Pattern
	for _, h := range handles {
		if got := mustQueue(t, h, ccaIDs[0]).MK[mkvp.CCAAES].Current.Pattern; got != want {
			t.Errorf("handle sees CURRENT %s, officer set %s", got, want)
		}
	}
}
