package opbuf

import (
	"bytes"
	"testing"
)

// TestOpBuf: Append appends like append across the pooled sizes (what it
// holds is the concatenation of the parts), moves to a buffer of the next
// power of two only when it lacks room, Get gives the room asked for, and
// Put clears a buffer in place before pooling it (it held application
// data) and leaves a buffer of another size alone.
func TestOpBuf(t *testing.T) {
	var buf, want []byte
	for i, n := range []int{1, 17, 4099, 1 << 14, 3, 1 << 15, 65535} {
		part := bytes.Repeat([]byte{byte(i + 1)}, n)
		before := cap(buf)
		buf = Append(buf, part)
		want = append(want, part...)
		if !bytes.Equal(buf, want) {
			t.Fatalf("after part %d (%d bytes) the buffer is not the parts so far", i, n)
		}
		if len(want) >= Min && (class(cap(buf)) < 0 || (before >= len(want) && cap(buf) != before)) {
			t.Fatalf("after part %d: capacity %d (was %d) for %d bytes", i, cap(buf), before, len(want))
		}
	}
	full := buf[:cap(buf)]
	Put(buf)
	if !bytes.Equal(full[:len(want)], make([]byte, len(want))) {
		t.Fatal("Put did not clear the buffer")
	}
	odd := bytes.Repeat([]byte{7}, 5000)
	Put(odd)
	if !bytes.Equal(odd, bytes.Repeat([]byte{7}, 5000)) {
		t.Fatal("Put touched a buffer of a size it does not pool")
	}
	for _, c := range []struct{ cap, class int }{{Min - 1, -1}, {Min, 0}, {2 * Min, 1}, {3 * Min, -1}, {Max, maxShift - minShift}, {2 * Max, -1}} {
		if got := class(c.cap); got != c.class {
			t.Errorf("class(%d) = %d, want %d", c.cap, got, c.class)
		}
	}
	for _, c := range []struct{ n, cap int }{{100, 100}, {Min, Min}, {Min + 1, 2 * Min}, {65536 + 16, 1 << 17}, {Max + 1, Max + 1}} {
		if b := Get(c.n); len(b) != 0 || cap(b) != c.cap {
			t.Errorf("Get(%d): len %d cap %d, want 0, %d", c.n, len(b), cap(b), c.cap)
		}
	}
}
