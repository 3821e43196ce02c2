// Package hostdouble is the server half of the test doubles of IBM's crypto
// host libraries: the CCA library libcsulcca.so and the EP11 library
// libep11.so. The libraries themselves are C (hsm/hostdouble/c, built by
// `make host-doubles` into build/host-doubles/); each exported function
// marshals its arguments into a frame (frame.go) and sends it to a server
// process running [Serve] over the simulator (hsm/sim), so the doubles act
// on the same adapters, registers and sysfs view that `hsmsim` drives.
//
// The doubles exist to keep the host-library backends honest. They are
// strict: every call is checked as IBM documents the real library — rule
// array counts and keywords, lengths, token layouts, the APQN the calling
// thread selected — and refused with the documented return and reason
// codes (CCA) or CK_RV (EP11). cca.go and ep11.go say, next to each check,
// which document and section it follows; the facts come from the IBM CCA
// and EP11 host library documentation as summarised in the project's
// reference notes (host-libraries.md), and from openCryptoki's use of the
// libraries (cca_specific.c, ep11_specific.c, csulincl.h, ep11.h).
package hostdouble

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

// Server answers the calls of one double library in one process.
type Server struct {
	lib uint8
	h   *sim.HSM
	log zerolog.Logger
	env func(string) string
}

// NewServer serves library lib (LibCCA or LibEP11) over the simulator h.
// env looks up the client's environment (CSU_DEFAULT_ADAPTER,
// CSU_DEFAULT_DOMAIN); the server process inherits it from the client.
func NewServer(lib uint8, h *sim.HSM, log zerolog.Logger, env func(string) string) (*Server, error) {
	if lib != LibCCA && lib != LibEP11 {
		return nil, errclass.New(errclass.InvalidArgument, "unknown host library %d", lib)
	}
	return &Server{lib: lib, h: h, log: log, env: env}, nil
}

// Serve answers frames from r on w until r ends. A frame that does not
// parse ends the connection with an error: the C side then reports a
// transport failure (CCA 12/338, EP11 CKR_IBM_TRANSPORT_ERROR) to its
// caller rather than guess.
func (s *Server) Serve(ctx context.Context, r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriterSize(w, 64<<10)
	for {
		body, err := ReadFrame(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		req, err := DecodeRequest(body)
		if err != nil {
			return err
		}
		resp, err := s.Handle(ctx, req)
		if err != nil {
			return err
		}
		if _, err := bw.Write(EncodeResponse(resp)); err != nil {
			return errclass.New(errclass.Unavailable, "host-double: write response: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return errclass.New(errclass.Unavailable, "host-double: write response: %w", err)
		}
	}
}

// Handle answers one request. An error means the request does not fit the
// function's C signature (a double/server mismatch), never a refusal: a
// refusal is a return code in the response.
func (s *Server) Handle(ctx context.Context, req *Request) (*Response, error) {
	if req.Lib != s.lib {
		return nil, frameErr("a library %d call reached the library %d server", req.Lib, s.lib)
	}
	var order byteOrder = binary.BigEndian
	if req.LittleEndian {
		order = binary.LittleEndian
	}
	c := &call{ctx: ctx, req: req, s: s, order: order}
	var err error
	if s.lib == LibCCA {
		err = s.cca(c)
	} else {
		err = s.ep11Call(c)
	}
	if err != nil {
		return nil, err
	}
	s.log.Debug().Str("func", req.Func).Uint64("ret", c.ret).Int64("rc", c.rc).Int64("reason", c.reason).Msg("host-double call")
	return &Response{ID: req.ID, Ret: c.ret, Outs: c.outs}, nil
}

// byteOrder reads and appends native data in the client's order.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// call is one request being answered.
type call struct {
	ctx   context.Context
	req   *Request
	s     *Server
	order byteOrder // the client's byte order for native data
	outs  []Output
	ret   uint64
	// CCA codes, also set as outputs 0 and 1.
	rc, reason int64
	// lengthBack are the length outputs kept when a CCA verb refuses a
	// short buffer (the needed length goes back to the caller).
	lengthBack []Output
}

func (c *call) nargs(n int) error {
	if len(c.req.Args) != n {
		return frameErr("%s takes %d arguments, the frame has %d", c.req.Func, n, len(c.req.Args))
	}
	return nil
}

func (c *call) arg(i int) Arg { return c.req.Args[i] }

// setInt returns an integer through argument i (a long*, size_t* or
// CK_ULONG* the caller passed); a NULL pointer is a frame error.
func (c *call) setInt(i int, v int64) error {
	switch c.req.Args[i].Kind {
	case KindInt, KindUnreadable:
	default:
		return frameErr("%s: argument %d is not an integer pointer", c.req.Func, i)
	}
	c.outs = append(c.outs, Output{Index: uint16(i), Int: v, IsInt: true})
	return nil
}

// setBytes copies b into the buffer of argument i; it must fit the
// capacity the caller gave (the handlers check first and refuse with the
// documented code, so a failure here is a bug).
func (c *call) setBytes(i int, b []byte) error {
	a := c.req.Args[i]
	if a.Kind != KindOut && a.Kind != KindInOut {
		return frameErr("%s: argument %d is not an output buffer", c.req.Func, i)
	}
	if len(b) > a.Cap {
		return fmt.Errorf("host-double: %s: %d bytes for a buffer of %d (server bug)", c.req.Func, len(b), a.Cap)
	}
	c.outs = append(c.outs, Output{Index: uint16(i), Bytes: append([]byte(nil), b...)})
	return nil
}

func (c *call) special(idx uint16, v int64) {
	c.outs = append(c.outs, Output{Index: idx, Int: v, IsInt: true})
}

// isNull says whether argument i is a NULL pointer.
func (c *call) isNull(i int) bool { return c.req.Args[i].Kind == KindNull }

// intArg is the integer argument i and whether it was given (not NULL).
func (c *call) intArg(i int) (int64, bool) {
	a := c.req.Args[i]
	if a.Kind != KindInt {
		return 0, false
	}
	return a.Int, true
}

// buf is the content of an input (or in/out) buffer argument; ok is false
// for a NULL or unreadable one.
func (c *call) buf(i int) ([]byte, bool) {
	a := c.req.Args[i]
	if a.Kind != KindIn && a.Kind != KindInOut {
		return nil, false
	}
	return a.Bytes, true
}

// capOf is the capacity of output argument i (0 for NULL).
func (c *call) capOf(i int) int {
	a := c.req.Args[i]
	if a.Kind == KindOut || a.Kind == KindInOut {
		return a.Cap
	}
	return 0
}
