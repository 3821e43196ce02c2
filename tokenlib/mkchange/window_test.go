package mkchange

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// adapterModel is a discrete-event model of two APQNs (E engines each,
// service time S, requests served in arrival order on the engine that
// frees first, as hsm/sim and a real adapter's queue do), a pass that
// keeps each APQN's window of requests in flight (the window under test,
// observing each request's time as Each does), and optionally an
// application that sends one request after the other, round robin over the
// two APQNs, thinking think between requests. No real time passes: the
// test checks the window's decisions, not the machine's speed.
type adapterModel struct {
	engines int
	svc     time.Duration
	gap     time.Duration // the pass's CPU time between two requests of one worker
	jitter  time.Duration // up to this much host delay on each reply (pseudo-random)
	app     bool
	think   time.Duration
	most    int // the window's upper bound
	fixed   int // >0: a fixed window instead of the adaptive one
}

type modelResult struct {
	passRate float64 // requests per second
	bound    float64 // 2 engines×E / S
	app      []time.Duration
	limits   []int // the windows at the end
}

type event struct {
	at   time.Duration
	q    int
	app  bool
	sent time.Duration
}

type events []event

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].at < e[j].at }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

func (m adapterModel) run(d time.Duration) modelResult {
	rng := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	free := [2][]time.Duration{make([]time.Duration, m.engines), make([]time.Duration, m.engines)}
	// reserve books the engine that frees first, from time t.
	reserve := func(q int, t time.Duration) time.Duration {
		best := 0
		for j := range free[q] {
			if free[q][j] < free[q][best] {
				best = j
			}
		}
		end := max(t, free[q][best]) + m.svc
		free[q][best] = end
		return end
	}
	ws := [2]*window{newWindow(m.most, &mu), newWindow(m.most, &mu)}
	if m.fixed > 0 {
		for _, w := range ws {
			w.limit, w.max = m.fixed, m.fixed
		}
	}
	inside := [2]int{}
	var h events
	done := 0
	var appLat []time.Duration
	appQ := 0
	// send starts as many pass requests on q as its window allows.
	send := func(q int, t time.Duration) {
		for inside[q] < ws[q].limit {
			inside[q]++
			heap.Push(&h, event{at: reserve(q, t), q: q, sent: t})
		}
	}
	sendApp := func(t time.Duration) {
		heap.Push(&h, event{at: reserve(appQ, t), q: appQ, app: true, sent: t})
		appQ ^= 1
	}
	send(0, 0)
	send(1, 0)
	if m.app {
		sendApp(0)
	}
	for h.Len() > 0 {
		e := heap.Pop(&h).(event)
		if e.at > d {
			break
		}
		host := time.Duration(0)
		if m.jitter > 0 {
			host = time.Duration(rng.Int64N(int64(m.jitter)))
		}
		if e.app {
			appLat = append(appLat, e.at+host-e.sent)
			sendApp(e.at + host + m.think)
			continue
		}
		done++
		inside[e.q]--
		took := e.at + host - e.sent + m.gap/2
		if m.fixed == 0 {
			ws[e.q].observe(0, took)
		}
		send(e.q, e.at+host+m.gap)
	}
	slices.Sort(appLat)
	return modelResult{
		passRate: float64(done) / d.Seconds(),
		bound:    2 * float64(m.engines) / m.svc.Seconds(),
		app:      appLat,
		limits:   []int{ws[0].limit, ws[1].limit},
	}
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[len(ds)*99/100]
}

// TestWindowFillsIdleAdapter: a pass alone on 1 ms × 4 engines × 2 APQNs,
// with 250 µs of its own CPU between a worker's requests. A fixed window of
// 4 (the engines) leaves the engines idle during that CPU time (80 % of the
// bound); the adaptive window grows past it until its own requests queue,
// and reaches at least 90 %, without growing to its upper bound (8), where
// every request would wait.
func TestWindowFillsIdleAdapter(t *testing.T) {
	m := adapterModel{engines: 4, svc: time.Millisecond, gap: 250 * time.Microsecond, jitter: 30 * time.Microsecond, most: 8}
	r := m.run(10 * time.Second)
	m.fixed = 4
	f := m.run(10 * time.Second)
	t.Logf("adaptive: %.0f req/s (%.0f %% of %.0f), windows %v; fixed 4: %.0f req/s", r.passRate, 100*r.passRate/r.bound, r.bound, r.limits, f.passRate)
	if r.passRate < 0.9*r.bound {
		t.Errorf("adaptive window: %.0f requests/s, want at least 90 %% of %.0f", r.passRate, r.bound)
	}
	if r.passRate <= f.passRate {
		t.Errorf("adaptive window %.0f requests/s, not above a fixed window of the engine count (%.0f)", r.passRate, f.passRate)
	}
	for _, l := range r.limits {
		if l >= 7 {
			t.Errorf("window grew to %d on a 4-engine adapter: its requests queue", l)
		}
	}
}

// TestWindowLeavesRoomForApplication: the same adapters and pass with an
// application that keeps one request outstanding all the time (round robin
// over the two APQNs). Its p99 stays within 1.5× its own time alone (the
// service time, the adapter idle for it), and the pass still gets at
// least 75 % of the bound; a window fixed at the upper bound (8) makes the
// application wait behind the pass's queue.
func TestWindowLeavesRoomForApplication(t *testing.T) {
	m := adapterModel{engines: 4, svc: time.Millisecond, gap: 250 * time.Microsecond, jitter: 30 * time.Microsecond, most: 8, app: true}
	r := m.run(10 * time.Second)
	// Alone, the application's request takes the service time and the
	// host's delay.
	base := m.svc + m.jitter
	t.Logf("adaptive: pass %.0f req/s (%.0f %%), windows %v, app p50 %v p99 %v (%d calls)", r.passRate, 100*r.passRate/r.bound, r.limits, r.app[len(r.app)/2], p99(r.app), len(r.app))
	if got := p99(r.app); got > base*3/2 {
		t.Errorf("application p99 %v during the pass, want at most 1.5 × %v", got, base)
	}
	if r.passRate < 0.75*r.bound {
		t.Errorf("pass %.0f requests/s with the application, want at least 75 %% of %.0f", r.passRate, r.bound)
	}
	for _, fixed := range []int{3, 4} {
		m.fixed = fixed
		f := m.run(10 * time.Second)
		t.Logf("fixed %d: pass %.0f req/s (%.0f %%), app p50 %v p99 %v", fixed, f.passRate, 100*f.passRate/f.bound, f.app[len(f.app)/2], p99(f.app))
	}
	m.fixed = 8
	f := m.run(10 * time.Second)
	if p99(f.app) <= base*3/2 {
		t.Errorf("a fixed window of 8 gave the application p99 %v: the model does not queue", p99(f.app))
	}
}

// TestWindowShrinksWhenApplicationArrives and grows back after it left:
// the window follows the adapter's free engines.
func TestWindowShrinksAndGrowsBack(t *testing.T) {
	var mu sync.Mutex
	w := newWindow(8, &mu)
	svc := time.Millisecond
	// Alone, every request at the floor: slow start to the bound.
	for range 200 {
		w.observe(0, svc)
	}
	if w.limit != 8 {
		t.Fatalf("window %d after 200 requests at the floor, want the bound 8", w.limit)
	}
	// Requests now wait half a service time: the window shrinks, one
	// step per two congested rounds, down to where they no longer wait.
	for range 8 * 4 {
		w.observe(0, svc*3/2)
	}
	if w.limit >= 8 {
		t.Fatalf("window %d after congested rounds, want it smaller", w.limit)
	}
	shrunk := w.limit
	// One round at the floor does not grow it at once (a probe waits for
	// baseNeed clean requests)...
	for range 8 {
		w.observe(0, svc)
	}
	if w.limit != shrunk {
		t.Fatalf("window %d right after the congestion, want %d kept", w.limit, shrunk)
	}
	// ... but enough clean ones do.
	for range 2 * baseNeed {
		w.observe(0, svc)
	}
	if w.limit <= shrunk {
		t.Fatalf("window %d after %d clean requests, want more than %d", w.limit, 2*baseNeed, shrunk)
	}
	// A probe that makes requests queue at once is undone, and the next
	// probe needs twice as many clean requests.
	need := w.need
	for range 2 * max(w.limit, minRound) {
		w.observe(0, 2*svc)
	}
	if w.need != 2*need {
		t.Fatalf("need %d after a failed probe, want %d", w.need, 2*need)
	}
	// Noise in single requests (a quarter of each round slowed) is not a
	// queue.
	l := w.limit
	for i := range 40 * minRound {
		d := svc
		if i%4 == 0 {
			d = 5 * svc
		}
		w.observe(0, d)
	}
	if w.limit < l {
		t.Fatalf("window shrank from %d to %d on single slow replies", l, w.limit)
	}
}
