package objcache

import (
	"math/rand/v2"
	"testing"
)

func TestBoundAndRecency(t *testing.T) {
	c := New[string](3)
	for i := uint64(1); i <= 3; i++ {
		c.Put(i, string(rune('a'+i-1)))
	}
	if _, ok := c.Get(1); !ok { // 1 becomes the most recently used
		t.Fatal("1 missing")
	}
	c.Put(4, "d") // drops 2, the least recently used
	if _, ok := c.Peek(2); ok {
		t.Error("2 was kept; the least recently used entry must go")
	}
	for _, k := range []uint64{1, 3, 4} {
		if _, ok := c.Peek(k); !ok {
			t.Errorf("%d was dropped", k)
		}
	}
	if c.Len() != 3 {
		t.Errorf("Len %d, want 3", c.Len())
	}
	c.Put(3, "c2") // replace, no eviction
	if v, _ := c.Peek(3); v != "c2" || c.Len() != 3 {
		t.Errorf("replace: %q len %d", v, c.Len())
	}
	c.Delete(3)
	if _, ok := c.Peek(3); ok || c.Len() != 2 {
		t.Error("Delete kept the entry")
	}
	c.Clear()
	if c.Len() != 0 {
		t.Error("Clear kept entries")
	}
	c.Put(9, "z")
	if v, ok := c.Get(9); !ok || v != "z" {
		t.Error("cache unusable after Clear")
	}
	if New[int](0).Size() != DefaultSize {
		t.Error("size 0 is not DefaultSize")
	}
}

// TestAgainstModel runs random operations against a simple model of an
// LRU cache: the same entries survive, and the bound always holds.
func TestAgainstModel(t *testing.T) {
	const size = 8
	c := New[int](size)
	var order []uint64 // most recent first
	vals := map[uint64]int{}
	touch := func(k uint64) {
		for i, o := range order {
			if o == k {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		order = append([]uint64{k}, order...)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		k := uint64(r.IntN(20))
		switch r.IntN(4) {
		case 0, 1:
			c.Put(k, i)
			vals[k] = i
			touch(k)
			if len(order) > size {
				delete(vals, order[size])
				order = order[:size]
			}
		case 2:
			v, ok := c.Get(k)
			want, wok := vals[k]
			if ok != wok || v != want {
				t.Fatalf("step %d: Get(%d) = %d,%v want %d,%v", i, k, v, ok, want, wok)
			}
			if ok {
				touch(k)
			}
		case 3:
			c.Delete(k)
			if _, ok := vals[k]; ok {
				delete(vals, k)
				for j, o := range order {
					if o == k {
						order = append(order[:j], order[j+1:]...)
						break
					}
				}
			}
		}
		if c.Len() != len(vals) || c.Len() > size {
			t.Fatalf("step %d: Len %d, model %d", i, c.Len(), len(vals))
		}
	}
}
