// Package admin is the client the pkcshsm CLIs use to talk to pkcshsmd on
// its admin socket.
//
//	c, err := admin.Dial(ctx, paths.FromEnv().AdminSocket())
//	if err != nil { ... }            // errclass.Unavailable: daemon not running
//	defer c.Close()
//	acct, err := c.Broadcast(ctx, event.Event{Type: "mkchange.reencipher", OpID: id,
//		Payload: p, Target: &event.Target{ExcludeCaller: true}})
//	if err != nil { ... }            // the daemon refused, or the socket broke
//	if err := acct.Err(); err != nil { ... } // some process timed out, died or failed
//
// A Client carries one request at a time; concurrent calls queue. The
// daemon's refusals come back as errors with the daemon's class and hint
// (errors.Is(err, errclass.PermissionDenied)). A context deadline or
// cancellation aborts the wait and closes the connection; the daemon still
// runs the broadcast to its own deadline.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// Client is a connection to the admin socket.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
}

// Dial connects to the admin socket at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, dialError(path, err)
	}
	return &Client{conn: c}, nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return errclass.Newh(errclass.Unavailable, "start it with: systemctl start pkcshsmd",
			"pkcshsmd is not running (no daemon on %s)", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return errclass.Newh(errclass.PermissionDenied, "run as root or as a member of group pkcshsm-admin",
			"no access to the admin socket %s", path)
	}
	return errclass.New(errclass.Unavailable, "connect to pkcshsmd at %s: %w", path, err)
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Broadcast asks the daemon to send ev to every addressed process and
// returns the daemon's account of every process. Leave ev.ID empty; a zero
// ev.Timeout means the daemon's default timeout. The returned error covers
// the request itself; whether the processes succeeded is in the account
// ([event.Account.Err]).
func (c *Client) Broadcast(ctx context.Context, ev event.Event) (event.Account, error) {
	m, err := c.roundTrip(ctx, event.Wrap(&event.Broadcast{Event: ev}), event.KindAccount)
	if err != nil {
		return event.Account{}, fmt.Errorf("broadcast %s: %w", ev.Type, err)
	}
	return *m.Account, nil
}

// Status returns the daemon's pid and its connected processes.
func (c *Client) Status(ctx context.Context) (event.Status, error) {
	m, err := c.roundTrip(ctx, event.Wrap(&event.StatusRequest{}), event.KindStatus)
	if err != nil {
		return event.Status{}, fmt.Errorf("daemon status: %w", err)
	}
	return *m.Status, nil
}

func (c *Client) roundTrip(ctx context.Context, req event.Message, want event.Kind) (event.Message, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := req.Validate(); err != nil {
		return event.Message{}, err
	}
	// A cancelled context unblocks the read by moving the deadline to now.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	} else {
		_ = c.conn.SetDeadline(time.Time{})
	}
	if err := event.WriteMessage(c.conn, req); err != nil {
		return event.Message{}, c.ioError(ctx, err)
	}
	m, err := event.ReadMessage(c.conn)
	if err != nil {
		return event.Message{}, c.ioError(ctx, err)
	}
	switch m.Kind {
	case want:
		return m, nil
	case event.KindError:
		return event.Message{}, m.Error.Err()
	}
	return event.Message{}, errclass.New(errclass.Internal, "daemon answered %s with %s", req.Kind, m.Kind)
}

func (c *Client) ioError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		c.conn.Close()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errclass.New(errclass.DeadlineExceeded, "no answer from pkcshsmd in time: %w", ctx.Err())
		}
		return errclass.New(errclass.Aborted, "request cancelled: %w", ctx.Err())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.conn.Close()
		return errclass.New(errclass.DeadlineExceeded, "no answer from pkcshsmd in time: %w", err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return errclass.Newh(errclass.Unavailable, "check the daemon log: journalctl -u pkcshsmd",
			"pkcshsmd closed the connection")
	}
	if errclass.Of(err) != errclass.Unknown {
		return err
	}
	return errclass.New(errclass.Unavailable, "talk to pkcshsmd: %w", err)
}
