package mkchange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/hsmtest"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
)

// TestPassKeepsRequestsInFlight: a reencipher pass over two APQNs starts
// with min(per, MinWindow) requests inside the backend at the same time on
// each APQN — the gate lets none return before all are in — and never has
// more than per (PKCSHSM_PASS_INFLIGHT) on one APQN, however its window
// grows. Every key ends with a REENC blob under the new master key.
func TestPassKeepsRequestsInFlight(t *testing.T) {
	for _, per := range []int{1, 3, 5} {
		t.Run(fmt.Sprint(per), func(t *testing.T) {
			t.Setenv(InFlightEnv, fmt.Sprint(per))
			f := newFixture(t)
			keys, op, tok := passToken(t, f, 24)
			start := min(per, MinWindow)
			g := hsmtest.NewHeld(f.hsm, 2*start)
			n, err := tok.Pass(f.ctx, f.st, f.dk, g, op, state.ActReencipher, nil)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(keys) {
				t.Fatalf("pass changed %d keys, want %d", n, len(keys))
			}
			for _, q := range []apqn.ID{cca1, cca2} {
				if g.Most(q) < start || g.Most(q) > per {
					t.Errorf("APQN %s: at most %d requests in flight, want %d to %d", q, g.Most(q), start, per)
				}
			}
			newAES := op.New[mkvp.CCAAES]
			for _, k := range keys {
				b, err := hsm.DecodeBlob(f.get(k)[attrReenc])
				if err != nil || b.Pattern != newAES {
					t.Fatalf("key %d: REENC %v, %v; want a blob under %s", k.Handle, b.Pattern, err, newAES)
				}
			}
		})
	}
}

// TestPassStopsAtFirstError: one key the HSM refuses stops the pipelined
// pass with an error naming it, no further request starts, and the page
// it was in is not written.
func TestPassStopsAtFirstError(t *testing.T) {
	t.Setenv(InFlightEnv, "2")
	f := newFixture(t)
	keys, op, tok := passToken(t, f, 40)
	bad := keys[7]
	be := &failBackend{Backend: f.hsm, bad: string(bad.Attrs[attrOpaque])}
	_, err := tok.Pass(f.ctx, f.st, f.dk, be, op, state.ActReencipher, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("object %d", bad.Handle)) {
		t.Fatalf("pass with a refused key: %v", err)
	}
	if c := be.calls.Load(); c >= int64(len(keys)) {
		t.Fatalf("%d requests after the first error, want the pass to stop", c)
	}
	for _, k := range keys {
		if _, ok := f.get(k)[attrReenc]; ok {
			t.Fatalf("key %d has a REENC blob although its page failed", k.Handle)
		}
	}
}

type failBackend struct {
	hsm.Backend
	bad   string
	calls atomic.Int64
}

func (b *failBackend) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	b.calls.Add(1)
	if string(blob) == b.bad {
		return nil, errclass.New(errclass.FailedPrecondition, "refused: %w", hsm.ErrWrongMK)
	}
	time.Sleep(time.Millisecond) // let the failure overtake the others
	return b.Backend.Reencipher(ctx, q, blob, d)
}

func TestInFlightEnv(t *testing.T) {
	for v, want := range map[string]int{"": 8, "1": 1, "64": 64} {
		t.Setenv(InFlightEnv, v)
		if n, err := InFlight(); err != nil || n != want {
			t.Errorf("%s=%q: %d, %v; want %d", InFlightEnv, v, n, err, want)
		}
	}
	for _, v := range []string{"0", "65", "-1", "many", "3x"} {
		t.Setenv(InFlightEnv, v)
		_, err := InFlight()
		if errclass.Of(err) != errclass.InvalidArgument || !strings.Contains(err.Error(), InFlightEnv) {
			t.Errorf("%s=%q: %v, want an invalid argument naming it", InFlightEnv, v, err)
		}
	}
	// A pass with a bad setting changes nothing.
	t.Setenv(InFlightEnv, "0")
	f := newFixture(t)
	keys, op, tok := passToken(t, f, 3)
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); errclass.Of(err) != errclass.InvalidArgument {
		t.Fatalf("pass with %s=0: %v", InFlightEnv, err)
	}
	for _, k := range keys {
		if _, ok := f.get(k)[attrReenc]; ok {
			t.Fatal("a refused pass changed a key")
		}
	}
}

// TestEachStopsAndBounds: Each never runs more than per calls of one
// APQN at once and starts none after the first error.
func TestEachStopsAndBounds(t *testing.T) {
	qs := []apqn.ID{cca1, cca2}
	var mu sync.Mutex
	inside, most := map[apqn.ID]int{}, map[apqn.ID]int{}
	var started atomic.Int64
	boom := errors.New("boom")
	err := Each(context.Background(), 200, func(i int) apqn.ID { return qs[i%2] }, nil, NewLimiter(3), func(ctx context.Context, i int) error {
		started.Add(1)
		q := qs[i%2]
		mu.Lock()
		inside[q]++
		most[q] = max(most[q], inside[q])
		mu.Unlock()
		time.Sleep(200 * time.Microsecond)
		mu.Lock()
		inside[q]--
		mu.Unlock()
		if i == 40 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Each = %v, want the first error", err)
	}
	if most[cca1] > 3 || most[cca2] > 3 {
		t.Fatalf("most in flight per APQN %v, bound 3", most)
	}
	if s := started.Load(); s >= 200 {
		t.Fatalf("%d calls started, want a stop after the error", s)
	}
}
