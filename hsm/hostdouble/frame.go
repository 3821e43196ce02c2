package hostdouble

import (
	"encoding/binary"
	"io"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The wire between the C doubles and this server. Every header field is
// big-endian, whatever the byte order of either end, so the same server
// runs under qemu-s390x and on amd64. Native data the C caller hands over
// unchanged (PKCS#11 CK_ULONG attribute values, CK_IBM_DOMAIN_INFO
// structures) is read and written in the client's byte order, which the
// request's flags declare; the server never assumes its own.
//
// Request:
//
//	u32 length of the rest
//	u32 request id (echoed)
//	u8  library (1 CCA, 2 EP11)
//	u8  flags (bit 0: the client is little-endian)
//	u8  function name length, name (ASCII, e.g. "CSNBKTC2", "m_admin")
//	i32 CCA coprocessor the calling thread allocated (-1: none)
//	i32 CCA domain the process allocated (-1: none)
//	u16 argument count, then per argument:
//	    u8 kind
//	    kind 0 NULL pointer
//	    kind 1 integer: i64 (the value a long*, size_t* or by-value integer holds)
//	    kind 2 input bytes: u32 n, n bytes
//	    kind 3 output buffer: u32 capacity
//	    kind 4 input/output buffer: u32 capacity, u32 n, n bytes (n <= capacity)
//	    kind 5 unreadable buffer: i64 the length the caller gave (negative or
//	           over MaxBuffer); the C side did not read it
//
// Response:
//
//	u32 length of the rest
//	u32 request id
//	u64 function return value (EP11 CK_RV or int; CCA 0)
//	u16 output count, then per output:
//	    u16 argument index (0xffff: the thread's new CCA coprocessor,
//	        0xfffe: the process's new CCA domain)
//	    u8 kind: 1 integer (i64), 2 bytes (u32 n, n bytes)
//
// The C side writes an integer output through the argument's pointer and
// copies a bytes output into the argument's buffer, after checking it fits
// the capacity it sent; a response that does not fit is a transport error
// there, so a server bug cannot overrun a caller's buffer.

// Limits.
const (
	MaxFrame  = 4 << 20 // a whole frame
	MaxBuffer = 1 << 20 // one argument buffer
	maxArgs   = 64
)

// Libraries.
const (
	LibCCA  = 1
	LibEP11 = 2
)

// Argument kinds.
const (
	KindNull       = 0
	KindInt        = 1
	KindIn         = 2
	KindOut        = 3
	KindInOut      = 4
	KindUnreadable = 5
)

// Special output indexes for the CCA selection the C side keeps.
const (
	OutSelCard   = 0xffff
	OutSelDomain = 0xfffe
)

// Arg is one argument of a call.
type Arg struct {
	Kind  uint8
	Int   int64  // KindInt; KindUnreadable: the length given
	Bytes []byte // KindIn, KindInOut
	Cap   int    // KindOut, KindInOut
}

// Request is one decoded call.
type Request struct {
	ID           uint32
	Lib          uint8
	LittleEndian bool
	Func         string
	SelCard      int32
	SelDomain    int32
	Args         []Arg
}

// Output is one value the server sends back for an argument.
type Output struct {
	Index uint16
	Int   int64
	Bytes []byte
	IsInt bool
}

// Response is one encoded answer.
type Response struct {
	ID   uint32
	Ret  uint64
	Outs []Output
}

func frameErr(format string, args ...any) error {
	return errclass.Newh(errclass.InvalidArgument, "the host-library double and its server are out of step; rebuild both from one tree (make host-doubles)",
		"host-double frame: "+format, args...)
}

// ReadFrame reads one length-prefixed frame body.
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, frameErr("frame of %d bytes exceeds %d", n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, frameErr("truncated frame: %v", err)
	}
	return body, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = frameErr("field of %d bytes runs past the frame end (%d left)", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// DecodeRequest parses a frame body. Every length is checked against
// what is left; nothing is trusted.
func DecodeRequest(body []byte) (*Request, error) {
	r := &reader{b: body}
	req := &Request{ID: r.u32(), Lib: r.u8()}
	flags := r.u8()
	req.LittleEndian = flags&1 != 0
	name := r.take(int(r.u8()))
	req.SelCard = int32(r.u32())
	req.SelDomain = int32(r.u32())
	n := int(r.u16())
	if r.err != nil {
		return nil, r.err
	}
	if flags&^1 != 0 {
		return nil, frameErr("unknown flags 0x%02x", flags)
	}
	if req.Lib != LibCCA && req.Lib != LibEP11 {
		return nil, frameErr("unknown library %d", req.Lib)
	}
	if len(name) == 0 {
		return nil, frameErr("empty function name")
	}
	for _, c := range name {
		if c < 0x21 || c > 0x7e {
			return nil, frameErr("function name is not printable ASCII")
		}
	}
	req.Func = string(name)
	if n > maxArgs {
		return nil, frameErr("%d arguments exceed %d", n, maxArgs)
	}
	req.Args = make([]Arg, n)
	for i := range req.Args {
		a := Arg{Kind: r.u8()}
		switch a.Kind {
		case KindNull:
		case KindInt, KindUnreadable:
			a.Int = int64(r.u64())
		case KindIn:
			a.Bytes = r.take(int(r.u32()))
		case KindOut:
			a.Cap = int(r.u32())
		case KindInOut:
			a.Cap = int(r.u32())
			a.Bytes = r.take(int(r.u32()))
			if r.err == nil && len(a.Bytes) > a.Cap {
				return nil, frameErr("argument %d: %d bytes in a buffer of %d", i, len(a.Bytes), a.Cap)
			}
		default:
			if r.err == nil {
				return nil, frameErr("argument %d: unknown kind %d", i, a.Kind)
			}
		}
		if r.err != nil {
			return nil, r.err
		}
		if a.Cap > MaxBuffer || len(a.Bytes) > MaxBuffer {
			return nil, frameErr("argument %d: buffer over %d bytes", i, MaxBuffer)
		}
		req.Args[i] = a
	}
	if len(r.b) != 0 {
		return nil, frameErr("%d bytes after the last argument", len(r.b))
	}
	return req, nil
}

// EncodeRequest is the inverse of DecodeRequest (tests and fuzzing; the
// real client is C).
func EncodeRequest(req *Request) []byte {
	be := binary.BigEndian
	b := make([]byte, 4, 64)
	b = be.AppendUint32(b, req.ID)
	b = append(b, req.Lib)
	var fl byte
	if req.LittleEndian {
		fl = 1
	}
	b = append(b, fl, byte(len(req.Func)))
	b = append(b, req.Func...)
	b = be.AppendUint32(b, uint32(req.SelCard))
	b = be.AppendUint32(b, uint32(req.SelDomain))
	b = be.AppendUint16(b, uint16(len(req.Args)))
	for _, a := range req.Args {
		b = append(b, a.Kind)
		switch a.Kind {
		case KindInt, KindUnreadable:
			b = be.AppendUint64(b, uint64(a.Int))
		case KindIn:
			b = be.AppendUint32(b, uint32(len(a.Bytes)))
			b = append(b, a.Bytes...)
		case KindOut:
			b = be.AppendUint32(b, uint32(a.Cap))
		case KindInOut:
			b = be.AppendUint32(b, uint32(a.Cap))
			b = be.AppendUint32(b, uint32(len(a.Bytes)))
			b = append(b, a.Bytes...)
		}
	}
	be.PutUint32(b, uint32(len(b)-4))
	return b
}

// EncodeResponse lays out a response frame, length prefix included.
func EncodeResponse(resp *Response) []byte {
	be := binary.BigEndian
	b := make([]byte, 4, 64)
	b = be.AppendUint32(b, resp.ID)
	b = be.AppendUint64(b, resp.Ret)
	b = be.AppendUint16(b, uint16(len(resp.Outs)))
	for _, o := range resp.Outs {
		b = be.AppendUint16(b, o.Index)
		if o.IsInt {
			b = append(b, KindInt)
			b = be.AppendUint64(b, uint64(o.Int))
			continue
		}
		b = append(b, KindIn)
		b = be.AppendUint32(b, uint32(len(o.Bytes)))
		b = append(b, o.Bytes...)
	}
	be.PutUint32(b, uint32(len(b)-4))
	return b
}

// DecodeResponse parses a response body (tests).
func DecodeResponse(body []byte) (*Response, error) {
	r := &reader{b: body}
	resp := &Response{ID: r.u32(), Ret: r.u64()}
	n := int(r.u16())
	for i := 0; i < n && r.err == nil; i++ {
		o := Output{Index: r.u16()}
		switch k := r.u8(); k {
		case KindInt:
			o.IsInt, o.Int = true, int64(r.u64())
		case KindIn:
			o.Bytes = r.take(int(r.u32()))
		default:
			if r.err == nil {
				r.err = frameErr("output %d: unknown kind %d", i, k)
			}
		}
		resp.Outs = append(resp.Outs, o)
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = frameErr("%d bytes after the last output", len(r.b))
	}
	return resp, r.err
}
