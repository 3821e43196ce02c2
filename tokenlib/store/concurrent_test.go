package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// TestConcurrentGoroutines has several goroutines create, read-modify-write
// and list one token at once (run with -race). Every conflict is retried;
// in the end each counter object must hold exactly the number of
// increments made.
func TestConcurrentGoroutines(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	counter := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaValue: []byte("0")}}
	if err := s.Create(ctx, dk, counter); err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				if err := s.Create(ctx, dk, keyObject(fmt.Sprint(w, "-", i), i%2 == 0)); err != nil {
					errs <- err
					return
				}
				for {
					o, err := s.Get(ctx, dk, counter.Handle)
					if err != nil {
						errs <- err
						return
					}
					var n int
					fmt.Sscan(string(o.Attrs[ckaValue]), &n)
					o.Attrs[ckaValue] = []byte(fmt.Sprint(n + 1))
					err = s.Update(ctx, dk, o)
					if errors.Is(err, errclass.Conflict) {
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
				if _, err := s.List(ctx, dk, Filter{Classes: []uint{ckoSecret}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	o, err := s.Get(ctx, dk, counter.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(o.Attrs[ckaValue]), fmt.Sprint(workers*rounds); got != want {
		t.Fatalf("counter = %s, want %s (lost updates)", got, want)
	}
	if n := objectCount(t, s); n != workers*rounds+1 {
		t.Fatalf("%d objects, want %d", n, workers*rounds+1)
	}
}

// TestPINLengthOptions uses the EP11 token's PIN range 4..8.
func TestPINLengthOptions(t *testing.T) {
	ctx := context.Background()
	opts := testOptions(t)
	opts.MinPINLen, opts.MaxPINLen = 4, 8
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.InitToken(ctx, []byte("123456789"), "ep11")
	wantClass(t, err, errclass.InvalidArgument, ErrPINLen)
	if err := s.InitToken(ctx, []byte("1234"), "ep11"); err != nil {
		t.Fatal(err)
	}
	current := "1234"
	tests := []struct {
		pin string
		ok  bool
	}{{"123", false}, {"12345678", true}, {"123456789", false}, {"4321", true}}
	for _, tt := range tests {
		err := s.SetPIN(ctx, SO, []byte(current), []byte(tt.pin))
		if tt.ok != (err == nil) {
			t.Fatalf("SetPIN to a %d-character PIN: %v", len(tt.pin), err)
		}
		if !tt.ok {
			wantClass(t, err, errclass.InvalidArgument, ErrPINLen)
			continue
		}
		current = tt.pin
		if _, err := s.Login(ctx, SO, []byte(current)); err != nil {
			t.Fatal(err)
		}
	}
}
