package tokenlib

import (
	"context"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// setDuringLogin is the simulator with the officer's `set` of the new
// wrapping key landing inside the first EP11 login it sees: the token
// looked at the APQN (old key CURRENT), then the adapter activates the new
// key, then the login answers under it — the race of a re-login with the
// officer's activation.
type setDuringLogin struct {
	*sim.HSM
	officer *sim.HSM
	t       testing.TB
	once    sync.Once
	armed   bool
	hit     bool
}

func (s *setDuringLogin) Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error) {
	if s.armed {
		s.once.Do(func() {
			setMK(s.t, s.officer, mkvp.EP11WK, q)
			s.hit = true
		})
	}
	return s.HSM.Login(ctx, q, pin, nonce)
}

// TestEP11ReloginRacesActivation: in STRICT and VHSM mode, a re-login
// (the APQN lost the session) that races the officer activating the new
// wrapping key on that APQN does not refuse the adapter's pin blob and
// does not log the session out there: the application's call succeeds
// and the session stays logged in on both APQNs.
func TestEP11ReloginRacesActivation(t *testing.T) {
	for _, row := range []ep11Slot{{1, true, false}, {1, false, true}} {
		name := "STRICT"
		if row.vhsm {
			name = "VHSM"
		}
		t.Run(name, func(t *testing.T) {
			layout := writeEP11Root(t, 0, row)
			setupEP11(t, layout, nil, row)
			o := officer(t, layout)
			be, err := sim.Open(layout.SimDir(), sim.Options{})
			must(t, err)
			defer be.Close()
			wrapper := &setDuringLogin{HSM: be, officer: o, t: t}
			l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, Backend: wrapper, NoAgent: true})
			must(t, err)
			defer l.Close()
			h := userSession(t, l, 1)
			k := genAES(t, l, h, "bound", false)
			must(t, encryptWith(l, h, k))
			recs := records(t, l, h)
			if len(recs) == 0 {
				t.Fatal("no EP11 session record")
			}
			pb := recs[0].Strict
			if pb == nil {
				pb = recs[0].VHSM
			}
			// The new wrapping key is loaded everywhere; the adapters lose
			// the session (reset), so the next call logs in again — and
			// the officer's set lands inside that login.
			loadNew(t, o, mkvp.EP11WK, epQ1, epQ2)
			ctx := context.Background()
			for _, q := range []apqn.ID{epQ1, epQ2} {
				must(t, be.Logout(ctx, q, pb))
			}
			wrapper.armed = true
			if err := encryptWith(l, h, k); err != nil {
				t.Fatalf("call during the re-login that raced the activation failed: %v (%v)", err, RV(err))
			}
			if !wrapper.hit {
				t.Fatal("the race was not exercised (no login after the adapters lost the session)")
			}
			for _, q := range []apqn.ID{epQ1, epQ2} {
				if n := simSessions(t, layout, q); n == 0 {
					t.Errorf("the session was logged out on %s", q)
				}
			}
			// And it keeps working afterwards, many times.
			for range 5 {
				must(t, encryptWith(l, h, k))
			}
		})
	}
}
