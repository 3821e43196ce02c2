package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/runtime/event"
)

type countHandler struct{ nopHandler }

// TestPollFallback drives the polling watcher directly: it is what runs
// when inotify is unavailable.
func TestPollFallback(t *testing.T) {
	dir := t.TempDir()
	ops := filepath.Join(dir, "ops")
	a, err := New(Options{AppSocket: "/nonexistent", OpsDir: ops, Handler: &countHandler{}, PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	initial := dirSignature(ops)
	go func() { a.poll(ctx, initial); close(done) }()
	defer func() { cancel(); <-done }()

	steps := []func() error{
		func() error { return os.Mkdir(ops, 0o755) },
		func() error { return os.WriteFile(filepath.Join(ops, "Ab12Cd"), []byte("1"), 0o600) },
		func() error { return os.WriteFile(filepath.Join(ops, "Ab12Cd"), []byte("22"), 0o600) },
		func() error { return os.RemoveAll(ops) },
	}
	for i, step := range steps {
		select { // drain an earlier request
		case <-a.reconcile:
		default:
		}
		if err := step(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-a.reconcile:
		case <-time.After(10 * time.Second):
			t.Fatalf("step %d: no reconcile request", i)
		}
	}
}

func TestDirSignature(t *testing.T) {
	dir := t.TempDir()
	empty := dirSignature(dir)
	os.WriteFile(filepath.Join(dir, "a"), []byte("x"), 0o600)
	one := dirSignature(dir)
	if one == empty {
		t.Error("a new file did not change the signature")
	}
	if dirSignature(dir) != one {
		t.Error("signature not stable")
	}
	if dirSignature(filepath.Join(dir, "missing")) == empty {
		t.Error("a missing directory looks like an empty one")
	}
}

type nopHandler struct{}

func (nopHandler) Tokens() []event.Token { return nil }
func (nopHandler) HandleEvent(context.Context, event.Event) event.Reply {
	return event.Reply{}
}
func (nopHandler) Reconcile(context.Context) error { return nil }

func TestJitterBounds(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, 100 * time.Millisecond, 5 * time.Second} {
		for range 200 {
			j := jitter(d)
			if j < d*8/10 || j > d*12/10 {
				t.Fatalf("jitter(%v) = %v, outside [0.8, 1.2]", d, j)
			}
		}
	}
}
