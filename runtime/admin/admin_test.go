package admin_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// fakeDaemon answers each request on its socket with answer(request).
// A nil answer closes the connection; block holds the answer back.
func fakeDaemon(t *testing.T, answer func(event.Message) *event.Message, block chan struct{}) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "adm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					m, err := event.ReadMessage(c)
					if err != nil {
						return
					}
					if block != nil {
						<-block
					}
					a := answer(m)
					if a == nil {
						return
					}
					if err := event.WriteMessage(c, *a); err != nil {
						return
					}
				}
			}()
		}
	}()
	return path
}

func wrap(body any) *event.Message { m := event.Wrap(body); return &m }

func TestRequests(t *testing.T) {
	acct := &event.Account{EventID: "e1", Type: "t", Processes: []event.ProcessResult{{PID: 9, Program: "p", Outcome: event.TimedOut}}}
	tests := []struct {
		name   string
		answer func(event.Message) *event.Message
		class  errclass.Class // Unknown: success
		want   string
	}{
		{"account", func(m event.Message) *event.Message {
			if m.Kind == event.KindBroadcast && m.Broadcast.Event.Type == "t" {
				return wrap(acct)
			}
			return wrap(&event.Error{Class: errclass.Internal, Message: "wrong request"})
		}, errclass.Unknown, ""},
		{"refusal keeps class and hint", func(event.Message) *event.Message {
			return wrap(&event.Error{Class: errclass.PermissionDenied, Message: "uid 5 may not broadcast events", Hint: "join pkcshsm-admin"})
		}, errclass.PermissionDenied, "uid 5 may not broadcast"},
		{"wrong answer kind", func(event.Message) *event.Message {
			return wrap(&event.Status{PID: 1})
		}, errclass.Internal, "answered broadcast with status"},
		{"daemon hangs up", func(event.Message) *event.Message { return nil }, errclass.Unavailable, "closed the connection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := admin.Dial(context.Background(), fakeDaemon(t, tt.answer, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := c.Broadcast(context.Background(), event.Event{Type: "t"})
			if tt.class == errclass.Unknown {
				if err != nil || got.EventID != "e1" || got.Processes[0].Outcome != event.TimedOut {
					t.Fatalf("Broadcast = %+v, %v", got, err)
				}
				return
			}
			if errclass.Of(err) != tt.class || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v (class %v), want class %v mentioning %q", err, errclass.Of(err), tt.class, tt.want)
			}
			if tt.class == errclass.PermissionDenied && errclass.Hint(err) != "join pkcshsm-admin" {
				t.Errorf("hint %q lost", errclass.Hint(err))
			}
		})
	}
}

func TestStatus(t *testing.T) {
	path := fakeDaemon(t, func(m event.Message) *event.Message {
		return wrap(&event.Status{PID: 42, Processes: []event.Process{{Conn: 1, PID: 7, Program: "app"}}})
	}, nil)
	c, err := admin.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil || st.PID != 42 || st.Processes[0].PID != 7 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

func TestContextEndsTheWait(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	path := fakeDaemon(t, func(event.Message) *event.Message { return wrap(&event.Status{PID: 1}) }, block)
	tests := []struct {
		name  string
		ctx   func() (context.Context, context.CancelFunc)
		class errclass.Class
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, errclass.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, errclass.Aborted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := admin.Dial(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err = c.Status(ctx)
			if errclass.Of(err) != tt.class {
				t.Fatalf("err %v (class %v), want %v", err, errclass.Of(err), tt.class)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := admin.Dial(context.Background(), filepath.Join(dir, "missing.sock"))
	if !errors.Is(err, errclass.Unavailable) || !strings.Contains(errclass.Hint(err), "systemctl start pkcshsmd") {
		t.Errorf("missing socket: %v (hint %q)", err, errclass.Hint(err))
	}
	// A socket file nobody listens on: a daemon that died.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := admin.Dial(context.Background(), stale); !errors.Is(err, errclass.Unavailable) {
		t.Errorf("stale socket: %v", err)
	}
	if os.Getuid() != 0 {
		locked := filepath.Join(t.TempDir(), "locked")
		os.Mkdir(locked, 0o000)
		defer os.Chmod(locked, 0o755)
		if _, err := admin.Dial(context.Background(), filepath.Join(locked, "admin.sock")); !errors.Is(err, errclass.PermissionDenied) {
			t.Errorf("unreachable socket: %v", err)
		}
	}
}
