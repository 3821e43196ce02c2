package tokenlib

import (
	"context"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"

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

// TestEP11SessionsThroughActivation: in STRICT and VHSM mode, several
// threads, each with its own PKCS#11 session and session-bound keys, keep
// making and using keys while the officer activates the new wrapping key
// on one APQN and then the other and the change finalizes: their logins
// under the new key and the keys they make race the activations. No call
// may fail. (TestEP11ReloginRacesActivation makes the worst interleaving
// happen every time.)
func TestEP11SessionsThroughActivation(t *testing.T) {
	for _, row := range []ep11Slot{{1, true, false}, {1, false, true}, {1, true, true}} {
		name := map[[2]bool]string{{true, false}: "STRICT", {false, true}: "VHSM", {true, true}: "STRICT+VHSM"}[[2]bool{row.strict, row.vhsm}]
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			layout := writeEP11Root(t, 0, row)
			setupEP11(t, layout, nil, row)
			o := officer(t, layout)
			newP := loadNew(t, o, mkvp.EP11WK, epQ1, epQ2)
			d := opsDir(t, layout)
			op := createOp(t, d, mkvp.EP11WK, newP, state.Reenciphered, epQ1, epQ2)
			l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoAgent: true})
			must(t, err)
			defer l.Close()

			const workers = 3
			stop := make(chan struct{})
			started := make(chan struct{}, workers)
			errs := make(chan error, workers)
			var ops [workers]int
			for w := range workers {
				h := userSession(t, l, 1)
				go func() {
					var first error
					fail := func(err error) {
						if err != nil && first == nil {
							first = err
						}
					}
					k, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("w", false))
					fail(err)
					for n := 0; ; n++ {
						select {
						case <-stop:
							errs <- first
							return
						default:
						}
						if n%8 == 7 {
							nk, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate("w", false))
							fail(err)
							if err == nil {
								k = nk
							}
						}
						fail(aesRoundTrip(l, h, k))
						ops[w]++
						if n == 0 {
							started <- struct{}{}
						}
					}
				}()
			}
			for range workers {
				<-started
			}
			for _, q := range []apqn.ID{epQ1, epQ2} {
				setMK(t, o, mkvp.EP11WK, q)
				_, err = l.reconcile(ctx)
				must(t, err)
			}
			moveOp(t, d, op.ID, state.Finalizing)
			_, err = l.reconcile(ctx)
			must(t, err)
			close(stop)
			for range workers {
				if err := <-errs; err != nil {
					t.Errorf("application call failed while the APQNs activated the new wrapping key: %v (%v)", err, RV(err))
				}
			}
			for w, n := range ops {
				if n < 2 {
					t.Errorf("worker %d made only %d calls", w, n)
				}
			}
		})
	}
}
