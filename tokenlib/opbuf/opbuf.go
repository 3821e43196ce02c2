// Package opbuf holds the token library's reusable operation buffers.
//
// The multi-part operations that buffer their input until Final (AES-GCM,
// RSA-OAEP, the signatures without a hash) keep it in a buffer from here,
// and large encryptions and decryptions have the backend append their
// output to one (hsm.Appender); the call that ends the operation gives
// them back with Put, which clears them. Without it a 64 KiB AES-GCM in
// 16 KiB parts allocated (and zeroed) its buffer three times as it grew
// and its output once more, and the garbage collector's share of the
// operation grew with it. Buffers are sized in powers of two from Min to
// Max; smaller inputs use plain appends, larger ones are left to the
// garbage collector.
package opbuf

import (
	"math/bits"
	"sync"
)

const (
	minShift = 12 // 4 KiB
	maxShift = 22 // 4 MiB

	// Min and Max are the smallest and largest pooled buffers.
	Min = 1 << minShift
	Max = 1 << maxShift
)

var pools [maxShift - minShift + 1]sync.Pool

// class is the pool of a buffer of capacity c, or -1 when c is not one of
// the pooled sizes.
func class(c int) int {
	if c < Min || c > Max || c&(c-1) != 0 {
		return -1
	}
	return bits.Len(uint(c)) - 1 - minShift
}

// Append appends data to buf like append, moving to a pooled buffer of
// the next power of two when buf lacks room (and giving buf back). buf
// must be nil or a buffer only the caller holds, never an application's
// memory.
func Append(buf, data []byte) []byte {
	if len(data) <= cap(buf)-len(buf) {
		return append(buf, data...)
	}
	need := len(buf) + len(data)
	if need < Min || need > Max {
		return append(buf, data...)
	}
	nb := Get(need)
	nb = append(nb, buf...)
	nb = append(nb, data...)
	Put(buf)
	return nb
}

// Get returns an empty buffer with room for n bytes: a pooled one, of the
// next power of two, when Min <= n <= Max.
func Get(n int) []byte {
	if n < Min || n > Max {
		return make([]byte, 0, n)
	}
	size := 1 << bits.Len(uint(n-1))
	if p, ok := pools[class(size)].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// Put clears buf (it held application data) and gives it back to its
// pool; a buffer of another size is left to the garbage collector. The
// caller must not use buf, or any slice of it, afterwards.
func Put(buf []byte) {
	c := class(cap(buf))
	if c < 0 {
		return
	}
	clear(buf)
	buf = buf[:0]
	pools[c].Put(&buf)
}
