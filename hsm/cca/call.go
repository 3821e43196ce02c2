package cca

/*
#include <stdlib.h>
#include <string.h>

// Every CCA verb is a void function whose parameters are all pointers
// (IBM CCA Basic Services Reference, "Parameters common to all verbs";
// host-libraries.md §1.3). One trampoline per parameter count calls a
// resolved verb with the pointers of a C-allocated argument vector, so no
// vendor header is needed and no Go pointer reaches the library.
static int pkcshsm_cca_call(void *fn, int n, void **a) {
	switch (n) {
	case 4: ((void (*)(void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3]); return 0;
	case 5: ((void (*)(void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4]); return 0;
	case 6: ((void (*)(void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5]); return 0;
	case 7: ((void (*)(void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6]); return 0;
	case 8: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7]); return 0;
	case 9: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8]); return 0;
	case 10: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9]); return 0;
	case 11: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10]); return 0;
	case 12: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11]); return 0;
	case 13: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12]); return 0;
	case 14: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13]); return 0;
	case 15: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14]); return 0;
	case 16: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15]); return 0;
	case 17: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16]); return 0;
	case 18: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17]); return 0;
	case 19: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18]); return 0;
	case 20: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19]); return 0;
	case 21: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20]); return 0;
	case 22: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20],a[21]); return 0;
	case 23: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20],a[21],a[22]); return 0;
	case 24: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20],a[21],a[22],a[23]); return 0;
	case 25: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20],a[21],a[22],a[23],a[24]); return 0;
	case 26: ((void (*)(void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*,void*))fn)(a[0],a[1],a[2],a[3],a[4],a[5],a[6],a[7],a[8],a[9],a[10],a[11],a[12],a[13],a[14],a[15],a[16],a[17],a[18],a[19],a[20],a[21],a[22],a[23],a[24],a[25]); return 0;
	}
	return -1;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// maxParams is the longest parameter list the trampoline supports; the
// longest verb used, CSNBKGN2, has 25.
const maxParams = 26

// slot is one verb parameter: a NULL pointer, a pointer to a C long, or a
// pointer to a byte buffer. Inputs are copied into C memory for the call
// and outputs copied back after it, so the library never sees Go memory
// (cgo's pointer-passing rules) and a library that writes past what a
// length allowed corrupts only its own buffer.
type slot struct {
	kind  slotKind
	long  int64  // kindLong: value in and out
	data  []byte // kindBuf: content in and out (len = capacity)
	cptr  unsafe.Pointer
	label string // for errors
}

type slotKind uint8

const (
	kindNull slotKind = iota
	kindLong
	kindBuf
)

// call collects the parameters of one verb call after the four common
// ones (return code, reason code, exit data length and exit data), which
// invoke adds: return and reason code outputs, exit_data_length pointing
// to 0 and exit_data NULL, as IBM recommends.
type call struct {
	verb  string
	slots []*slot
}

func newCall(verb string) *call { return &call{verb: verb} }

// null appends a NULL pointer parameter.
func (c *call) null() *slot { return c.add(&slot{kind: kindNull}) }

// long appends a pointer to a C long holding v.
func (c *call) long(v int64) *slot { return c.add(&slot{kind: kindLong, long: v}) }

// buf appends a pointer to a buffer of size bytes starting with in
// (zero-filled after it).
func (c *call) buf(in []byte, size int) *slot {
	if size < len(in) {
		size = len(in)
	}
	d := make([]byte, size)
	copy(d, in)
	return c.add(&slot{kind: kindBuf, data: d})
}

// rules appends rule_array_count and rule_array: 8-byte keywords,
// left-aligned and padded with blanks. capacity is the buffer size in
// keywords (CSUACFQ writes more keywords back than it is given).
func (c *call) rules(capacity int, kw ...string) (count, arr *slot) {
	count = c.long(int64(len(kw)))
	arr = c.buf(ruleArray(kw...), 8*max(capacity, len(kw)))
	return count, arr
}

func (c *call) add(s *slot) *slot { c.slots = append(c.slots, s); return s }

// ruleArray encodes keywords as CCA rule arrays hold them.
func ruleArray(kw ...string) []byte {
	b := make([]byte, 8*len(kw))
	for i := range b {
		b[i] = ' '
	}
	for i, k := range kw {
		copy(b[8*i:8*i+8], k)
	}
	return b
}

// keyword returns an 8-byte keyword field (CSNBKGN's key_form etc.).
func keyword(k string) []byte { return ruleArray(k) }

// Codes are the return and reason code of one verb call.
type Codes struct {
	Return, Reason int64
}

// invoke calls the verb at fn with the four common parameters followed by
// the collected slots, and copies every output back into its slot.
func (c *call) invoke(fn unsafe.Pointer) (Codes, error) {
	n := 4 + len(c.slots)
	if n > maxParams {
		return Codes{}, fmt.Errorf("%s: %d parameters, the trampoline takes at most %d", c.verb, n, maxParams)
	}
	longSize := C.size_t(unsafe.Sizeof(C.long(0)))
	type block struct {
		p    unsafe.Pointer
		size C.size_t
	}
	var allocs []block
	alloc := func(size C.size_t) unsafe.Pointer {
		size = max(size, 1)
		p := C.calloc(1, size)
		if p == nil {
			panic("cca: out of C memory")
		}
		allocs = append(allocs, block{p, size})
		return p
	}
	// Buffers may hold clear data or keys: wipe them before freeing.
	defer func() {
		for _, b := range allocs {
			C.memset(b.p, 0, b.size)
			C.free(b.p)
		}
	}()
	argv := (*[maxParams]unsafe.Pointer)(alloc(C.size_t(maxParams) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	rc := (*C.long)(alloc(longSize))
	rs := (*C.long)(alloc(longSize))
	exitLen := (*C.long)(alloc(longSize))
	argv[0], argv[1], argv[2], argv[3] = unsafe.Pointer(rc), unsafe.Pointer(rs), unsafe.Pointer(exitLen), nil
	for i, s := range c.slots {
		switch s.kind {
		case kindNull:
			s.cptr = nil
		case kindLong:
			p := (*C.long)(alloc(longSize))
			*p = C.long(s.long)
			s.cptr = unsafe.Pointer(p)
		case kindBuf:
			p := alloc(C.size_t(len(s.data)))
			if len(s.data) > 0 {
				C.memcpy(p, unsafe.Pointer(&s.data[0]), C.size_t(len(s.data)))
			}
			s.cptr = p
		}
		argv[4+i] = s.cptr
	}
	if C.pkcshsm_cca_call(fn, C.int(n), (*unsafe.Pointer)(unsafe.Pointer(argv))) != 0 {
		return Codes{}, fmt.Errorf("%s: no trampoline for %d parameters", c.verb, n)
	}
	for _, s := range c.slots {
		switch s.kind {
		case kindLong:
			s.long = int64(*(*C.long)(s.cptr))
		case kindBuf:
			if len(s.data) > 0 {
				copy(s.data, unsafe.Slice((*byte)(s.cptr), len(s.data)))
			}
		}
		s.cptr = nil
	}
	return Codes{Return: int64(*rc), Reason: int64(*rs)}, nil
}
