package tokenlib

import (
	"bytes"
	"testing"
)

// TestOpBuf: appendOpBuf appends like append across the pooled sizes
// (what it holds is the concatenation of the parts), moves to a buffer
// of the next power of two only when it lacks room, and putOpBuf clears a
// buffer in place before pooling it (it held application data), and
// leaves a buffer of another size alone.
func TestOpBuf(t *testing.T) {
	var buf, want []byte
	for i, n := range []int{1, 17, 4099, 1 << 14, 3, 1 << 15, 65535} {
		part := bytes.Repeat([]byte{byte(i + 1)}, n)
		before := cap(buf)
		buf = appendOpBuf(buf, part)
		want = append(want, part...)
		if !bytes.Equal(buf, want) {
			t.Fatalf("after part %d (%d bytes) the buffer is not the parts so far", i, n)
		}
		if len(want) >= 1<<minOpBufShift && (opBufClass(cap(buf)) < 0 || (before >= len(want) && cap(buf) != before)) {
			t.Fatalf("after part %d: capacity %d (was %d) for %d bytes", i, cap(buf), before, len(want))
		}
	}
	full := buf[:cap(buf)]
	putOpBuf(buf)
	if !bytes.Equal(full[:len(want)], make([]byte, len(want))) {
		t.Fatal("putOpBuf did not clear the buffer")
	}
	odd := bytes.Repeat([]byte{7}, 5000)
	putOpBuf(odd)
	if !bytes.Equal(odd, bytes.Repeat([]byte{7}, 5000)) {
		t.Fatal("putOpBuf touched a buffer of a size it does not pool")
	}
	for _, c := range []struct{ cap, class int }{{4095, -1}, {4096, 0}, {8192, 1}, {12288, -1}, {1 << 22, maxOpBufShift - minOpBufShift}, {1 << 23, -1}} {
		if got := opBufClass(c.cap); got != c.class {
			t.Errorf("opBufClass(%d) = %d, want %d", c.cap, got, c.class)
		}
	}
	if b := getOpBuf(1 << 13); len(b) != 0 || cap(b) != 1<<13 {
		t.Fatalf("getOpBuf(8192): len %d cap %d", len(b), cap(b))
	}
}
