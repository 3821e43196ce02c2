// Package interrupt turns SIGINT and SIGTERM into context cancellation for
// the command line tools, so that an interrupted command can undo or record
// what it was doing instead of dying in the middle of it.
//
// The first signal cancels [Handler.Context]: prompts return at once (with
// the terminal's echo restored) and the current step stops. Cleanup work
// (a rollback, recording an error state) runs under [Handler.Cleanup],
// which only a second signal cancels. A third signal is not caught: it
// ends the process the default way.
//
// The exit code of an interrupted command is 128 + the signal number (130
// for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it.
package interrupt

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Handler follows the signals of one command run.
type Handler struct {
	ctx, cleanup       context.Context
	cancel, cancelLast context.CancelFunc
	done               chan struct{}

	mu  sync.Mutex
	sig os.Signal
}

// New returns a Handler fed by signals (nil: never interrupted, as in
// unit tests). Stop releases it.
func New(parent context.Context, signals <-chan os.Signal) *Handler {
	h := &Handler{done: make(chan struct{})}
	h.ctx, h.cancel = context.WithCancel(parent)
	h.cleanup, h.cancelLast = context.WithCancel(context.WithoutCancel(parent))
	if signals != nil {
		go h.loop(signals)
	}
	return h
}

// Notify starts delivering SIGINT and SIGTERM to a new channel and returns
// it with a function that stops the delivery.
func Notify() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 3)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	return ch, func() { signal.Stop(ch) }
}

func (h *Handler) loop(signals <-chan os.Signal) {
	n := 0
	for {
		select {
		case s, ok := <-signals:
			if !ok {
				return
			}
			n++
			switch n {
			case 1:
				h.mu.Lock()
				h.sig = s
				h.mu.Unlock()
				close(h.done)
				h.cancel()
			case 2:
				h.cancelLast()
				// A third signal takes the default action.
				signal.Reset(syscall.SIGINT, syscall.SIGTERM)
				return
			}
		case <-h.cleanup.Done():
			return
		}
	}
}

// Context is canceled by the first signal.
func (h *Handler) Context() context.Context { return h.ctx }

// Cleanup is canceled only by a second signal: rollbacks run under it.
func (h *Handler) Cleanup() context.Context { return h.cleanup }

// Done is closed by the first signal (for prompts).
func (h *Handler) Done() <-chan struct{} { return h.done }

// Signal returns the first signal received, or nil.
func (h *Handler) Signal() os.Signal {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sig
}

// ExitCode returns 128 + the signal number once a signal was received, or
// 0.
func (h *Handler) ExitCode() int {
	if s, ok := h.Signal().(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 0
}

// Stop releases the handler's resources.
func (h *Handler) Stop() {
	h.cancelLast()
	h.cancel()
}
