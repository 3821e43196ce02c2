package slotd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/agent"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// syncBuffer collects log output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// shortDir is a temp dir with a short path: socket paths are limited to
// 107 bytes and t.TempDir() embeds the test name.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type testServer struct {
	cfg  Config
	srv  *Server
	logs *syncBuffer
}

func startServer(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	base := runtime.NumGoroutine()
	dir := shortDir(t)
	logs := &syncBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.DebugLevel)
	cfg := Config{
		AppSocket:   filepath.Join(dir, "run", "app.sock"),
		AdminSocket: filepath.Join(dir, "run", "admin.sock"),
		Sandbox:     true,
		Logger:      log,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		checkGoroutines(t, base)
	})
	return &testServer{cfg: cfg, srv: srv, logs: logs}
}

func (ts *testServer) admin(t *testing.T) *admin.Client {
	t.Helper()
	c, err := admin.Dial(context.Background(), ts.cfg.AdminSocket)
	if err != nil {
		t.Fatalf("admin.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkGoroutines fails the test if goroutines started since base are
// still running once everything it started has been closed.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Errorf("goroutine leak: %d running, %d before the server started\n%s", runtime.NumGoroutine(), base, buf[:n])
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond (asking, never sleeping blindly) until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (ts *testServer) waitProcesses(t *testing.T, c *admin.Client, n int) event.Status {
	t.Helper()
	var st event.Status
	waitFor(t, fmt.Sprintf("%d connected processes", n), func() bool {
		var err error
		st, err = c.Status(context.Background())
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		return len(st.Processes) == n
	})
	return st
}

// fakeHandler is an in-process token library.
type fakeHandler struct {
	tokens     []event.Token
	block      chan struct{} // if set, HandleEvent waits for it
	panics     bool
	events     atomic.Int32
	reconciles atomic.Int32
}

func (h *fakeHandler) Tokens() []event.Token { return h.tokens }

func (h *fakeHandler) HandleEvent(ctx context.Context, ev event.Event) event.Reply {
	h.events.Add(1)
	if h.panics {
		panic("handler bug")
	}
	if h.block != nil {
		// Really hung: past the deadline (a handler that honours ctx
		// answers right at the deadline, racing the daemon's timer).
		<-h.block
	}
	var r event.Reply
	for _, t := range h.tokens {
		if ev.Target.MatchToken(t) {
			r.Tokens = append(r.Tokens, event.TokenResult{Slot: t.Slot, Serial: t.Serial, Result: event.Affected, Objects: 2})
		}
	}
	return r
}

func (h *fakeHandler) Reconcile(context.Context) error {
	h.reconciles.Add(1)
	return nil
}

func startAgent(t *testing.T, socket, program string, h *fakeHandler) *agent.Agent {
	t.Helper()
	a, err := agent.New(agent.Options{AppSocket: socket, Program: program, Handler: h,
		Logger: zerolog.New(zerolog.NewTestWriter(t)), MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func tok(slot uint32, serial string, typ event.TokenType) event.Token {
	return event.Token{Slot: slot, Label: "l" + serial, Serial: serial, Type: typ}
}

func outcomes(acct event.Account) map[string]event.ProcessOutcome {
	out := map[string]event.ProcessOutcome{}
	for _, p := range acct.Processes {
		out[p.Program] = p.Outcome
	}
	return out
}

func TestPolicy(t *testing.T) {
	p := Policy{AppGID: 100, AdminGID: 200, SandboxUID: -1, AppGroup: "pkcs11", AdminGroup: "pkcshsm-admin"}
	sandbox := p
	sandbox.SandboxUID = 1000
	tests := []struct {
		name                   string
		policy                 Policy
		actor                  Actor
		app, status, broadcast bool
	}{
		{"root", p, TestActor(0, 0, 1), true, true, true},
		// The process list is for administrators (issue 19.11).
		{"app group primary", p, TestActor(1000, 100, 2), true, false, false},
		{"app group supplementary", p, TestActor(1000, 1000, 2, 5, 100), true, false, false},
		{"admin group", p, TestActor(1001, 1001, 3, 200), true, true, true},
		{"stranger", p, TestActor(1002, 1002, 4, 7, 8), false, false, false},
		{"own uid without sandbox", p, TestActor(1000, 1000, 5), false, false, false},
		{"own uid in sandbox", sandbox, TestActor(1000, 1000, 5), true, true, true},
		{"other uid in sandbox", sandbox, TestActor(1003, 1003, 6), false, false, false},
		{"no groups configured", Policy{AppGID: -1, AdminGID: -1, SandboxUID: -1}, TestActor(5, 0xffffffff, 7), false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, err error, want bool) {
				if (err == nil) != want {
					t.Errorf("%s: err %v, want allowed=%v", what, err, want)
				}
				if err != nil && !errors.Is(err, errclass.PermissionDenied) {
					t.Errorf("%s: err %v is not PermissionDenied", what, err)
				}
				if err != nil && errclass.Hint(err) == "" {
					t.Errorf("%s: refusal without a hint", what)
				}
			}
			check("app", tt.policy.PermitApp(tt.actor), tt.app)
			check("status", tt.policy.PermitStatus(tt.actor), tt.status)
			check("broadcast", tt.policy.PermitBroadcast(tt.actor), tt.broadcast)
		})
	}
}

func TestNewRejectsConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no sockets", Config{}, "both socket paths"},
		{"same socket", Config{AppSocket: "/x/s", AdminSocket: "/x/s"}, "same path"},
		{"timeouts", Config{AppSocket: "/x/a", AdminSocket: "/x/b", DefaultTimeout: time.Hour, MaxTimeout: time.Minute}, "do not fit"},
		{"missing group", Config{AppSocket: "/x/a", AdminSocket: "/x/b", AppGroup: "no-such-group-pkcshsm"}, "no-such-group-pkcshsm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tt.want)
			}
			if c := errclass.Of(err); c != errclass.InvalidArgument && c != errclass.FailedPrecondition {
				t.Errorf("class %v", c)
			}
		})
	}
}

func TestListenSocketFiles(t *testing.T) {
	log := zerolog.New(zerolog.NewTestWriter(t))
	t.Run("modes", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.AdminSocketMode = 0o600 })
		for path, want := range map[string]os.FileMode{ts.cfg.AppSocket: 0o660, ts.cfg.AdminSocket: 0o600, filepath.Dir(ts.cfg.AppSocket): 0o755} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %#o, want %#o", path, fi.Mode().Perm(), want)
			}
		}
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		dir := shortDir(t)
		path := filepath.Join(dir, "s.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close() // the file stays: a daemon that died
		nl, err := listen(socketSpec{path: path, mode: 0o660, gid: -1, dirMode: 0o755}, log)
		if err != nil {
			t.Fatalf("listen over a stale socket: %v", err)
		}
		nl.Close()
	})
	t.Run("live daemon refused", func(t *testing.T) {
		ts := startServer(t, nil)
		_, err := listen(socketSpec{path: ts.cfg.AppSocket, mode: 0o660, gid: -1, dirMode: 0o755}, log)
		if !errors.Is(err, errclass.Conflict) || !strings.Contains(err.Error(), "already listening") {
			t.Fatalf("listen over a live daemon: %v", err)
		}
		// The live daemon still answers.
		if _, err := ts.admin(t).Status(context.Background()); err != nil {
			t.Errorf("live daemon broken by the attempt: %v", err)
		}
	})
	refusals := []struct {
		name  string
		setup func(dir string) string // returns the socket path
		want  string
	}{
		{"symlink socket", func(dir string) string {
			p := filepath.Join(dir, "s.sock")
			os.Symlink(filepath.Join(dir, "elsewhere"), p)
			return p
		}, "is a symlink"},
		{"regular file", func(dir string) string {
			p := filepath.Join(dir, "s.sock")
			os.WriteFile(p, []byte("keep me"), 0o600)
			return p
		}, "not a socket"},
		{"symlink dir", func(dir string) string {
			os.Mkdir(filepath.Join(dir, "real"), 0o755)
			os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link"))
			return filepath.Join(dir, "link", "s.sock")
		}, "is a symlink"},
		{"world-writable dir", func(dir string) string {
			d := filepath.Join(dir, "open")
			os.Mkdir(d, 0o777)
			os.Chmod(d, 0o777)
			return filepath.Join(d, "s.sock")
		}, "writable by everyone"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			dir := shortDir(t)
			path := tt.setup(dir)
			before, _ := os.Lstat(path)
			_, err := listen(socketSpec{path: path, mode: 0o660, gid: -1, dirMode: 0o755}, log)
			if !errors.Is(err, errclass.FailedPrecondition) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("listen: %v, want FailedPrecondition mentioning %q", err, tt.want)
			}
			if errclass.Hint(err) == "" {
				t.Errorf("no hint in %v", err)
			}
			after, _ := os.Lstat(path)
			if (before == nil) != (after == nil) || (before != nil && before.Mode() != after.Mode()) {
				t.Errorf("refused listen changed %s", path)
			}
		})
	}
}

func TestBroadcastAccount(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	fast := &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA), tok(1, "E1", event.EP11)}}
	hung := &fakeHandler{tokens: []event.Token{tok(0, "C2", event.CCA)}, block: make(chan struct{})}
	defer close(hung.block)
	startAgent(t, ts.cfg.AppSocket, "fast", fast)
	startAgent(t, ts.cfg.AppSocket, "hung", hung)
	ts.waitProcesses(t, c, 2)

	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test", OpID: "Ab12Cd",
		Timeout: event.TimeoutOf(500 * time.Millisecond)})
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	got := outcomes(acct)
	if got["fast"] != event.Replied || got["hung"] != event.TimedOut || len(got) != 2 {
		t.Fatalf("outcomes %v", got)
	}
	for _, p := range acct.Processes {
		if p.PID != int32(os.Getpid()) {
			t.Errorf("process %s: pid %d, want %d", p.Program, p.PID, os.Getpid())
		}
		if p.Program == "fast" && (len(p.Results) != 2 || p.Results[0].Objects != 2 || len(p.Tokens) != 2) {
			t.Errorf("fast results %+v tokens %+v", p.Results, p.Tokens)
		}
	}
	if err := acct.Err(); !errors.Is(err, errclass.DeadlineExceeded) {
		t.Errorf("account error %v, want DeadlineExceeded", err)
	}

	// The hung handler does not hold up an event addressed elsewhere.
	acct, err = c.Broadcast(context.Background(), event.Event{Type: "test",
		Target: &event.Target{Types: []event.TokenType{event.EP11}}, Timeout: event.TimeoutOf(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(acct); len(got) != 1 || got["fast"] != event.Replied {
		t.Errorf("EP11-only outcomes %v", got)
	}
	if r := acct.Processes[0].Results; len(r) != 1 || r[0].Serial != "E1" {
		t.Errorf("EP11-only token results %+v", r)
	}
}

func TestBroadcastExcludeCallerAndNoTargets(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	startAgent(t, ts.cfg.AppSocket, "self", &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}})
	ts.waitProcesses(t, c, 1)
	// Every in-process agent has the test's pid, which is also the admin's.
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test", Target: &event.Target{ExcludeCaller: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(acct.Processes) != 0 || acct.EventID == "" {
		t.Errorf("account %+v, want no processes and an event id", acct)
	}
}

func TestBroadcastDeadlineChecks(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxTimeout = 2 * time.Second; c.DefaultTimeout = time.Second })
	c := ts.admin(t)
	_, err := c.Broadcast(context.Background(), event.Event{Type: "test", Timeout: -1000})
	if !errors.Is(err, errclass.InvalidArgument) || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("negative timeout: %v", err)
	}
	// The refusal closed that connection; a new one works, and a far
	// deadline is capped.
	c = ts.admin(t)
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test", Timeout: event.TimeoutOf(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if acct.Timeout != event.TimeoutOf(2*time.Second) {
		t.Errorf("timeout %d ms, want it capped at 2000", acct.Timeout)
	}
}

func TestLateJoinerGetsPendingEvent(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	first := &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}, block: make(chan struct{})}
	startAgent(t, ts.cfg.AppSocket, "first", first)
	ts.waitProcesses(t, c, 1)
	type result struct {
		acct event.Account
		err  error
	}
	res := make(chan result, 1)
	go func() {
		a, err := ts.admin(t).Broadcast(context.Background(), event.Event{Type: "test", Timeout: event.TimeoutOf(20 * time.Second)})
		res <- result{a, err}
	}()
	waitFor(t, "the event to reach the first process", func() bool { return first.events.Load() == 1 })
	late := &fakeHandler{tokens: []event.Token{tok(0, "C9", event.CCA)}}
	startAgent(t, ts.cfg.AppSocket, "late", late)
	waitFor(t, "the pending event to reach the late process", func() bool { return late.events.Load() == 1 })
	close(first.block)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := outcomes(r.acct); got["first"] != event.Replied || got["late"] != event.Replied {
		t.Errorf("outcomes %v", got)
	}
}

func TestHandlerPanicIsAFailedReply(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	startAgent(t, ts.cfg.AppSocket, "buggy", &fakeHandler{tokens: []event.Token{tok(3, "C3", event.CCA)}, panics: true})
	ts.waitProcesses(t, c, 1)
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test"})
	if err != nil {
		t.Fatal(err)
	}
	p := acct.Processes[0]
	if p.Outcome != event.Replied || len(p.Results) != 1 || p.Results[0].Result != event.Failed || p.Results[0].Class != errclass.Internal {
		t.Fatalf("process %+v", p)
	}
}

// rawApp is a hand-driven app connection.
func rawApp(t *testing.T, socket string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// expectClosed reads until the daemon closes c and returns the error frame
// it sent on the way, if any.
func expectClosed(t *testing.T, c net.Conn) *event.Error {
	t.Helper()
	var last *event.Error
	for {
		m, err := event.ReadMessage(c)
		if err != nil {
			if errors.Is(err, io.EOF) || errclass.Of(err) == errclass.InvalidArgument || errors.Is(err, syscall.ECONNRESET) {
				return last
			}
			t.Fatalf("connection not closed by the daemon: %v", err)
		}
		if m.Kind == event.KindError {
			last = m.Error
		}
	}
}

func TestBadFramesCloseOnlyThatConnection(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	good := &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}}
	startAgent(t, ts.cfg.AppSocket, "good", good)
	ts.waitProcesses(t, c, 1)

	hdr := func(n uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, n); return b }
	hello := func(pid int) []byte {
		var b bytes.Buffer
		event.WriteMessage(&b, event.Wrap(&event.Hello{PID: int32(pid), UID: uint32(os.Getuid()), Program: "x"}))
		return b.Bytes()
	}
	v3 := []byte(`{"v":3,"kind":"hello","hello":{"pid":1,"uid":0,"program":"x"}}`)
	tests := []struct {
		name   string
		socket string
		send   []byte
		half   bool // close our write side (truncation)
		want   string
	}{
		{"garbage", ts.cfg.AppSocket, append(hdr(8), "garbage!"...), false, "malformed frame"},
		{"oversized", ts.cfg.AppSocket, hdr(event.MaxFrame + 1), false, "exceeds the limit"},
		{"truncated", ts.cfg.AppSocket, append(hdr(100), `{"v":1`...), true, "truncated frame"},
		{"wrong version", ts.cfg.AppSocket, append(hdr(uint32(len(v3))), v3...), false, "protocol version 3"},
		{"lying pid", ts.cfg.AppSocket, hello(os.Getpid() + 1), false, "the kernel says pid"},
		{"reply before hello", ts.cfg.AppSocket, func() []byte {
			var b bytes.Buffer
			event.WriteMessage(&b, event.Wrap(&event.Reply{EventID: "x"}))
			return b.Bytes()
		}(), false, "expected hello"},
		{"admin garbage", ts.cfg.AdminSocket, append(hdr(3), "{{{"...), false, "malformed frame"},
		{"admin hello", ts.cfg.AdminSocket, hello(os.Getpid()), false, "not an admin request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := rawApp(t, tt.socket)
			if _, err := raw.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.half {
				raw.(*net.UnixConn).CloseWrite()
			}
			e := expectClosed(t, raw)
			if !tt.half && (e == nil || !strings.Contains(e.Message, tt.want)) {
				t.Errorf("error frame %+v, want it to mention %q", e, tt.want)
			}
			waitFor(t, "the log line", func() bool { return strings.Contains(ts.logs.String(), tt.want) })
			// Everyone else is still served.
			acct, err := c.Broadcast(context.Background(), event.Event{Type: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if got := outcomes(acct); len(got) != 1 || got["good"] != event.Replied {
				t.Errorf("after %s: outcomes %v", tt.name, got)
			}
		})
	}
	if st := ts.waitProcesses(t, c, 1); st.Processes[0].Program != "good" {
		t.Errorf("status %+v", st)
	}
}

func TestDisconnectedDuringEvent(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	raw := rawApp(t, ts.cfg.AppSocket)
	event.WriteMessage(raw, event.Wrap(&event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "dying",
		Tokens: []event.Token{tok(0, "C1", event.CCA)}}))
	if m, err := event.ReadMessage(raw); err != nil || m.Kind != event.KindWelcome {
		t.Fatalf("welcome: %+v %v", m, err)
	}
	res := make(chan event.Account, 1)
	go func() {
		a, err := ts.admin(t).Broadcast(context.Background(), event.Event{Type: "test", Timeout: event.TimeoutOf(20 * time.Second)})
		if err != nil {
			t.Error(err)
		}
		res <- a
	}()
	m, err := event.ReadMessage(raw)
	if err != nil || m.Kind != event.KindEvent || m.Event.Timeout <= 0 || m.Event.Timeout > event.TimeoutOf(20*time.Second) || m.Event.ID == "" {
		t.Fatalf("event: %+v %v", m, err)
	}
	raw.Close()
	acct := <-res
	if got := outcomes(acct); got["dying"] != event.Disconnected {
		t.Errorf("outcomes %v", got)
	}
	ts.waitProcesses(t, c, 0)
}

func TestStatusAndAdminErrors(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	startAgent(t, ts.cfg.AppSocket, "one", &fakeHandler{tokens: []event.Token{tok(7, "S7", event.EP11)}})
	st := ts.waitProcesses(t, c, 1)
	if st.PID != int32(os.Getpid()) || st.Processes[0].Tokens[0].Slot != 7 || st.Processes[0].Program != "one" {
		t.Errorf("status %+v", st)
	}
	// An invalid request is refused by the client before it is sent.
	if _, err := c.Broadcast(context.Background(), event.Event{}); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("empty event type: %v", err)
	}
	if _, err := admin.Dial(context.Background(), filepath.Join(shortDir(t), "none.sock")); !errors.Is(err, errclass.Unavailable) || errclass.Hint(err) == "" {
		t.Errorf("dial missing socket: %v", err)
	}
}

func TestNotify(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	ok, err := Notify("READY=1")
	if !ok || err != nil {
		t.Fatalf("Notify = %v, %v", ok, err)
	}
	buf := make([]byte, 64)
	l.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("got %q, %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if ok, err := Notify("READY=1"); ok || err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, %v", ok, err)
	}
}

func TestPayloadNeverLogged(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	startAgent(t, ts.cfg.AppSocket, "app", &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}})
	ts.waitProcesses(t, c, 1)
	secret := []byte("SECRET-BLOB-0123456789")
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test.secret", OpID: "Ab12Cd", Payload: secret})
	if err != nil || len(acct.Processes) != 1 {
		t.Fatalf("broadcast: %v %+v", err, acct)
	}
	logs := ts.logs.String()
	if !strings.Contains(logs, "test.secret") {
		t.Fatalf("the broadcast was not logged at all:\n%s", logs)
	}
	for _, leak := range []string{string(secret), "U0VDUkVULUJMT0", "SECRET"} {
		if strings.Contains(logs, leak) {
			t.Errorf("daemon log contains payload bytes %q", leak)
		}
	}
}

func TestLateJoinerGetsPendingEventsInOrder(t *testing.T) {
	ts := startServer(t, nil)
	raw := rawApp(t, ts.cfg.AppSocket)
	// Two broadcasts pending with nobody connected but an unrelated target
	// keeper: a process that never answers keeps them open.
	keeper := rawApp(t, ts.cfg.AppSocket)
	event.WriteMessage(keeper, event.Wrap(&event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "keeper"}))
	if m, err := event.ReadMessage(keeper); err != nil || m.Kind != event.KindWelcome {
		t.Fatalf("welcome: %v", err)
	}
	c := ts.admin(t)
	ts.waitProcesses(t, c, 1)
	var wg sync.WaitGroup
	for i, typ := range []string{"first", "second"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts.admin(t).Broadcast(context.Background(), event.Event{Type: typ, Timeout: event.TimeoutOf(20 * time.Second)})
		}()
		waitFor(t, "the broadcast to be pending", func() bool {
			st, err := c.Status(context.Background())
			return err == nil && st.Pending == i+1
		})
	}
	event.WriteMessage(raw, event.Wrap(&event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "late"}))
	var got []string
	for len(got) < 3 {
		m, err := event.ReadMessage(raw)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Kind))
		if m.Kind == event.KindEvent {
			got[len(got)-1] = m.Event.Type
			event.WriteMessage(raw, event.Wrap(&event.Reply{EventID: m.Event.ID}))
		}
	}
	if strings.Join(got, ",") != "welcome,first,second" {
		t.Errorf("late joiner saw %v, want welcome then the pending events oldest first", got)
	}
	keeper.Close() // settles both broadcasts
	wg.Wait()
}

func TestGarbageReplyDuringEvent(t *testing.T) {
	ts := startServer(t, nil)
	raw := rawApp(t, ts.cfg.AppSocket)
	event.WriteMessage(raw, event.Wrap(&event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "garbler"}))
	if m, err := event.ReadMessage(raw); err != nil || m.Kind != event.KindWelcome {
		t.Fatalf("welcome: %v", err)
	}
	res := make(chan event.Account, 1)
	go func() {
		a, _ := ts.admin(t).Broadcast(context.Background(), event.Event{Type: "test", Timeout: event.TimeoutOf(20 * time.Second)})
		res <- a
	}()
	if m, err := event.ReadMessage(raw); err != nil || m.Kind != event.KindEvent {
		t.Fatalf("event: %v", err)
	}
	raw.Write([]byte{0, 0, 0, 3, '{', '{', '{'})
	e := expectClosed(t, raw)
	if e == nil || e.Class != errclass.InvalidArgument || !strings.Contains(e.Message, "malformed frame") {
		t.Errorf("error frame %+v", e)
	}
	if got := outcomes(<-res); got["garbler"] != event.Disconnected {
		t.Errorf("outcomes %v", got)
	}
}

func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxApps = 1; c.HelloWait = 100 * time.Millisecond })
	c := ts.admin(t)

	// A peer that never says hello is dropped after HelloWait.
	silent := rawApp(t, ts.cfg.AppSocket)
	expectClosed(t, silent)
	waitFor(t, "the log line", func() bool { return strings.Contains(ts.logs.String(), "no valid hello") })

	startAgent(t, ts.cfg.AppSocket, "one", &fakeHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}})
	ts.waitProcesses(t, c, 1)
	extra := rawApp(t, ts.cfg.AppSocket)
	event.WriteMessage(extra, event.Wrap(&event.Hello{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), Program: "two"}))
	e := expectClosed(t, extra)
	if e == nil || e.Class != errclass.Unavailable || !strings.Contains(e.Message, "too many application connections") {
		t.Errorf("over the limit: %+v", e)
	}
	if st := ts.waitProcesses(t, c, 1); st.Processes[0].Program != "one" {
		t.Errorf("status %+v", st)
	}
}

// mutableHandler's token list can change while its agent runs.
type mutableHandler struct {
	fakeHandler
	mu     sync.Mutex
	tokens []event.Token
}

func (h *mutableHandler) Tokens() []event.Token {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tokens
}

func TestUpdateTokens(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.admin(t)
	h := &mutableHandler{tokens: []event.Token{tok(0, "C1", event.CCA)}}
	a, err := agent.New(agent.Options{AppSocket: ts.cfg.AppSocket, Program: "grower", Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	a.Start(context.Background())
	t.Cleanup(func() { a.Close() })
	ts.waitProcesses(t, c, 1)
	waitFor(t, "the agent to see its welcome", a.Connected)

	ep11Only := event.Event{Type: "test", Target: &event.Target{Types: []event.TokenType{event.EP11}}}
	if acct, err := c.Broadcast(context.Background(), ep11Only); err != nil || len(acct.Processes) != 0 {
		t.Fatalf("before the update: %v %+v", err, acct.Processes)
	}
	h.mu.Lock()
	h.tokens = append(h.tokens, tok(1, "E1", event.EP11))
	h.mu.Unlock()
	if err := a.UpdateTokens(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the daemon to see two tokens", func() bool {
		st, err := c.Status(context.Background())
		return err == nil && len(st.Processes) == 1 && len(st.Processes[0].Tokens) == 2
	})
	acct, err := c.Broadcast(context.Background(), ep11Only)
	if err != nil || len(acct.Processes) != 1 || acct.Processes[0].Outcome != event.Replied {
		t.Fatalf("after the update: %v %+v", err, acct.Processes)
	}
}
