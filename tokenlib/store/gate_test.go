package store

import (
	"context"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// TestGateGivesWritersPrecedence: while a writer of another process waits
// for the token (it holds the writers' gate shared, as every writer does
// from before its transaction begins), a low-priority batch does not start;
// other ordinary writers do. Once the waiting writer is done, the batch
// runs.
func TestGateGivesWritersPrecedence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	app, dk := newTokenIn(t, dir, testOptions(t))
	other := openTest(t, dir)
	pass := openTest(t, dir)
	if err := app.lockGate(ctx, false); err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- pass.BatchLow(ctx, dk, func(tx *Tx) error {
			close(entered)
			return tx.Create(keyObject("pass", true))
		})
	}()
	// Another ordinary writer is not held back by the waiting one.
	if err := other.Create(ctx, dk, keyObject("other", true)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
		t.Fatal("the low-priority batch started while a writer was waiting")
	case <-time.After(200 * time.Millisecond):
	}
	app.unlockGate()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the low-priority batch did not run after the writer finished")
	}
	if objs, err := app.List(ctx, dk, Filter{}); err != nil || len(objs) != 2 {
		t.Fatalf("%d objects, %v", len(objs), err)
	}
}

// TestGateHeldTooLong: a writer that cannot get the gate within the busy
// timeout (a stopped bulk writer holds it) fails as unavailable, naming
// the token, and changes nothing.
func TestGateHeldTooLong(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, dk := newTokenIn(t, dir, testOptions(t))
	opts := testOptions(t)
	opts.BusyTimeout = 50 * time.Millisecond
	impatient, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer impatient.Close()
	if err := s.lockGate(ctx, true); err != nil {
		t.Fatal(err)
	}
	defer s.unlockGate()
	err = impatient.Create(ctx, dk, keyObject("x", true))
	if errclass.Of(err) != errclass.Unavailable || errclass.Hint(err) == "" {
		t.Fatalf("create behind a held gate: %v", err)
	}
	if n, err := s.Count(ctx, dk, Filter{}); err != nil || n != 0 {
		t.Fatalf("%d objects after the refused create, %v", n, err)
	}
}

// TestBatchLowBusy: a low-priority batch reports another writer that
// holds the gate (inside or waiting) when it begins, and none when the
// gate is free; the probe leaves the gate as it found it.
func TestBatchLowBusy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	app, dk := newTokenIn(t, dir, testOptions(t))
	pass := openTest(t, dir)
	busy, err := pass.BatchLowBusy(ctx, dk, func(tx *Tx) error { return tx.Create(keyObject("alone", true)) })
	if err != nil || busy {
		t.Fatalf("alone: busy %v, %v; want not busy", busy, err)
	}
	if err := app.lockGate(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !pass.gateBusy() {
		t.Fatal("the gate held shared by another writer is not busy")
	}
	// The probe took nothing: another writer still gets the gate shared.
	other := openTest(t, dir)
	if err := other.lockGate(ctx, false); err != nil {
		t.Fatal(err)
	}
	other.unlockGate()
	// A batch that begins now reports the writer (and, the gate staying
	// taken, gives up at its deadline without writing).
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	busy, err = pass.BatchLowBusy(short, dk, func(tx *Tx) error { return tx.Create(keyObject("pass", true)) })
	if !busy || err == nil {
		t.Fatalf("batch while another writer holds the gate: busy %v, %v; want busy and the deadline", busy, err)
	}
	app.unlockGate()
}
