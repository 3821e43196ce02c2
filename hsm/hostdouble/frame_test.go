package hostdouble

import (
	"bytes"
	"context"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

func sampleRequest() *Request {
	return &Request{ID: 7, Lib: LibCCA, Func: "CSNBKTC2", SelCard: -1, SelDomain: 0x33, Args: []Arg{
		{Kind: KindInt, Int: -1}, {Kind: KindInt, Int: 0}, {Kind: KindNull}, {Kind: KindIn, Bytes: []byte{}},
		{Kind: KindInt, Int: 2}, {Kind: KindIn, Bytes: []byte("RTNMK   AES     ")},
		{Kind: KindInt, Int: 46}, {Kind: KindInOut, Cap: 46, Bytes: make([]byte, 46)},
		{Kind: KindOut, Cap: 9}, {Kind: KindUnreadable, Int: -5},
	}}
}

func TestFrameRoundTrip(t *testing.T) {
	req := sampleRequest()
	raw := EncodeRequest(req)
	body, err := ReadFrame(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeRequest(got), raw) || got.Func != "CSNBKTC2" || got.SelDomain != 0x33 || got.Args[9].Int != -5 {
		t.Fatalf("round trip changed the request: %+v", got)
	}
	// The header is big-endian whatever the host: the id 7 is 00 00 00 07.
	if !bytes.Equal(raw[4:8], []byte{0, 0, 0, 7}) {
		t.Fatalf("request id bytes % x, want big-endian 00 00 00 07", raw[4:8])
	}
	// Every truncation is refused, never a panic or a partial request.
	for n := 0; n < len(body); n++ {
		if _, err := DecodeRequest(body[:n]); err == nil {
			t.Fatalf("a request truncated to %d of %d bytes was accepted", n, len(body))
		}
	}
	// Trailing bytes and in/out buffers larger than their capacity too.
	if _, err := DecodeRequest(append(append([]byte{}, body...), 0)); err == nil {
		t.Fatal("a trailing byte was accepted")
	}
	bad := sampleRequest()
	bad.Args[7].Cap = 10
	if _, err := DecodeRequest(EncodeRequest(bad)[4:]); err == nil {
		t.Fatal("46 bytes in a buffer of 10 were accepted")
	}
}

// FuzzDecodeRequest: the server parses frames from a C library; no input
// may panic it, and what parses re-encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(EncodeRequest(sampleRequest())[4:])
	f.Add(EncodeRequest(&Request{ID: 1, Lib: LibEP11, LittleEndian: true, Func: "m_init"})[4:])
	f.Add(EncodeRequest(&Request{ID: 2, Lib: LibEP11, Func: "m_EncryptSingle", Args: []Arg{
		{Kind: KindIn, Bytes: []byte{1, 0, 0}}, {Kind: KindInt, Int: 3}, {Kind: KindIn, Bytes: []byte{0, 0, 0, 0, 0, 0, 0x10, 0x87, 1, 0, 0, 0, 1}},
		{Kind: KindIn, Bytes: []byte("x")}, {Kind: KindInt, Int: 1}, {Kind: KindOut, Cap: 16}, {Kind: KindInt, Int: 16}, {Kind: KindIn, Bytes: []byte{6, 0, 0x33}},
	}})[4:])
	f.Add([]byte{})
	// Requests that parse are handled by a server over a real simulator:
	// no argument shape may panic the checks behind the frame parser.
	dir := f.TempDir()
	if err := sim.Init(dir, sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033")}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033")}},
	}}); err != nil {
		f.Fatal(err)
	}
	h, err := sim.Open(dir, sim.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer h.Close()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(body)
		if err != nil {
			return
		}
		if got := EncodeRequest(req)[4:]; !bytes.Equal(got, body) {
			t.Fatalf("re-encoding differs:\n% x\n% x", got, body)
		}
		s := &Server{lib: req.Lib, h: h, log: zerolog.Nop(), env: func(string) string { return "" }}
		_, _ = s.Handle(context.Background(), req)
	})
}
