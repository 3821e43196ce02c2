package agent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/agent"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/runtime/slotd"
)

type handler struct {
	reconciles atomic.Int32
	events     atomic.Int32
	block      chan struct{} // if set, HandleEvent waits for it
}

func (h *handler) Tokens() []event.Token {
	return []event.Token{{Slot: 1, Label: "t", Serial: "S1", Type: event.CCA}}
}

func (h *handler) HandleEvent(ctx context.Context, ev event.Event) event.Reply {
	h.events.Add(1)
	if h.block != nil {
		<-h.block
	}
	dl, ok := ctx.Deadline()
	res := event.Affected
	// The handler's deadline is the event's timeout counted from when the
	// agent read the frame, on the monotonic clock ("m=" in its String).
	if !ok || time.Until(dl) > ev.Timeout.Duration() || !strings.Contains(dl.String(), " m=") {
		res = event.Failed // the test sees this in the account
	}
	return event.Reply{Tokens: []event.TokenResult{{Slot: 1, Serial: "S1", Result: res}}}
}

func (h *handler) Reconcile(context.Context) error {
	h.reconciles.Add(1)
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// daemon runs an in-process slotd server until stop is called.
type daemon struct {
	stop func()
	cfg  slotd.Config
}

func startDaemon(t *testing.T, dir string) *daemon {
	t.Helper()
	log := zerolog.New(zerolog.NewTestWriter(t))
	cfg := slotd.Config{AppSocket: filepath.Join(dir, "app.sock"), AdminSocket: filepath.Join(dir, "admin.sock"),
		Sandbox: true, Logger: log}
	srv, err := slotd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	d := &daemon{cfg: cfg}
	var stopped atomic.Bool
	d.stop = func() {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			<-done
		}
	}
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) processes(t *testing.T) int {
	c, err := admin.Dial(context.Background(), d.cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Processes)
}

func newAgent(t *testing.T, opts agent.Options) *agent.Agent {
	t.Helper()
	opts.Logger = zerolog.New(zerolog.NewTestWriter(t))
	opts.MinBackoff, opts.MaxBackoff = 5*time.Millisecond, 40*time.Millisecond
	opts.Debounce = 20 * time.Millisecond
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestNewValidates(t *testing.T) {
	if _, err := agent.New(agent.Options{Handler: &handler{}}); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("no socket: %v", err)
	}
	if _, err := agent.New(agent.Options{AppSocket: "/x"}); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("no handler: %v", err)
	}
	a, err := agent.New(agent.Options{AppSocket: "/nonexistent/app.sock", Handler: &handler{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); !errors.Is(err, errclass.FailedPrecondition) {
		t.Errorf("second Start: %v", err)
	}
	if a.Connected() {
		t.Error("connected without a daemon")
	}
	a.Close()
}

func TestReconnectAfterDaemonRestart(t *testing.T) {
	dir := shortDir(t)
	d := startDaemon(t, dir)
	h := &handler{}
	a := newAgent(t, agent.Options{AppSocket: d.cfg.AppSocket, Handler: h})
	waitFor(t, "the agent to connect", func() bool { return a.Connected() && d.processes(t) == 1 })
	waitFor(t, "the first reconcile", func() bool { return h.reconciles.Load() >= 1 })

	d.stop()
	waitFor(t, "the agent to notice the daemon is gone", func() bool { return !a.Connected() })
	before := h.reconciles.Load()

	d = startDaemon(t, dir)
	waitFor(t, "the agent to reconnect", func() bool { return a.Connected() && d.processes(t) == 1 })
	waitFor(t, "a reconcile after the reconnect", func() bool { return h.reconciles.Load() > before })

	c, err := admin.Dial(context.Background(), d.cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(acct.Processes) != 1 || acct.Processes[0].Outcome != event.Replied ||
		acct.Processes[0].Results[0].Result != event.Affected {
		t.Errorf("account after reconnect %+v (a failed result means the handler lacked the event deadline)", acct)
	}
}

func TestWatchOpsDirCreatedLater(t *testing.T) {
	dir := shortDir(t)
	ops := filepath.Join(dir, "var", "lib", "HSM_MK_CHANGE")
	h := &handler{}
	// No daemon at all: watching works without one.
	newAgent(t, agent.Options{AppSocket: filepath.Join(dir, "none.sock"), OpsDir: ops, Handler: h})
	waitFor(t, "the reconcile at start", func() bool { return h.reconciles.Load() == 1 })

	steps := []struct {
		name string
		do   func() error
	}{
		{"directory created", func() error { return os.MkdirAll(ops, 0o755) }},
		{"operation file written", func() error { return os.WriteFile(filepath.Join(ops, "Ab12Cd"), []byte("x"), 0o600) }},
		{"operation file removed", func() error { return os.Remove(filepath.Join(ops, "Ab12Cd")) }},
		{"directory removed", func() error { return os.RemoveAll(filepath.Join(dir, "var")) }},
		{"directory created again", func() error { return os.MkdirAll(ops, 0o755) }},
		{"file in the new directory", func() error { return os.WriteFile(filepath.Join(ops, "Zz99Yy"), nil, 0o600) }},
	}
	for _, s := range steps {
		n := h.reconciles.Load()
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, fmt.Sprintf("a reconcile after: %s", s.name), func() bool { return h.reconciles.Load() > n })
	}
}

func TestWatchDebounces(t *testing.T) {
	dir := shortDir(t)
	h := &handler{}
	opts := agent.Options{AppSocket: filepath.Join(dir, "none.sock"), OpsDir: dir, Handler: h}
	opts.Logger = zerolog.New(zerolog.NewTestWriter(t))
	opts.Debounce = 300 * time.Millisecond
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	a.Start(context.Background())
	defer a.Close()
	waitFor(t, "the reconcile at start", func() bool { return h.reconciles.Load() == 1 })
	const writes = 50
	for i := range writes {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), nil, 0o600)
	}
	waitFor(t, "a reconcile after the burst", func() bool { return h.reconciles.Load() > 1 })
	if got := h.reconciles.Load() - 1; got >= writes/2 {
		t.Errorf("%d reconciles for %d changes: not debounced", got, writes)
	}
}

func TestCloseIsPromptWithoutDaemon(t *testing.T) {
	a, err := agent.New(agent.Options{AppSocket: filepath.Join(shortDir(t), "none.sock"), Handler: &handler{},
		MinBackoff: time.Hour, MaxBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(context.Background())
	done := make(chan struct{})
	go func() { a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close blocked on the reconnect backoff")
	}
}

func TestBusyHandlerDoesNotDelayReconnect(t *testing.T) {
	dir := shortDir(t)
	d := startDaemon(t, dir)
	h := &handler{block: make(chan struct{})}
	a := newAgent(t, agent.Options{AppSocket: d.cfg.AppSocket, Handler: h})
	defer close(h.block) // before Close, which waits for the handler
	waitFor(t, "the agent to connect", func() bool { return a.Connected() && d.processes(t) == 1 })

	go func() {
		c, err := admin.Dial(context.Background(), d.cfg.AdminSocket)
		if err != nil {
			return
		}
		defer c.Close()
		c.Broadcast(context.Background(), event.Event{Type: "slow", Timeout: event.TimeoutOf(time.Minute)})
	}()
	waitFor(t, "the handler to be busy", func() bool { return h.events.Load() == 1 })
	d.stop()
	waitFor(t, "the agent to notice the daemon is gone", func() bool { return !a.Connected() })
	d = startDaemon(t, dir)
	// The handler is still blocked, and the agent is back all the same.
	waitFor(t, "the agent to reconnect while its handler is busy", func() bool { return a.Connected() && d.processes(t) == 1 })
	if h.events.Load() != 1 {
		t.Errorf("handler called %d times", h.events.Load())
	}
}

// stuckReconciler blocks in Reconcile where no context reaches, as a read
// of a FIFO would.
type stuckReconciler struct {
	handler
	entered chan struct{}
	release chan struct{}
}

func (h *stuckReconciler) Reconcile(context.Context) error {
	close(h.entered)
	<-h.release
	return nil
}

func TestCloseIsBoundedWithAStuckHandler(t *testing.T) {
	h := &stuckReconciler{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(h.release)
	a, err := agent.New(agent.Options{AppSocket: filepath.Join(shortDir(t), "none.sock"), Handler: h,
		Logger: zerolog.New(zerolog.NewTestWriter(t)), CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(context.Background())
	<-h.entered
	start := time.Now()
	err = a.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %s with a stuck handler, bound 200ms", took)
	}
	if !errors.Is(err, errclass.DeadlineExceeded) {
		t.Fatalf("Close with a stuck handler: %v, want a DeadlineExceeded error", err)
	}
}

// TestLateEventReconcilesInstead: an event still queued when its deadline
// passes (the handler was busy, or the process stopped) is not handed to
// the handler, which would only run out of time: the agent reconciles from
// the operation files instead.
func TestLateEventReconcilesInstead(t *testing.T) {
	d := startDaemon(t, shortDir(t))
	h := &handler{block: make(chan struct{})}
	a := newAgent(t, agent.Options{AppSocket: d.cfg.AppSocket, Handler: h})
	released := false
	release := func() {
		if !released {
			released = true
			close(h.block)
		}
	}
	defer release()
	waitFor(t, "the agent to connect and reconcile", func() bool {
		return a.Connected() && d.processes(t) == 1 && h.reconciles.Load() >= 1
	})
	c, err := admin.Dial(context.Background(), d.cfg.AdminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c2, err := admin.Dial(context.Background(), d.cfg.AdminSocket)
		if err != nil {
			return
		}
		defer c2.Close()
		c2.Broadcast(context.Background(), event.Event{Type: "slow", Timeout: event.TimeoutOf(time.Minute)})
	}()
	waitFor(t, "the handler to be busy", func() bool { return h.events.Load() == 1 })
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "late", Timeout: event.TimeoutOf(200 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if len(acct.Processes) != 1 || acct.Processes[0].Outcome != event.TimedOut {
		t.Fatalf("account of the late event: %+v", acct)
	}
	// The agent counts the event's timeout from when it read the frame, on
	// its own clock: its deadline is the daemon's plus the delivery delay
	// (milliseconds; more on a loaded machine). Release the handler well
	// after both.
	time.Sleep(time.Second)
	before := h.reconciles.Load()
	release()
	waitFor(t, "a reconcile instead of the late event", func() bool { return h.reconciles.Load() > before })
	if n := h.events.Load(); n != 1 {
		t.Errorf("the handler got %d events, want only the first: the late one must not reach it", n)
	}
}
