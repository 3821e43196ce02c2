package interrupt

import (
	"context"
	"os"
	"syscall"
	"testing"
)

// TestTwoStages: the first signal cancels the work and closes Done, and
// the exit code follows it; only a second one cancels the cleanup.
func TestTwoStages(t *testing.T) {
	ch := make(chan os.Signal, 2)
	h := New(context.Background(), ch)
	defer h.Stop()
	if h.ExitCode() != 0 || h.Signal() != nil {
		t.Fatal("interrupted before any signal")
	}
	ch <- syscall.SIGTERM
	<-h.Context().Done()
	<-h.Done()
	if h.Cleanup().Err() != nil {
		t.Fatal("the first signal canceled the cleanup")
	}
	if h.ExitCode() != 143 || h.Signal() != syscall.SIGTERM {
		t.Fatalf("exit code %d, signal %v", h.ExitCode(), h.Signal())
	}
	ch <- syscall.SIGINT
	<-h.Cleanup().Done()
	if h.ExitCode() != 143 {
		t.Fatalf("the second signal changed the exit code to %d", h.ExitCode())
	}
}

func TestNoSignals(t *testing.T) {
	h := New(context.Background(), nil)
	h.Stop()
	if h.Context().Err() == nil || h.ExitCode() != 0 {
		t.Fatal("Stop must release the contexts; no signal means exit code 0")
	}
	select {
	case <-h.Done():
		t.Fatal("Done closed without a signal")
	default:
	}
}
