package hsmtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Held is a backend for tests of requests in flight: it holds every
// Reencipher inside the backend until Want of them are inside at the same
// time, then lets them all (and every later one) go, and records the most
// it ever held per APQN. If Want are never inside together, a held call
// fails after 20 s with an error saying how many were.
type Held struct {
	hsm.Backend
	Want int

	mu      sync.Mutex
	inside  map[apqn.ID]int
	most    map[apqn.ID]int
	total   int
	open    bool
	reached chan struct{}
}

// NewHeld wraps be.
func NewHeld(be hsm.Backend, want int) *Held {
	return &Held{Backend: be, Want: want, inside: map[apqn.ID]int{}, most: map[apqn.ID]int{}, reached: make(chan struct{})}
}

// Most returns the most requests held at once on q.
func (g *Held) Most(q apqn.ID) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.most[q]
}

// Reencipher implements hsm.Backend.
func (g *Held) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	g.mu.Lock()
	g.inside[q]++
	g.total++
	g.most[q] = max(g.most[q], g.inside[q])
	if g.total == g.Want && !g.open {
		g.open = true
		close(g.reached)
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inside[q]--
		g.total--
		g.mu.Unlock()
	}()
	select {
	case <-g.reached:
	case <-time.After(20 * time.Second):
		g.mu.Lock()
		n := g.total
		g.mu.Unlock()
		return nil, fmt.Errorf("held backend: only %d requests were in flight together, want %d", n, g.Want)
	}
	return g.Backend.Reencipher(ctx, q, blob, d)
}
