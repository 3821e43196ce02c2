package mkchange

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
)

// Requests in flight.
//
// A real adapter serves several requests at once (its engines) and each
// takes hundreds of microseconds; a pass that waits for one reply before
// it sends the next request uses one engine of one adapter. A pass
// therefore keeps several requests outstanding on every APQN of the
// operation at the same time: objects go to APQNs by handle (apqnFor),
// and each APQN has its own window of requests in flight.
//
// The window adapts to what the adapter has free, from one signal that
// every adapter gives: the time a request takes. An adapter with a free
// engine serves a request in its service time; a request that finds every
// engine busy waits in the adapter's queue first. The pass keeps, per
// APQN and per kind of request (blob length: key type and size), the
// shortest time it has seen (the floor), and at the end of every round
// (as many completions as the window, at least minRound) estimates how
// many of its requests were waiting on average (Little's law: window ×
// time above the floor / time; over the fastest three quarters of the
// round, so that a reply the host collected late does not count). Above
// shrinkAbove in two rounds in a row — its own requests queue, because
// they exceed the engines or because applications' requests took some —
// the window shrinks by one; below growBelow the round was clean, and
// after enough clean completions the window grows by one, up to
// PKCSHSM_PASS_INFLIGHT. So a pass alone fills the engines (and the gaps
// its own CPU time leaves between requests), and gives an engine back
// when applications' requests start to queue behind its own. Growing is a
// probe: one that makes requests queue is undone, and the clean
// completions needed before the next probe double (up to maxNeed, a
// fraction of a second at 1 ms per request), so an application that keeps
// an engine busy sees its requests queued at most once per probe. The
// window stays at MinWindow or more. Nothing here depends on the
// simulator: the same rule holds on CCA and EP11 adapters through the
// host libraries. TestWindow* check the rule against a model of the
// adapter's queue; BenchmarkPassAdapterModel measures it (docs/bench.md).

// DefaultInFlight is the upper bound of the requests a pass keeps
// outstanding per APQN unless PKCSHSM_PASS_INFLIGHT says otherwise: the
// engines of a CEX7/CEX8 coprocessor (hsmsim(1), ADAPTER TIME).
const DefaultInFlight = 8

// MaxInFlight bounds PKCSHSM_PASS_INFLIGHT.
const MaxInFlight = 64

// InFlightEnv names the environment variable that sets the upper bound of
// the requests a pass keeps outstanding per APQN.
const InFlightEnv = "PKCSHSM_PASS_INFLIGHT"

// InFlight returns the upper bound of the requests a pass keeps
// outstanding per APQN: the value of PKCSHSM_PASS_INFLIGHT, or
// DefaultInFlight when it is unset. A value that is not a number in
// 1..MaxInFlight is an error naming it.
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

// MinWindow is the fewest requests a pass keeps outstanding per APQN
// (unless PKCSHSM_PASS_INFLIGHT is lower): what the pass kept before the
// window adapted, three engines of a four-engine adapter. A window that
// reads the time of its requests cannot tell an adapter's queue from a
// host too busy to collect the replies in time; below this it would give
// up the adapter's engines because of the host's load.
const MinWindow = 3

// Tuning of the window (see above).
const (
	// growBelow and shrinkAbove are the requests waiting on average in a
	// round below which the round is clean and above which the window
	// shrinks.
	growBelow   = 0.15
	shrinkAbove = 0.3
	// baseNeed is the clean completions needed before a probe once the
	// window has shrunk for the first time (before, it grows after every
	// clean round); maxNeed bounds its doubling after failed probes.
	baseNeed = 64
	maxNeed  = 1024
	// settleRounds: a growth followed by that many rounds without a
	// shrink succeeded, and halves the need again.
	settleRounds = 8
	// floorEpoch is how many completions of one kind a floor lasts: then
	// it is the shortest time of the last epoch, so that a floor from a
	// freak fast reply does not stay forever.
	floorEpoch = 1024
	// maxSlack is the most of a request's time above its floor that is
	// taken as noise (scheduling, the pass's own CPU work): a quarter of
	// the floor, at most this.
	maxSlack = 50 * time.Microsecond
	// congestedRounds is how many rounds in a row must see the pass's
	// requests queue before the window shrinks: a stall of the whole
	// process (the machine's scheduling, garbage collection) delays one
	// round's requests without any queue at the adapter.
	congestedRounds = 2
	// minRound is the fewest completions of a round (a round is as many
	// completions as the window, at least this).
	minRound = 8
)

// window is the adaptive request window of one APQN. Its methods are
// called with the Limiter's lock held.
type window struct {
	limit, least, max, inside int
	floors                    map[int]*floorTime
	// the current round: each request's time above its floor
	overs    []time.Duration
	floorSum time.Duration
	// history
	rounds, grownAt, clean, need int
	congested                    int // rounds in a row with requests queued
	shrunk                       bool
	fixed                        bool // fixedWindow: never adapts
	cond                         *sync.Cond
}

type floorTime struct {
	min, next time.Duration
	n         int
}

// fixedWindow, when above 0, makes every window that many requests and
// never adapt: benchmarks set it to compare with a fixed share.
var fixedWindow = 0

func newWindow(most int, mu *sync.Mutex) *window {
	if fixedWindow > 0 {
		return &window{limit: fixedWindow, max: fixedWindow, fixed: true, cond: sync.NewCond(mu)}
	}
	least := min(most, MinWindow)
	return &window{limit: least, least: least, max: most, grownAt: -1, need: 1, floors: map[int]*floorTime{}, cond: sync.NewCond(mu)}
}

// observe records one completed request of kind that took d, and adapts
// the limit at the end of a round.
func (w *window) observe(kind int, d time.Duration) {
	if w.fixed {
		return
	}
	f := w.floors[kind]
	if f == nil {
		f = &floorTime{min: d, next: d}
		w.floors[kind] = f
	}
	f.min, f.next = min(f.min, d), min(f.next, d)
	if f.n++; f.n == floorEpoch {
		f.min, f.next, f.n = f.next, d, 0
	}
	// The request's time above its floor, less what is taken as noise.
	slack := min(f.min/4, maxSlack)
	over := max(d-f.min-slack, 0)
	w.overs = append(w.overs, over)
	w.floorSum += f.min
	if len(w.overs) < max(w.limit, minRound) {
		return
	}
	// End of a round: how many of the pass's requests waited, on average
	// (Little's law over the fastest three quarters of the round, so that
	// a few replies the host collected late do not count as a queue).
	slices.Sort(w.overs)
	var sum time.Duration
	kept := w.overs[:len(w.overs)-len(w.overs)/4]
	for _, o := range kept {
		sum += o
	}
	mean := sum / time.Duration(len(kept))
	fl := w.floorSum / time.Duration(len(w.overs))
	queued := float64(w.limit) * float64(mean) / float64(fl+mean)
	n := len(w.overs)
	w.overs, w.floorSum = w.overs[:0], 0
	w.rounds++
	if queued > shrinkAbove {
		w.congested++
	} else {
		w.congested = 0
	}
	switch {
	case w.congested >= congestedRounds:
		w.congested = 0
		if w.grownAt >= 0 && w.rounds-w.grownAt <= settleRounds {
			// The last growth made requests queue: a failed probe.
			w.need = min(max(2*w.need, baseNeed), maxNeed)
		} else if !w.shrunk {
			w.need = baseNeed
		}
		w.shrunk, w.clean, w.grownAt = true, 0, -1
		if w.limit > w.least {
			w.limit--
		}
	case queued < growBelow:
		w.clean += n
		if w.grownAt >= 0 && w.rounds-w.grownAt == settleRounds && w.shrunk {
			w.need = max(baseNeed, w.need/2)
		}
		if !w.shrunk {
			w.need = w.limit // slow start: one clean round per step
		}
		if w.clean >= w.need && w.limit < w.max {
			w.limit++
			w.grownAt, w.clean = w.rounds, 0
			w.cond.Signal()
		}
	}
}

// Limiter holds the request windows of a pass, one per APQN; it lasts for
// the whole pass (every page), so what a window learnt carries over.
type Limiter struct {
	mu  sync.Mutex
	max int
	ws  map[apqn.ID]*window
}

// NewLimiter returns the windows of a pass that keeps at most most
// requests outstanding per APQN (at least 1). Each window starts at one
// request and grows while the APQN answers at its floor.
func NewLimiter(most int) *Limiter {
	return &Limiter{max: min(MaxInFlight, max(most, 1)), ws: map[apqn.ID]*window{}}
}

// Limit returns the current window of q.
func (l *Limiter) Limit(q apqn.ID) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.window(q).limit
}

func (l *Limiter) window(q apqn.ID) *window {
	w := l.ws[q]
	if w == nil {
		w = newWindow(l.max, &l.mu)
		l.ws[q] = w
	}
	return w
}

// acquire waits until q's window has room or ctx ends (false).
func (l *Limiter) acquire(ctx context.Context, w *window) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for w.inside >= w.limit {
		if ctx.Err() != nil {
			return false
		}
		w.cond.Wait()
	}
	if ctx.Err() != nil {
		return false
	}
	w.inside++
	return true
}

// release ends one request of w that took d (observed only when ok).
func (l *Limiter) release(w *window, kind int, d time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w.inside--
	if ok {
		w.observe(kind, d)
	}
	if w.inside < w.limit {
		w.cond.Signal()
	}
}

// wakeAll wakes every waiter (the context ended).
func (l *Limiter) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.ws {
		w.cond.Broadcast()
	}
}

// Each runs fn for every index 0..n-1, the index's APQN given by apqnOf,
// with at most as many calls running at the same time per APQN as lim's
// window of that APQN allows; kindOf (nil: one kind) says which requests
// share a floor, e.g. the blob's length. The first error cancels the
// context the other calls get, no further call starts, and Each returns
// that error once every started call has returned. The order of the calls
// is not defined: fn must not depend on it.
func Each(ctx context.Context, n int, apqnOf func(i int) apqn.ID, kindOf func(i int) int, lim *Limiter, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
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
	stop := context.AfterFunc(ctx, lim.wakeAll)
	defer stop()
	for _, q := range order {
		idx := byQueue[q]
		lim.mu.Lock()
		w := lim.window(q)
		lim.mu.Unlock()
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
		for range min(w.max, len(idx)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for lim.acquire(ctx, w) {
					i, ok := take()
					if !ok {
						lim.release(w, 0, 0, false)
						return
					}
					kind := 0
					if kindOf != nil {
						kind = kindOf(i)
					}
					start := time.Now()
					err := fn(ctx, i)
					lim.release(w, kind, time.Since(start), err == nil)
					if err != nil {
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
