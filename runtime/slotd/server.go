package slotd

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// Defaults for [Config] fields left zero.
const (
	DefaultTimeout    = 60 * time.Second
	DefaultMaxTimeout = time.Hour
	DefaultMaxApps    = 4096
	DefaultMaxAdmins  = 64
	DefaultHelloWait  = 10 * time.Second
	writeTimeout      = 10 * time.Second
	outboxSize        = 64
)

// Config configures a [Server]. Zero fields take the documented defaults.
type Config struct {
	// AppSocket and AdminSocket are the socket paths (required).
	AppSocket, AdminSocket string
	// AppGroup and AdminGroup name the groups allowed on each socket
	// ("pkcs11", "pkcshsm-admin"). A group that does not exist is an error
	// unless Sandbox is set.
	AppGroup, AdminGroup string
	// Sandbox lets the daemon's own uid act as root, and tolerates missing
	// groups. For temporary roots, demos and tests.
	Sandbox bool
	// Socket and run directory modes; defaults 0660, 0660 and 0755.
	AppSocketMode, AdminSocketMode, RunDirMode fs.FileMode
	// DefaultTimeout applies to broadcasts without a deadline (60 s);
	// MaxTimeout caps any deadline (1 h).
	DefaultTimeout, MaxTimeout time.Duration
	// MaxApps and MaxAdmins bound concurrent connections (4096, 64).
	MaxApps, MaxAdmins int
	// HelloWait bounds the wait for an app's hello (10 s).
	HelloWait time.Duration
	// Logger receives the daemon's log; the zero Logger discards it.
	Logger zerolog.Logger
}

// Server is the pkcshsmd daemon core: two listening sockets and a [hub].
type Server struct {
	cfg    Config
	policy Policy
	log    zerolog.Logger
	hub    *hub

	appL, adminL *net.UnixListener
	nextConn     atomic.Uint64
	apps, admins atomic.Int64

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections, closed on shutdown
}

// New checks cfg and resolves its groups. It does not touch the file system.
func New(cfg Config) (*Server, error) {
	if cfg.AppSocket == "" || cfg.AdminSocket == "" {
		return nil, errclass.New(errclass.InvalidArgument, "both socket paths are required")
	}
	if cfg.AppSocket == cfg.AdminSocket {
		return nil, errclass.New(errclass.InvalidArgument, "app and admin socket are the same path %s", cfg.AppSocket)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.DefaultTimeout, DefaultTimeout)
	def(&cfg.MaxTimeout, DefaultMaxTimeout)
	def(&cfg.HelloWait, DefaultHelloWait)
	if cfg.DefaultTimeout < 0 || cfg.MaxTimeout < 0 || cfg.DefaultTimeout > cfg.MaxTimeout {
		return nil, errclass.Newh(errclass.InvalidArgument, "choose a positive default timeout no larger than the maximum",
			"default timeout %v and maximum timeout %v do not fit", cfg.DefaultTimeout, cfg.MaxTimeout)
	}
	if cfg.MaxApps == 0 {
		cfg.MaxApps = DefaultMaxApps
	}
	if cfg.MaxAdmins == 0 {
		cfg.MaxAdmins = DefaultMaxAdmins
	}
	if cfg.AppSocketMode == 0 {
		cfg.AppSocketMode = 0o660
	}
	if cfg.AdminSocketMode == 0 {
		cfg.AdminSocketMode = 0o660
	}
	if cfg.RunDirMode == 0 {
		cfg.RunDirMode = 0o755
	}
	log := cfg.Logger
	p := Policy{AppGID: -1, AdminGID: -1, SandboxUID: -1, AppGroup: cfg.AppGroup, AdminGroup: cfg.AdminGroup}
	if cfg.Sandbox {
		p.SandboxUID = int64(os.Getuid())
	}
	for _, g := range []struct {
		name string
		gid  *int64
	}{{cfg.AppGroup, &p.AppGID}, {cfg.AdminGroup, &p.AdminGID}} {
		if g.name == "" {
			continue
		}
		gid, err := lookupGroup(g.name)
		if err != nil {
			if !cfg.Sandbox {
				return nil, errclass.Newh(errclass.FailedPrecondition,
					"create it (systemd-sysusers pkcshsm.conf) or pass another group name",
					"group %s: %w", g.name, err)
			}
			log.Warn().Str("group", g.name).Msg("group does not exist; sandbox mode continues without it")
			continue
		}
		// An unprivileged daemon can give its sockets only a group it is a
		// member of (chown(2)); in sandbox mode another group is skipped.
		if cfg.Sandbox && !canChownTo(gid) {
			log.Warn().Str("group", g.name).Msg("not a member of the group; sandbox mode continues without it")
			continue
		}
		*g.gid = gid
	}
	return &Server{cfg: cfg, policy: p, log: log, hub: newHub(log), conns: map[net.Conn]struct{}{}}, nil
}

// canChownTo reports whether this process may set a file's group to gid:
// root may, others only to their own groups.
func canChownTo(gid int64) bool {
	if os.Geteuid() == 0 || int64(os.Getegid()) == gid {
		return true
	}
	groups, err := os.Getgroups()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if int64(g) == gid {
			return true
		}
	}
	return false
}

func lookupGroup(name string) (int64, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.ParseInt(g.Gid, 10, 64)
}

// Policy returns the permission policy the server applies.
func (s *Server) Policy() Policy { return s.policy }

// Listen creates both sockets. After it returns nil the daemon is reachable
// (connections queue in the backlog until [Server.Serve] runs), which is the
// moment to report readiness.
func (s *Server) Listen() error {
	var err error
	s.appL, err = listen(socketSpec{s.cfg.AppSocket, s.cfg.AppSocketMode, s.policy.AppGID, s.cfg.RunDirMode}, s.log)
	if err != nil {
		return err
	}
	s.adminL, err = listen(socketSpec{s.cfg.AdminSocket, s.cfg.AdminSocketMode, s.policy.AdminGID, s.cfg.RunDirMode}, s.log)
	if err != nil {
		s.appL.Close()
		return err
	}
	s.log.Info().Str("app_socket", s.cfg.AppSocket).Str("admin_socket", s.cfg.AdminSocket).
		Bool("sandbox", s.cfg.Sandbox).Msg("listening")
	return nil
}

// Serve accepts connections until ctx ends, then closes the listeners
// (removing the socket files), closes every connection and waits for its
// goroutines. It returns nil after a shutdown by ctx.
func (s *Server) Serve(ctx context.Context) error {
	if s.appL == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- s.acceptLoop(ctx, s.appL, s.serveApp) }()
	go func() { errc <- s.acceptLoop(ctx, s.adminL, s.serveAdmin) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	s.appL.Close()
	s.adminL.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.log.Info().Msg("stopped")
	return err
}

func (s *Server) acceptLoop(ctx context.Context, l *net.UnixListener, serve func(context.Context, *net.UnixConn)) error {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// EMFILE and friends: back off a little instead of spinning.
			s.log.Error().Err(err).Msg("accept failed")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			serve(ctx, c)
		}()
	}
}

// refuse tells the peer why it is being dropped, best effort and bounded.
// It then drains what the peer already sent (at most 64 KiB, at most a
// second): closing a Unix socket with unread data resets the connection,
// and the peer would lose the error frame.
func refuse(c net.Conn, err error) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = event.WriteMessage(c, event.Wrap(event.ErrorFrom(err)))
	if uc, ok := c.(*net.UnixConn); ok {
		_ = uc.CloseWrite()
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.CopyN(io.Discard, c, 64<<10)
}

// appConn is one connected application process. Frames to it go through
// outbox and a writer goroutine with a write deadline, so sending never
// blocks the hub; a process that does not drain its socket is dropped.
type appConn struct {
	id         uint64
	actor      Actor
	command    string // the kernel's name for the peer, read at connect
	hello      event.Hello
	nc         net.Conn
	outbox     chan event.Message
	gone       chan struct{} // closed once the connection is being dropped
	writerDone chan struct{} // closed when writeLoop has returned
	once       sync.Once
	log        zerolog.Logger
}

// close drops the connection at once. It never blocks, so the hub may call
// it (through send) under its lock.
func (c *appConn) close() {
	c.once.Do(func() { close(c.gone) })
	c.nc.Close()
}

// closeWith stops the writer, tells the peer why, and drops the connection.
// Waiting for the writer keeps the error frame from interleaving with an
// event frame; it is bounded by the writer's write deadline.
func (c *appConn) closeWith(err error) {
	c.once.Do(func() { close(c.gone) })
	<-c.writerDone
	refuse(c.nc, err)
	c.nc.Close()
}

// send queues m without blocking. Caller may hold the hub lock.
func (c *appConn) send(m event.Message) {
	select {
	case c.outbox <- m:
	case <-c.gone:
	default:
		c.log.Warn().Msg("process does not read its events; dropping it")
		c.close()
	}
}

func (c *appConn) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case <-c.gone:
			return
		case m := <-c.outbox:
			_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := event.WriteMessage(c.nc, m); err != nil {
				c.log.Warn().Err(err).Msg("write to process failed; dropping it")
				c.close()
				return
			}
		}
	}
}

func (s *Server) serveApp(ctx context.Context, nc *net.UnixConn) {
	id := s.nextConn.Add(1)
	log := s.log.With().Str("socket", "app").Uint64("conn", id).Logger()
	actor, err := PeerActor(nc)
	if err != nil {
		log.Error().Err(err).Msg("refused connection")
		return
	}
	log = log.With().Int32("peer_pid", actor.PID).Uint32("peer_uid", actor.UID).Logger()
	if err := s.policy.PermitApp(actor); err != nil {
		log.Warn().Err(err).Msg("refused connection")
		refuse(nc, err)
		return
	}
	if n := s.apps.Add(1); n > int64(s.cfg.MaxApps) {
		defer s.apps.Add(-1)
		err := errclass.New(errclass.Unavailable, "too many application connections (limit %d)", s.cfg.MaxApps)
		log.Warn().Err(err).Msg("refused connection")
		refuse(nc, err)
		return
	}
	defer s.apps.Add(-1)

	_ = nc.SetReadDeadline(time.Now().Add(s.cfg.HelloWait))
	m, err := event.ReadMessage(nc)
	if err != nil {
		log.Warn().Err(err).Msg("closing connection: no valid hello")
		refuse(nc, err)
		return
	}
	if m.Kind != event.KindHello {
		err := errclass.New(errclass.InvalidArgument, "expected hello, got %s", m.Kind)
		log.Warn().Err(err).Msg("closing connection")
		refuse(nc, err)
		return
	}
	h := *m.Hello
	if h.PID != actor.PID || h.UID != actor.UID {
		err := errclass.New(errclass.PermissionDenied, "hello claims pid %d uid %d, the kernel says pid %d uid %d",
			h.PID, h.UID, actor.PID, actor.UID)
		log.Warn().Err(err).Msg("refused lying peer")
		refuse(nc, err)
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := &appConn{id: id, actor: actor, command: procComm(actor.PID), hello: h, nc: nc, outbox: make(chan event.Message, outboxSize),
		gone: make(chan struct{}), writerDone: make(chan struct{}), log: log.With().Str("program", h.Program).Logger()}
	defer c.close()
	go c.writeLoop()
	s.hub.register(c, event.Wrap(&event.Welcome{Conn: id, PID: actor.PID}))
	defer s.hub.unregister(c)
	c.log.Info().Int("tokens", len(h.Tokens)).Str("command", c.command).Msg("process connected")

	for {
		m, err := event.ReadMessage(nc)
		if err != nil {
			select {
			case <-c.gone:
				return
			default:
			}
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				c.log.Info().Msg("process disconnected")
			} else {
				c.log.Warn().Err(err).Msg("closing connection after a bad frame")
				s.hub.unregister(c)
				c.closeWith(err)
			}
			return
		}
		switch m.Kind {
		case event.KindReply:
			s.hub.reply(c, m.Reply)
		case event.KindTokens:
			s.hub.updateTokens(c, m.Tokens.Tokens)
			c.log.Info().Int("tokens", len(m.Tokens.Tokens)).Msg("process updated its tokens")
		default:
			err := errclass.New(errclass.InvalidArgument, "expected reply or tokens, got %s", m.Kind)
			c.log.Warn().Err(err).Msg("closing connection")
			s.hub.unregister(c)
			c.closeWith(err)
			return
		}
	}
}

func (s *Server) serveAdmin(ctx context.Context, nc *net.UnixConn) {
	id := s.nextConn.Add(1)
	log := s.log.With().Str("socket", "admin").Uint64("conn", id).Logger()
	actor, err := PeerActor(nc)
	if err != nil {
		log.Error().Err(err).Msg("refused connection")
		return
	}
	log = log.With().Int32("peer_pid", actor.PID).Uint32("peer_uid", actor.UID).Logger()
	if n := s.admins.Add(1); n > int64(s.cfg.MaxAdmins) {
		defer s.admins.Add(-1)
		err := errclass.New(errclass.Unavailable, "too many admin connections (limit %d)", s.cfg.MaxAdmins)
		log.Warn().Err(err).Msg("refused connection")
		refuse(nc, err)
		return
	}
	defer s.admins.Add(-1)
	for {
		m, err := event.ReadMessage(nc)
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn().Err(err).Msg("closing connection after a bad frame")
				refuse(nc, err)
			}
			return
		}
		answer, err := s.handleAdmin(ctx, actor, m, log)
		if err != nil {
			log.Warn().Err(err).Str("request", string(m.Kind)).Msg("refused request")
			refuse(nc, err)
			if errclass.Of(err) == errclass.PermissionDenied || errclass.Of(err) == errclass.InvalidArgument {
				return
			}
			continue
		}
		_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := event.WriteMessage(nc, answer); err != nil {
			log.Warn().Err(err).Msg("could not answer admin")
			if errclass.Of(err) == errclass.InvalidArgument { // account too large to encode
				refuse(nc, errclass.New(errclass.Internal, "answer could not be sent: %w", err))
			}
			return
		}
	}
}

// procComm is the kernel's command name of pid (/proc/PID/comm), or "" if
// it cannot be read. It names a process in accounts beside what the
// process claims about itself. The read is bounded: comm is a proc file of
// at most 16 bytes, never a FIFO.
func procComm(pid int32) string {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/comm")
	if err != nil {
		return ""
	}
	defer f.Close()
	var b [64]byte
	n, _ := f.Read(b[:])
	return strings.TrimSpace(string(b[:n]))
}

// handleAdmin decides and runs one admin request.
func (s *Server) handleAdmin(ctx context.Context, actor Actor, m event.Message, log zerolog.Logger) (event.Message, error) {
	switch m.Kind {
	case event.KindStatusRequest:
		if err := s.policy.PermitStatus(actor); err != nil {
			return event.Message{}, err
		}
		procs, pending := s.hub.status()
		return event.Wrap(&event.Status{PID: int32(os.Getpid()), Pending: pending, Processes: procs}), nil
	case event.KindBroadcast:
		if err := s.policy.PermitBroadcast(actor); err != nil {
			return event.Message{}, err
		}
		ev := m.Broadcast.Event
		// The request's timeout counts from now, on this process's
		// monotonic clock: the caller's wall clock is never compared
		// with ours.
		now := time.Now()
		timeout := ev.Timeout.Duration()
		switch {
		case timeout == 0:
			timeout = s.cfg.DefaultTimeout
		case timeout > s.cfg.MaxTimeout:
			log.Info().Dur("max", s.cfg.MaxTimeout).Msg("timeout capped at the maximum timeout")
			timeout = s.cfg.MaxTimeout
		}
		deadline := now.Add(timeout)
		ev.Timeout = event.TimeoutOf(timeout)
		if ev.Target != nil && ev.Target.ExcludeCaller {
			t := *ev.Target
			t.ExcludePIDs = append(append([]int32(nil), t.ExcludePIDs...), actor.PID)
			t.ExcludeCaller = false
			ev.Target = &t
		}
		failpoint.Hit("daemon.broadcast.before-relay")
		acct := s.hub.broadcast(ctx, ev, deadline)
		failpoint.Hit("daemon.broadcast.before-reply")
		return event.Wrap(&acct), nil
	}
	return event.Message{}, errclass.New(errclass.InvalidArgument, "%s is not an admin request", m.Kind)
}
