// Package objcache is the bounded cache of decoded token objects a token
// keeps in each process.
//
// A token's store may hold a million objects; a process must hold only
// those it uses. [Cache] keeps at most a fixed number of entries and
// drops the least recently used one when a new one does not fit. It does
// not decide whether an entry is still current: the engine stores each
// object with its store version and compares that with the stored version
// (one indexed read, see store.Store.Version) before every use, so a
// write by another process is seen at the next use, and an entry that was
// dropped is simply read again.
//
// A Cache is not safe for concurrent use; the engine guards it with the
// token's mutex.
package objcache

// DefaultSize is the number of entries a cache of size 0 holds: some MB of
// decoded objects, far more than an application uses at once.
const DefaultSize = 4096

// Cache maps object handles to values, holding at most Size of them.
type Cache[V any] struct {
	size    int
	entries map[uint64]*entry[V]
	// head.next is the most recently used entry, head.prev the least;
	// the list is circular through head.
	head entry[V]
}

type entry[V any] struct {
	key        uint64
	val        V
	prev, next *entry[V]
}

// New returns an empty cache of at most size entries (0: DefaultSize).
func New[V any](size int) *Cache[V] {
	if size <= 0 {
		size = DefaultSize
	}
	c := &Cache[V]{size: size, entries: make(map[uint64]*entry[V])}
	c.head.prev, c.head.next = &c.head, &c.head
	return c
}

// Size returns the bound.
func (c *Cache[V]) Size() int { return c.size }

// Len returns the number of entries.
func (c *Cache[V]) Len() int { return len(c.entries) }

// Get returns the value of key and marks it most recently used.
func (c *Cache[V]) Get(key uint64) (V, bool) {
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.unlink(e)
	c.pushFront(e)
	return e.val, true
}

// Peek returns the value of key without marking it used.
func (c *Cache[V]) Peek(key uint64) (V, bool) {
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	return e.val, true
}

// Put stores the value of key as the most recently used entry, dropping
// the least recently used entry if the cache is full.
func (c *Cache[V]) Put(key uint64, val V) {
	if e, ok := c.entries[key]; ok {
		e.val = val
		c.unlink(e)
		c.pushFront(e)
		return
	}
	if len(c.entries) >= c.size {
		last := c.head.prev
		c.unlink(last)
		delete(c.entries, last.key)
	}
	e := &entry[V]{key: key, val: val}
	c.entries[key] = e
	c.pushFront(e)
}

// Delete drops key.
func (c *Cache[V]) Delete(key uint64) {
	if e, ok := c.entries[key]; ok {
		c.unlink(e)
		delete(c.entries, key)
	}
}

// Clear drops every entry.
func (c *Cache[V]) Clear() {
	clear(c.entries)
	c.head.prev, c.head.next = &c.head, &c.head
}

func (c *Cache[V]) unlink(e *entry[V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache[V]) pushFront(e *entry[V]) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}
