package command

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
)

// TestHostDoubleServes runs `hsmsim host-double` as the C doubles start
// it: frames on standard input, answers on standard output.
func TestHostDoubleServes(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033", "--ep11", "06.0033")
	req := &hostdouble.Request{ID: 42, Lib: hostdouble.LibCCA, Func: "CSUACFQ", SelCard: -1, SelDomain: -1, Args: []hostdouble.Arg{
		{Kind: hostdouble.KindInt, Int: -1}, {Kind: hostdouble.KindInt, Int: -1}, {Kind: hostdouble.KindNull}, {Kind: hostdouble.KindNull},
		{Kind: hostdouble.KindInt, Int: 1}, {Kind: hostdouble.KindInOut, Cap: 128, Bytes: []byte("STATCRD2")},
		{Kind: hostdouble.KindInt, Int: 0}, {Kind: hostdouble.KindNull},
	}}
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"--dir", dir, "host-double", "--lib", "cca"}, bytes.NewReader(hostdouble.EncodeRequest(req)), &out, &errb)
	if code != 0 {
		t.Fatalf("host-double: exit %d\n%s", code, errb.String())
	}
	body, err := hostdouble.ReadFrame(&out)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hostdouble.DecodeResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	var rc, rs int64 = -1, -1
	var rules []byte
	for _, o := range resp.Outs {
		switch o.Index {
		case 0:
			rc = o.Int
		case 1:
			rs = o.Int
		case 5:
			rules = o.Bytes
		}
	}
	if resp.ID != 42 || rc != 0 || rs != 0 || len(rules) < 120 || string(rules[112:120]) != "93AAC001" {
		t.Fatalf("STATCRD2 through hsmsim: id %d rc %d/%d serial %q", resp.ID, rc, rs, rules)
	}

	// A frame that does not parse ends the server with an error and a
	// non-zero exit; so does an unknown library.
	code = Main(context.Background(), []string{"--dir", dir, "host-double", "--lib", "cca"}, bytes.NewReader([]byte{0, 0, 0, 3, 1, 2, 3}), &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "frame") {
		t.Fatalf("bad frame: exit %d, %s", code, errb.String())
	}
	errb.Reset()
	r := run(t, dir, "host-double", "--lib", "pkcs11")
	if r.code == 0 || !strings.Contains(r.stderr, "--lib cca or --lib ep11") {
		t.Fatalf("--lib pkcs11: exit %d, %s", r.code, r.stderr)
	}
}
