package sim

import "sync"

// keyCache holds the private keys (EC, RSA) opened on one APQN, so that a
// signature does not unseal and parse the PKCS#8 key again each time — an
// adapter keeps no state per key either, but its cost is the adapter's,
// not the host's. It is bounded (maxOpenedKeys; when full it is emptied
// and refills with the keys in use) and lives in one snapshot: a register
// change makes a new snapshot, so a key opened under a register that is
// gone is never served from it. Keyed by the whole blob: a different or
// altered blob is opened anew. Secret keys are not cached: opening them is
// one AES-GCM open, cheaper than the lookup's bookkeeping is worth.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]*usable
}

const maxOpenedKeys = 256

func (c *keyCache) get(blob []byte) *usable {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys[string(blob)]
}

func (c *keyCache) put(blob []byte, u *usable) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil || len(c.keys) >= maxOpenedKeys {
		c.keys = make(map[string]*usable, 16)
	}
	c.keys[string(blob)] = u
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}
