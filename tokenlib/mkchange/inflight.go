package mkchange

import (
	"context"
	"os"
	"strconv"
	"sync"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
)

// Requests in flight.
//
// A real adapter serves several requests at once (its engines) and each
// takes hundreds of microseconds; a pass that waits for one reply before
// it sends the next request uses one engine of one adapter. A pass
// therefore keeps up to InFlight requests outstanding on every APQN of
// the operation at the same time: objects go to APQNs by handle
// (apqnFor), and each APQN has InFlight workers.
//
// The applications' share: the pass never has more than InFlight
// requests outstanding per APQN, whatever the adapter could take. The
// default, 3, keeps the pass within three engines of each adapter, so on
// an adapter with 4 engines (the conservative model of hsmsim(1)) one
// engine is always free for the applications' own requests, and on one
// with 8 (CEX7/CEX8 CCA model) more than half is. PKCSHSM_PASS_INFLIGHT
// (1..64) changes it for a process.

// DefaultInFlight is the number of requests a pass keeps outstanding per
// APQN unless PKCSHSM_PASS_INFLIGHT says otherwise.
const DefaultInFlight = 3

// MaxInFlight bounds PKCSHSM_PASS_INFLIGHT.
const MaxInFlight = 64

// InFlightEnv names the environment variable that sets the requests a
// pass keeps outstanding per APQN.
const InFlightEnv = "PKCSHSM_PASS_INFLIGHT"

// InFlight returns the requests a pass keeps outstanding per APQN: the
// value of PKCSHSM_PASS_INFLIGHT, or DefaultInFlight when it is unset. A
// value that is not a number in 1..MaxInFlight is an error naming it.
func InFlight() (int, error) {
	v, ok := os.LookupEnv(InFlightEnv)
	if !ok || v == "" {
		return DefaultInFlight, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxInFlight {
		return 0, errclass.Newh(errclass.InvalidArgument, "set it to a number of requests between 1 and 64, or unset it",
			"%s=%q is not a request count", InFlightEnv, v)
	}
	return n, nil
}

// Each runs fn for every index 0..n-1, the index's APQN given by apqnOf,
// with at most per calls running at the same time per APQN. The first
// error cancels the context the other calls get, no further call starts,
// and Each returns that error once every started call has returned. The
// order of the calls is not defined: fn must not depend on it.
func Each(ctx context.Context, n int, apqnOf func(i int) apqn.ID, per int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	per = max(per, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	byQueue := map[apqn.ID][]int{}
	var order []apqn.ID
	for i := range n {
		q := apqnOf(i)
		if _, ok := byQueue[q]; !ok {
			order = append(order, q)
		}
		byQueue[q] = append(byQueue[q], i)
	}
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for _, q := range order {
		idx := byQueue[q]
		var mu sync.Mutex
		next := 0
		take := func() (int, bool) {
			mu.Lock()
			defer mu.Unlock()
			if next == len(idx) || ctx.Err() != nil {
				return 0, false
			}
			next++
			return idx[next-1], true
		}
		for range min(per, len(idx)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i, ok := take()
					if !ok {
						return
					}
					if err := fn(ctx, i); err != nil {
						fail(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}
