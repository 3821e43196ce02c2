// Package agent is the runtime agent that lives inside every process using
// the token library. It keeps the process connected to pkcshsmd, hands the
// daemon's events to the token library, and keeps the process in step with
// the master key change operation files.
//
// # Use
//
// The token library implements [Handler] and starts one agent per process:
//
//	a, err := agent.New(agent.Options{
//		AppSocket: paths.FromEnv().AppSocket(),
//		OpsDir:    paths.FromEnv().MKChangeDir(),
//		Handler:   lib,
//		Logger:    log,
//	})
//	if err != nil { ... }
//	if err := a.Start(ctx); err != nil { ... }
//	defer a.Close()
//
// Start returns at once; the daemon need not be running. The agent connects
// in the background, says hello (pid, uid, program, [Handler.Tokens]),
// and from then on calls [Handler.HandleEvent] for each event and sends its
// reply. When the connection breaks (daemon restart, bad frame) the agent
// reconnects with capped exponential backoff (MinBackoff doubling up to
// MaxBackoff, each wait spread by ±20%) and says hello again.
//
// # Reconciling
//
// The operation files are the truth; events are only the fast path. The
// agent calls [Handler.Reconcile] once after Start, after every
// (re)connection to the daemon, and after every change it sees in OpsDir
// (debounced: a burst of changes gives one call). OpsDir may not exist yet:
// the agent then watches its nearest existing parent and moves the watch
// down as directories appear. If inotify is unavailable (for example the
// per-user instance limit is reached) it polls OpsDir every PollInterval
// instead. Reconcile calls never overlap.
//
// # Concurrency
//
// The agent runs in its own goroutines and shares no lock with the
// application: an application call is never blocked by the agent, only by
// whatever locks the handler itself takes. Events of one process are
// handled one at a time, in order, each with its deadline as the context
// deadline; a handler that panics yields a failed reply, never a crash.
// Close cancels the agent's context and waits for its goroutines, so a
// handler must honour its context. The wait is bounded (CloseTimeout): a
// handler stuck where no context reaches (a blocking read) is left behind,
// reported in the log and by Close's error, and never holds up the
// process's shutdown.
package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// Handler is what the token library implements for its agent. Its methods
// are called from the agent's goroutines: HandleEvent calls never overlap
// each other, Reconcile calls never overlap each other, but a HandleEvent
// and a Reconcile may run at the same time, and Tokens may be called from
// any of the agent's goroutines at any time.
type Handler interface {
	// Tokens lists the process's tokens that take part in master key
	// changes; it is sent in every hello.
	Tokens() []event.Token
	// HandleEvent acts on one event and reports a result per token (the
	// agent fills in the event id). ctx carries the event's deadline.
	HandleEvent(ctx context.Context, ev event.Event) event.Reply
	// Reconcile brings the process in line with the operation files.
	Reconcile(ctx context.Context) error
}

// Options configure an [Agent]. Zero durations take the documented defaults.
type Options struct {
	// AppSocket is the daemon's app socket (required).
	AppSocket string
	// OpsDir is the operation-state directory to watch; empty disables
	// watching (Reconcile then runs only on start and on reconnect).
	OpsDir string
	// Program names the process in the daemon's accounts; default the base
	// name of os.Args[0].
	Program string
	// Logger receives the agent's log; the zero Logger discards it.
	Logger zerolog.Logger
	// Handler is the token library (required).
	Handler Handler
	// MinBackoff and MaxBackoff bound the reconnect delay (100 ms, 5 s).
	MinBackoff, MaxBackoff time.Duration
	// Debounce is the quiet time after a directory change before Reconcile
	// runs (100 ms).
	Debounce time.Duration
	// PollInterval is the polling period when inotify is unavailable (5 s).
	PollInterval time.Duration
	// CloseTimeout bounds how long Close waits for a handler call to
	// return (5 s).
	CloseTimeout time.Duration
}

// Agent is one process's connection to pkcshsmd.
type Agent struct {
	opts Options
	log  zerolog.Logger

	started   atomic.Bool
	connected atomic.Bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	reconcile chan struct{} // cap 1: pending requests coalesce
	jobs      chan job      // events waiting for the handler

	mu   sync.Mutex
	conn net.Conn                  // current connection, closed by Close
	send func(event.Message) error // writes on the current connection; nil when not connected
}

// New checks opts and returns an agent that is not yet running.
func New(opts Options) (*Agent, error) {
	if opts.AppSocket == "" {
		return nil, errclass.New(errclass.InvalidArgument, "agent: app socket path is required")
	}
	if opts.Handler == nil {
		return nil, errclass.New(errclass.InvalidArgument, "agent: handler is required")
	}
	if opts.Program == "" {
		opts.Program = filepath.Base(os.Args[0])
	}
	if len(opts.Program) > 64 {
		opts.Program = opts.Program[:64]
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.MinBackoff, 100*time.Millisecond)
	def(&opts.MaxBackoff, 5*time.Second)
	def(&opts.Debounce, 100*time.Millisecond)
	def(&opts.PollInterval, 5*time.Second)
	def(&opts.CloseTimeout, 5*time.Second)
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	return &Agent{
		opts:      opts,
		log:       opts.Logger.With().Str("component", "agent").Logger(),
		reconcile: make(chan struct{}, 1),
		jobs:      make(chan job, 16),
	}, nil
}

// Start launches the agent's goroutines and returns at once. The agent runs
// until ctx ends or Close is called. Start may be called once.
func (a *Agent) Start(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errclass.New(errclass.FailedPrecondition, "agent: already started")
	}
	ctx, a.cancel = context.WithCancel(ctx)
	a.spawn(func() { a.reconcileLoop(ctx) })
	a.spawn(func() { a.work(ctx) })
	a.spawn(func() { a.connectLoop(ctx) })
	if a.opts.OpsDir != "" {
		// The watcher asks for the start reconcile once its watch is in
		// place, so no change can fall between the two.
		a.spawn(func() { a.watch(ctx) })
	} else {
		a.requestReconcile()
	}
	return nil
}

func (a *Agent) spawn(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// Close stops the agent, closes its connection and waits for its
// goroutines (and so for a running handler call to return), at most
// CloseTimeout. A handler call still running then is left behind: Close
// logs it and returns an error of class DeadlineExceeded.
func (a *Agent) Close() error {
	if !a.started.Load() {
		return nil
	}
	a.cancel()
	a.mu.Lock()
	if a.conn != nil {
		a.conn.Close()
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(a.opts.CloseTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		a.log.Error().Dur("waited", a.opts.CloseTimeout).
			Msg("runtime agent did not stop in time: a handler call is stuck; leaving it behind")
		return errclass.New(errclass.DeadlineExceeded,
			"agent: a handler call did not return within %s of Close", a.opts.CloseTimeout)
	}
}

// Connected reports whether the agent currently has a welcomed connection.
func (a *Agent) Connected() bool { return a.connected.Load() }

// UpdateTokens tells the daemon that [Handler.Tokens] changed (a token was
// added or removed). Broadcasts made after the daemon has read the update
// address the new list. Without a connection it does nothing: the next
// hello carries the new list anyway.
func (a *Agent) UpdateTokens() error {
	a.mu.Lock()
	send := a.send
	a.mu.Unlock()
	if send == nil {
		return nil
	}
	return send(event.Wrap(&event.TokenUpdate{Tokens: a.opts.Handler.Tokens()}))
}

// RequestReconcile asks for a [Handler.Reconcile] call soon; requests
// made while one is pending coalesce into it.
func (a *Agent) RequestReconcile() { a.requestReconcile() }

func (a *Agent) requestReconcile() {
	select {
	case a.reconcile <- struct{}{}:
	default:
	}
}

func (a *Agent) reconcileLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reconcile:
		}
		if err := a.callReconcile(ctx); err != nil {
			a.log.Warn().Err(err).Msg("reconcile failed")
		}
	}
}

func (a *Agent) callReconcile(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errclass.New(errclass.Internal, "reconcile panicked: %v", r)
		}
	}()
	return a.opts.Handler.Reconcile(ctx)
}

// jitter spreads d over [0.8d, 1.2d), so that the processes that lost a
// restarting daemon at the same moment do not all come back at once.
func jitter(d time.Duration) time.Duration {
	return d*8/10 + rand.N(d*4/10+1)
}

// wait sleeps for d or until ctx ends; it reports whether ctx is still live.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (a *Agent) connectLoop(ctx context.Context) {
	backoff := a.opts.MinBackoff
	failures := 0
	for ctx.Err() == nil {
		conn, err := a.dial(ctx)
		if err != nil {
			failures++
			// The first failure and then every tenth are worth a line; a
			// daemon that is down for a while should not flood the log.
			if failures == 1 || failures%10 == 0 {
				a.log.Warn().Err(err).Int("attempt", failures).Dur("retry_in", backoff).Msg("cannot reach pkcshsmd")
			}
			if !wait(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, a.opts.MaxBackoff)
			continue
		}
		failures, backoff = 0, a.opts.MinBackoff
		a.connected.Store(true)
		a.requestReconcile()
		err = a.serve(ctx, conn)
		a.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		a.log.Warn().Err(err).Msg("lost pkcshsmd; reconnecting")
		if !wait(ctx, jitter(backoff)) {
			return
		}
	}
}

// dial connects and completes the hello/welcome exchange.
func (a *Agent) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", a.opts.AppSocket)
	if err != nil {
		return nil, errclass.New(errclass.Unavailable, "connect to %s: %w", a.opts.AppSocket, err)
	}
	a.mu.Lock()
	if ctx.Err() != nil {
		a.mu.Unlock()
		conn.Close()
		return nil, ctx.Err()
	}
	a.conn = conn
	a.mu.Unlock()
	hello := event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: a.opts.Program,
		Tokens: a.opts.Handler.Tokens()}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := event.WriteMessage(conn, event.Wrap(&hello)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	m, err := event.ReadMessage(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	switch m.Kind {
	case event.KindWelcome:
	case event.KindError:
		conn.Close()
		return nil, fmt.Errorf("daemon refused hello: %w", m.Error.Err())
	default:
		conn.Close()
		return nil, errclass.New(errclass.InvalidArgument, "daemon answered hello with %s", m.Kind)
	}
	_ = conn.SetDeadline(time.Time{})
	a.log.Info().Uint64("conn", m.Welcome.Conn).Int("tokens", len(hello.Tokens)).Msg("connected to pkcshsmd")
	return conn, nil
}

// job is one event to handle and the way back to the connection it came on.
type job struct {
	ev event.Event
	// deadline is the event's timeout counted from when the frame was
	// read, on this process's monotonic clock.
	deadline time.Time
	reply    func(event.Reply)
	gone     <-chan struct{} // closed when that connection is over
}

// work runs the handler, one event at a time, for the agent's whole life:
// a handler still busy when the connection breaks delays neither the
// reconnect nor, beyond its own return, the events of the next connection.
func (a *Agent) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-a.jobs:
			select {
			case <-j.gone:
				// Its connection is gone and the daemon has already counted
				// this process as disconnected; Reconcile after the
				// reconnect covers what the event asked for.
				a.log.Debug().Str("event", j.ev.ID).Msg("dropped event of a closed connection")
				continue
			default:
			}
			if !time.Now().Before(j.deadline) {
				// The process was stopped or busy past the deadline: the
				// daemon has counted it as timed out and drops a late
				// reply, and the handler would only run out of time at
				// once. The operation files say what the event asked for.
				a.log.Warn().Str("event", j.ev.ID).Str("type", j.ev.Type).Dur("late_by", time.Since(j.deadline)).
					Msg("event handled after its deadline: reconciling from the operation files instead")
				a.requestReconcile()
				continue
			}
			failpoint.Hit("agent.event.before-handle")
			r := a.handle(ctx, j.ev, j.deadline)
			failpoint.Hit("agent.event.before-reply")
			j.reply(r)
			failpoint.Hit("agent.event.after-reply")
		}
	}
}

// serve reads events until the connection breaks and queues them for the
// worker, so reading never waits for a handler.
func (a *Agent) serve(ctx context.Context, conn net.Conn) error {
	gone := make(chan struct{})
	defer close(gone)
	defer conn.Close()
	var writeMu sync.Mutex
	write := func(m event.Message) error {
		writeMu.Lock()
		defer writeMu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		return event.WriteMessage(conn, m)
	}
	send := func(r event.Reply) {
		if err := write(event.Wrap(&r)); err != nil {
			a.log.Warn().Err(err).Str("event", r.EventID).Msg("could not send reply")
		}
	}
	a.mu.Lock()
	a.send = write
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.send = nil
		a.mu.Unlock()
	}()
	for {
		m, err := event.ReadMessage(conn)
		if err != nil {
			return err
		}
		switch m.Kind {
		case event.KindEvent:
			ev := *m.Event
			deadline := ev.Timeout.Deadline(time.Now())
			a.log.Debug().Str("event", ev.ID).Str("type", ev.Type).Str("op", ev.OpID).Msg("event received")
			select {
			case a.jobs <- job{ev: ev, deadline: deadline, reply: send, gone: gone}:
			default:
				send(a.failAll(ev, errclass.New(errclass.Unavailable, "agent busy: too many events queued")))
			}
		case event.KindError:
			return fmt.Errorf("daemon closed the connection: %w", m.Error.Err())
		default:
			return errclass.New(errclass.InvalidArgument, "unexpected %s frame from the daemon", m.Kind)
		}
	}
}

// handle runs the handler for one event, with its deadline, and shapes the
// reply.
func (a *Agent) handle(ctx context.Context, ev event.Event, deadline time.Time) (r event.Reply) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			a.log.Error().Str("event", ev.ID).Msg("event handler panicked")
			r = a.failAll(ev, errclass.New(errclass.Internal, "event handler panicked: %v", p))
		}
		r.EventID = ev.ID
		if err := event.Wrap(&r).Validate(); err != nil {
			a.log.Error().Err(err).Str("event", ev.ID).Msg("handler returned an invalid reply")
			r = a.failAll(ev, errclass.New(errclass.Internal, "handler returned an invalid reply: %w", err))
		}
	}()
	return a.opts.Handler.HandleEvent(ctx, ev)
}

// failAll is a reply in which every addressed token failed with err.
func (a *Agent) failAll(ev event.Event, err error) event.Reply {
	r := event.Reply{EventID: ev.ID}
	for _, t := range a.opts.Handler.Tokens() {
		if ev.Target.MatchToken(t) {
			r.Tokens = append(r.Tokens, event.ResultFor(t, err))
		}
	}
	return r
}
