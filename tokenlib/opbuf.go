package tokenlib

import (
	"math/bits"
	"sync"
)

// The multi-part operations that buffer their input until Final (AES-GCM,
// RSA-OAEP, the signatures without a hash) keep it in a buffer taken from
// opBufs, which the Final that ends the operation gives back, cleared.
// Without it a 64 KiB AES-GCM in 16 KiB parts allocated (and zeroed) the
// buffer three times as it grew, and the garbage collector's share of the
// operation grew with it. Buffers are sized in powers of two from
// minOpBuf to maxOpBuf; smaller inputs use plain appends, larger ones are
// left to the garbage collector.
const (
	minOpBufShift = 12 // 4 KiB
	maxOpBufShift = 22 // 4 MiB
)

var opBufs [maxOpBufShift - minOpBufShift + 1]sync.Pool

// opBufClass is the pool of a buffer of capacity c, or -1 when c is not
// one of the pooled sizes.
func opBufClass(c int) int {
	if c < 1<<minOpBufShift || c > 1<<maxOpBufShift || c&(c-1) != 0 {
		return -1
	}
	return bits.Len(uint(c)) - 1 - minOpBufShift
}

// appendOpBuf appends data to buf like append, moving to a pooled buffer
// of the next power of two when buf lacks room. buf must be nil or a
// buffer only the operation holds (never the caller's memory).
func appendOpBuf(buf, data []byte) []byte {
	if len(data) <= cap(buf)-len(buf) {
		return append(buf, data...)
	}
	need := len(buf) + len(data)
	if need < 1<<minOpBufShift || need > 1<<maxOpBufShift {
		return append(buf, data...)
	}
	size := 1 << bits.Len(uint(need-1))
	nb := getOpBuf(size)
	nb = append(nb, buf...)
	nb = append(nb, data...)
	putOpBuf(buf)
	return nb
}

// getOpBuf returns an empty buffer of capacity size (a pooled size).
func getOpBuf(size int) []byte {
	if p, ok := opBufs[opBufClass(size)].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, size)
}

// putOpBuf clears buf (it held application data) and gives it back to its
// pool; a buffer of another size is left to the garbage collector.
func putOpBuf(buf []byte) {
	c := opBufClass(cap(buf))
	if c < 0 {
		return
	}
	clear(buf)
	buf = buf[:0]
	opBufs[c].Put(&buf)
}
