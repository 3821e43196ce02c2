package slotd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// hub is the daemon's bookkeeping: the connected processes and the events
// still waiting for answers. One mutex guards both; it is held only for
// map updates and non-blocking queue pushes, never across I/O, so a hung or
// dead process cannot stall another connection or another broadcast.
type hub struct {
	log    zerolog.Logger
	prefix string // distinguishes event ids of different daemon runs

	mu      sync.Mutex
	apps    map[uint64]*appConn
	pending map[string]*pendingEvent
	order   []*pendingEvent // pending events, oldest first
	nextEv  uint64
}

// pendingEvent is one broadcast in flight. results has one entry per
// addressed connection; waiting counts the entries without an outcome.
type pendingEvent struct {
	ev       event.Event
	deadline time.Time // on this process's monotonic clock
	results  map[uint64]*event.ProcessResult
	waiting  int
	done     chan struct{} // closed when waiting reaches 0
}

func newHub(log zerolog.Logger) *hub {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &hub{
		log:     log,
		prefix:  hex.EncodeToString(b[:]),
		apps:    map[uint64]*appConn{},
		pending: map[string]*pendingEvent{},
	}
}

// addTo addresses pe to c if c matches its target. Caller holds h.mu.
func (pe *pendingEvent) addTo(c *appConn) {
	if _, ok := pe.results[c.id]; ok || !pe.ev.Target.MatchProcess(c.hello.PID, c.hello.Tokens) {
		return
	}
	pe.results[c.id] = &event.ProcessResult{
		PID: c.hello.PID, UID: c.hello.UID, Program: c.hello.Program, Command: c.command, Tokens: c.hello.Tokens,
	}
	pe.waiting++
	ev := pe.ev
	// The process gets what is left of the time, as a duration; at least
	// a millisecond, so a process registering just at the deadline still
	// gets a valid event (and is counted as timed out at once).
	ev.Timeout = max(event.TimeoutOf(time.Until(pe.deadline)), 1)
	c.send(event.Wrap(&ev))
}

// settle records an outcome for conn id, once. Caller holds h.mu.
func (pe *pendingEvent) settle(id uint64, outcome event.ProcessOutcome, results []event.TokenResult) bool {
	r, ok := pe.results[id]
	if !ok || r.Outcome != "" {
		return false
	}
	r.Outcome, r.Results = outcome, results
	pe.waiting--
	if pe.waiting == 0 {
		close(pe.done)
	}
	return true
}

// register adds a process that said hello, queues its welcome, and hands
// it every event still pending that addresses it, oldest first. Doing all
// of it under the lock means a process that has its welcome is addressed by
// every broadcast after that.
func (h *hub) register(c *appConn, welcome event.Message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.apps[c.id] = c
	c.send(welcome)
	for _, pe := range h.order {
		pe.addTo(c)
	}
}

// unregister removes a process; events it had not answered count it as
// disconnected.
func (h *hub) unregister(c *appConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.apps[c.id]; !ok {
		return
	}
	delete(h.apps, c.id)
	for _, pe := range h.pending {
		pe.settle(c.id, event.Disconnected, nil)
	}
}

// reply records a process's answer. Answers to events that are no longer
// pending (late, after the deadline) or not addressed to it are dropped.
func (h *hub) reply(c *appConn, r *event.Reply) {
	h.mu.Lock()
	pe, ok := h.pending[r.EventID]
	accepted := ok && pe.settle(c.id, event.Replied, r.Tokens)
	h.mu.Unlock()
	if !accepted {
		h.log.Debug().Str("event", r.EventID).Int32("pid", c.hello.PID).Msg("dropped reply to an event not pending for this process")
	}
}

// updateTokens replaces a process's token list for later broadcasts.
// c.hello.Tokens is only read and written under h.mu once c is registered.
func (h *hub) updateTokens(c *appConn, tokens []event.Token) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.hello.Tokens = tokens
}

// status lists the connected processes in connection order.
func (h *hub) status() (procs []event.Process, pending int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.apps {
		procs = append(procs, event.Process{Conn: c.id, PID: c.hello.PID, UID: c.hello.UID,
			Program: c.hello.Program, Command: c.command, Tokens: c.hello.Tokens})
	}
	slices.SortFunc(procs, func(a, b event.Process) int { return int64cmp(a.Conn, b.Conn) })
	return procs, len(h.pending)
}

func int64cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// broadcast relays ev to every addressed process and waits until each has
// answered or gone, the deadline (from time.Now, so on the monotonic clock)
// passes, or ctx ends (daemon shutdown). Processes still silent then are
// reported as timed out.
func (h *hub) broadcast(ctx context.Context, ev event.Event, deadline time.Time) event.Account {
	h.mu.Lock()
	h.nextEv++
	ev.ID = fmt.Sprintf("%s-%d", h.prefix, h.nextEv)
	pe := &pendingEvent{ev: ev, deadline: deadline, results: map[uint64]*event.ProcessResult{}, done: make(chan struct{})}
	h.pending[ev.ID] = pe
	h.order = append(h.order, pe)
	for _, c := range h.apps {
		pe.addTo(c)
	}
	if pe.waiting == 0 {
		close(pe.done)
	}
	addressed := len(pe.results)
	h.mu.Unlock()
	failpoint.Hit("daemon.broadcast.after-send")

	log := h.log.With().Str("event", ev.ID).Str("type", ev.Type).Str("op", ev.OpID).Logger()
	log.Info().Int("processes", addressed).Dur("timeout", time.Until(deadline)).Msg("broadcasting event")

	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-pe.done:
	case <-timer.C:
	case <-ctx.Done():
	}

	h.mu.Lock()
	delete(h.pending, ev.ID)
	h.order = slices.DeleteFunc(h.order, func(p *pendingEvent) bool { return p == pe })
	ids := make([]uint64, 0, len(pe.results))
	for id, r := range pe.results {
		if r.Outcome == "" {
			r.Outcome = event.TimedOut
		}
		ids = append(ids, id)
	}
	h.mu.Unlock()
	slices.Sort(ids)
	acct := event.Account{EventID: ev.ID, Type: ev.Type, Timeout: ev.Timeout}
	for _, id := range ids {
		acct.Processes = append(acct.Processes, *pe.results[id])
	}
	t := acct.Tally()
	log.Info().Int("processes", t.Processes).Int("replied", t.Replied).Int("timed_out", t.TimedOut).
		Int("disconnected", t.Disconnected).Int("tokens_failed", t.Failed).Msg("event settled")
	for _, p := range acct.Processes {
		if p.Outcome != event.Replied {
			log.Warn().Int32("pid", p.PID).Str("program", p.Program).Str("command", p.Command).
				Str("outcome", string(p.Outcome)).Msg("process did not answer")
		}
	}
	return acct
}
