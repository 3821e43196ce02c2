package hostdouble_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Common CCA parameters: return code, reason code, exit data NULL/NULL.
const rcrs = "l:-1 l:-1 n n"

var q0133 = apqn.MustParse("01.0033")

func wantCodes(t *testing.T, what string, r result, rc, reason int64) {
	t.Helper()
	if got := r.codes(); got != [2]int64{rc, reason} {
		t.Fatalf("%s: return/reason %d/%d, want %d/%d", what, got[0], got[1], rc, reason)
	}
}

func pattern(t *testing.T, h *sim.HSM, q apqn.ID, typ mkvp.Type, reg string) mkvp.Pattern {
	t.Helper()
	info, err := h.Queue(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	r := info.MK[typ]
	switch reg {
	case "new":
		return r.New.Pattern
	case "old":
		return r.Old.Pattern
	}
	return r.Current.Pattern
}

func kw(words ...string) []byte {
	var b []byte
	for _, w := range words {
		b = append(b, []byte(fmt.Sprintf("%-8s", w))...)
	}
	return b
}

func TestCCAVersionAndQueries(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)

	r := d.do("call CSUACFV %s l:20 o:20", rcrs)
	wantCodes(t, "CSUACFV", r, 0, 0)
	if got := r.bytes(5)[:6]; string(got) != "8.4.0\x00" || r.long(4) != 6 {
		t.Fatalf("CSUACFV: %q (length %d), want \"8.4.0\\0\" (6)", got, r.long(4))
	}
	// A version buffer too small: 8/72 and the needed length back.
	r = d.do("call CSUACFV %s l:4 o:4", rcrs)
	wantCodes(t, "CSUACFV short", r, 8, 72)
	if r.long(4) != 6 {
		t.Fatalf("CSUACFV short: length back %d, want 6", r.long(4))
	}

	r = d.do("call CSUACFQ %s l:1 k:STATCRD2 l:0 n", rcrs)
	wantCodes(t, "STATCRD2", r, 0, 0)
	ra := r.bytes(5)
	if string(ra[:8]) != "3       " || string(ra[112:120]) != "93AAC001" {
		t.Fatalf("STATCRD2: count %q serial %q, want 3 coprocessors and serial 93AAC001", ra[:8], ra[112:120])
	}

	// Load part of a new AES key on 01.0033: NMK partial ('2').
	if _, err := h.LoadNew(context.Background(), q0133, mkvp.CCAAES, nil, hsm.Part{Index: 1, Total: 2}); err != nil {
		t.Fatal(err)
	}
	r = d.do("call CSUACFQ %s l:1 k:STATAES l:0 n", rcrs)
	wantCodes(t, "STATAES", r, 0, 0)
	if ra := r.bytes(5); string(ra[:24]) != "2       2       1       " || r.long(4) != 3 {
		t.Fatalf("STATAES: %q count %d, want NMK 2 (partial), CMK 2 (valid), OMK 1", ra[:24], r.long(4))
	}

	r = d.do("call CSUACFQ %s l:1 k:STATICSB l:256 o:256", rcrs)
	wantCodes(t, "STATICSB", r, 0, 0)
	vd := r.bytes(7)
	for _, c := range []struct {
		at  int
		id  uint16
		typ mkvp.Type
	}{{134, 0x0F07, mkvp.CCASYM}, {182, 0x0F0B, mkvp.CCAAES}, {218, 0x0F0E, mkvp.CCAAPKA}} {
		if binary.BigEndian.Uint16(vd[c.at:]) != c.id || !bytes.Equal(vd[c.at+2:c.at+10], pattern(t, h, q0133, c.typ, "cur").Bytes()) {
			t.Fatalf("STATICSB @%d: % x, want ID %04x and the CURRENT %s pattern %s", c.at, vd[c.at:c.at+10], c.id, c.typ, pattern(t, h, q0133, c.typ, "cur"))
		}
	}
	r = d.do("call CSUACFQ %s l:1 k:STATICSB l:100 o:100", rcrs)
	wantCodes(t, "STATICSB short", r, 8, 72)
	if r.long(6) != 240 {
		t.Fatalf("STATICSB short: length back %d, want 240", r.long(6))
	}

	r = d.do("call CSUACFQ %s l:1 k:DOM-USAG l:512 o:512", rcrs)
	wantCodes(t, "DOM-USAG", r, 0, 0)
	if got := r.bytes(7)[:r.long(6)]; !bytes.Equal(got, []byte{0, 0x33, 0, 0x34}) {
		t.Fatalf("DOM-USAG: % x, want domains 0x33 0x34 as BE16", got)
	}
}

func TestCCARuleArrayRefusals(t *testing.T) {
	_, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)
	cases := []struct {
		name, line string
		rc, reason int64
	}{
		{"unknown keyword", "call CSUACFQ " + rcrs + " l:1 k:STATNONE l:0 n", 8, 33},
		{"lower case keyword", "call CSUACFQ " + rcrs + " l:1 k:statccae l:0 n", 8, 33},
		{"NUL-padded keyword", "call CSUACFQ " + rcrs + " l:1 b:5354415441455300 l:0 n", 8, 33},
		{"too many keywords", "call CSUACFQ " + rcrs + " l:2 k:STATAES,STATCCA l:0 n", 8, 35},
		{"count 0", "call CSUACFQ " + rcrs + " l:0 k:STATAES l:0 n", 8, 35},
		{"negative count", "call CSUACFQ " + rcrs + " l:-1 k:STATAES l:0 n", 8, 35},
		{"conflicting algorithms", "call CSNBKTB2 " + rcrs + " l:5 k:INTERNAL,AES,HMAC,CIPHER,NO-KEY l:0 n l:0 n l:0 n l:0 n l:0 n l:455 o:455", 8, 34},
		{"AES key with MAC type", "call CSNBKTB2 " + rcrs + " l:4 k:INTERNAL,AES,MAC,NO-KEY l:0 n l:0 n l:0 n l:0 n l:0 n l:455 o:455", 8, 34},
		{"missing INTERNAL", "call CSNBKTB2 " + rcrs + " l:3 k:AES,CIPHER,NO-KEY l:0 n l:0 n l:0 n l:0 n l:0 n l:455 o:455", 8, 34},
		{"KTC2 count 1", "call CSNBKTC2 " + rcrs + " l:1 k:RTNMK l:46 b:00", 8, 35},
		{"KTC both directions", "call CSNBKTC2 " + rcrs + " l:2 k:RTNMK,RTCMK l:46 b:00", 8, 34},
		{"skeleton buffer too small", "call CSNBKTB2 " + rcrs + " l:5 k:INTERNAL,AES,CIPHER,NO-KEY,ANY-MODE l:0 n l:0 n l:0 n l:0 n l:0 n l:40 o:40", 8, 72},
		{"key name given", "call CSNBKTB2 " + rcrs + " l:5 k:INTERNAL,AES,CIPHER,NO-KEY,ANY-MODE l:0 n l:4 b:41424344 l:0 n l:0 n l:0 n l:455 o:455", 8, 72},
		{"unimplemented verb", "call CSNBRNG " + rcrs, 12, 338},
	}
	for _, c := range cases {
		r := d.do("%s", c.line)
		wantCodes(t, c.name, r, c.rc, c.reason)
	}
}

// genAES runs CSNBKTB2 + CSNBKGN2 as openCryptoki does (§1.6) and returns
// the token.
func genAES(t *testing.T, d *driver, prefix string, bits int) ([]byte, result) {
	t.Helper()
	r := d.do("%scall CSNBKTB2 %s l:5 k:INTERNAL,AES,CIPHER,NO-KEY,ANY-MODE l:0 n l:0 n l:0 n l:0 n l:0 n l:455 o:455", prefix, rcrs)
	wantCodes(t, "CSNBKTB2", r, 0, 0)
	skel := r.bytes(17)[:r.long(16)]
	r = d.do("%scall CSNBKGN2 %s l:2 k:AES,OP l:%d b:%s b:%s l:0 n l:0 n l:0 n l:0 n l:0 n l:0 n l:455 io:%s:455 l:0 n",
		prefix, rcrs, bits, hx(kw("TOKEN")), hx(kw("")), hx(skel))
	if r.codes()[0] != 0 {
		return nil, r
	}
	return r.bytes(22)[:r.long(21)], r
}

func TestCCASelectionPerThreadAndProcess(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)
	serial := func(prefix string) string {
		r := d.do("%scall CSUACFQ %s l:1 k:STATCRD2 l:0 n", prefix, rcrs)
		wantCodes(t, "STATCRD2", r, 0, 0)
		return string(r.bytes(5)[112:120])
	}
	if s := serial(""); s != "93AAC001" {
		t.Fatalf("default coprocessor %s, want CRP01 = card 01", s)
	}
	r := d.do("call CSUACRA %s l:1 k:DEVICE l:5 b:%s", rcrs, hx([]byte("CRP03")))
	wantCodes(t, "CSUACRA CRP03", r, 0, 0)
	if s := serial(""); s != "93AAC003" {
		t.Fatalf("after CSUACRA CRP03 this thread uses %s", s)
	}
	// Coprocessor allocation is per thread: another thread still has the
	// default.
	if s := serial("thread "); s != "93AAC001" {
		t.Fatalf("another thread uses %s, want the default 93AAC001", s)
	}
	wantCodes(t, "CSUACRA twice", d.do("call CSUACRA %s l:1 k:DEVICE l:5 b:%s", rcrs, hx([]byte("CRP02"))), 8, 34)
	// CRP03 (03.0035) is in another domain group: a key made there is
	// not usable on CRP01 (8/48), with the domain allocated too.
	wantCodes(t, "CSUACRA DOMN0053", d.do("call CSUACRA %s l:1 k:DOMN0053 l:0 n", rcrs), 0, 0)
	tok, r := genAES(t, d, "", 256)
	wantCodes(t, "generate on 03.0035", r, 0, 0)
	info, err := hsm.Inspect(tok)
	if err != nil || info.Pattern != pattern(t, h, apqn.MustParse("03.0035"), mkvp.CCAAES, "cur") {
		t.Fatalf("token from CRP03: %+v %v, want the AES CURRENT pattern of 03.0035", info, err)
	}
	wantCodes(t, "CSUACRD CRP01 not allocated", d.do("call CSUACRD %s l:1 k:DEVICE l:5 b:%s", rcrs, hx([]byte("CRP01"))), 8, 34)
	wantCodes(t, "CSUACRD CRP03", d.do("call CSUACRD %s l:2 k:DEVICE,DOMN-DEF l:5 b:%s", rcrs, hx([]byte("CRP03"))), 0, 0)
	if s := serial(""); s != "93AAC001" {
		t.Fatalf("after CSUACRD the thread uses %s, want the default", s)
	}
	r = d.do("call CSNBKTC2 %s l:2 k:RTNMK,AES l:%d io:%s:%d", rcrs, len(tok), hx(tok), len(tok))
	wantCodes(t, "03.0035 key on 01.0033", r, 8, 48)

	wantCodes(t, "CRP09", d.do("call CSUACRA %s l:1 k:DEVICE l:5 b:%s", rcrs, hx([]byte("CRP09"))), 12, 338)
	wantCodes(t, "CRP0 length 4", d.do("call CSUACRA %s l:1 k:DEVICE l:4 b:%s", rcrs, hx([]byte("CRP0"))), 8, 72)
	wantCodes(t, "CRPxx", d.do("call CSUACRA %s l:1 k:DEVICE l:5 b:%s", rcrs, hx([]byte("CRPxx"))), 8, 33)
	wantCodes(t, "no such domain", d.do("call CSUACRA %s l:1 k:DOMN0099 l:0 n", rcrs), 12, 338)
	wantCodes(t, "SERIAL", d.do("call CSUACRA %s l:1 k:SERIAL l:8 b:%s", rcrs, hx([]byte("93AAC002"))), 0, 0)
	if s := serial(""); s != "93AAC002" {
		t.Fatalf("after CSUACRA SERIAL 93AAC002 the thread uses %s", s)
	}
	// A fork child does not inherit its parent's server connections; it
	// starts its own and still answers.
	if r := d.do("fork call CSUACFV %s l:20 o:20", rcrs); r.codes() != [2]int64{0, 0} || string(r.bytes(5)[:5]) != "8.4.0" {
		t.Fatalf("CSUACFV in a fork child: %v", r.args)
	}
	if s := serial(""); s != "93AAC002" {
		t.Fatalf("parent after the fork uses %s", s)
	}
	// Six new threads at once: none inherits this thread's CRP02.
	for i, r := range d.par(6, "call CSUACFQ %s l:1 k:STATCRD2 l:0 n", rcrs) {
		if r.codes() != [2]int64{0, 0} || string(r.bytes(5)[112:120]) != "93AAC001" {
			t.Fatalf("thread %d: %v serial %q, want the default 93AAC001", i, r.codes(), r.bytes(5)[112:120])
		}
	}
}

func TestCCAGenerateAndReencipher(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)
	ctx := context.Background()
	aesCur := pattern(t, h, q0133, mkvp.CCAAES, "cur")

	tok, r := genAES(t, d, "", 256)
	wantCodes(t, "AES generate", r, 0, 0)
	b, err := hsm.DecodeBlob(tok)
	if err != nil || b.Layout != hsm.LayoutCCAAESCipher || b.Bits != 256 || b.Pattern != aesCur {
		t.Fatalf("generated AES token: %v %v, want an AES CIPHER 256-bit token under %s", b.BlobInfo, err, aesCur)
	}
	_, r = genAES(t, d, "", 100)
	wantCodes(t, "AES 100 bits", r, 8, 72)

	ktc2 := func(rules string, tok []byte) result {
		return d.do("call CSNBKTC2 %s l:2 k:%s l:%d io:%s:%d", rcrs, rules, len(tok), hx(tok), len(tok))
	}
	// RTNMK before a NEW key is loaded: 12/764.
	wantCodes(t, "RTNMK, NEW empty", ktc2("RTNMK,AES", tok), 12, 764)
	newPat, err := h.LoadNew(ctx, q0133, mkvp.CCAAES, nil, hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "HMAC keyword on an AES token", ktc2("RTNMK,HMAC", tok), 8, 34)
	wantCodes(t, "RTCMK of a CURRENT token", ktc2("RTCMK,AES", tok), 8, 48)
	bad := append([]byte(nil), tok...)
	bad[len(bad)-1] ^= 1
	wantCodes(t, "tampered token", ktc2("RTNMK,AES", bad), 8, 29)
	wantCodes(t, "truncated token", ktc2("RTNMK,AES", tok[:40]), 8, 29)
	r = ktc2("RTNMK,AES", tok)
	wantCodes(t, "RTNMK", r, 0, 0)
	re := r.bytes(7)[:r.long(6)]
	if len(re) != len(tok) || !bytes.Equal(re[10:18], newPat.Bytes()) || bytes.Equal(re[10:18], aesCur.Bytes()) {
		t.Fatalf("RTNMK token MKVP % x (length %d), want the NEW pattern %s at offset 10 (length %d)", re[10:18], len(re), newPat, len(tok))
	}
	// Activate NEW: the re-enciphered token is CURRENT, the original one
	// OLD; RTCMK moves the old one to the (same) new key and the old token
	// still works with reason 10001.
	if err := h.Set(ctx, q0133, mkvp.CCAAES); err != nil {
		t.Fatal(err)
	}
	r = ktc2("RTCMK,AES", tok)
	wantCodes(t, "RTCMK", r, 0, 0)
	if got := r.bytes(7)[10:18]; !bytes.Equal(got, newPat.Bytes()) {
		t.Fatalf("RTCMK token MKVP % x, want the now CURRENT %s", got, newPat)
	}

	// DES DATA via CSNBKGN, re-enciphered by CSNBKTC.
	r = d.do("call CSNBKGN %s b:%s b:%s b:%s b:%s b:%s b:%s o:%d o:%d", rcrs, hx(kw("OP")), hx(kw("TRIPLE-O")), hx(kw("DATA")),
		hx(make([]byte, 8)), hx(make([]byte, 64)), hx(make([]byte, 64)), hostdouble.CCADESTokenLen, hostdouble.CCADESTokenLen)
	wantCodes(t, "CSNBKGN", r, 0, 0)
	des := r.bytes(10)
	if b, err := hsm.DecodeBlob(des); err != nil || b.Layout != hsm.LayoutCCADESData || b.Pattern != pattern(t, h, q0133, mkvp.CCASYM, "cur") {
		t.Fatalf("CSNBKGN token: %v %v", b.BlobInfo, err)
	}
	r = d.do("call CSNBKGN %s b:%s b:%s b:%s b:%s b:%s b:%s o:%d o:%d", rcrs, hx(kw("OP")), hx(kw("DOUBLE-O")), hx(kw("DATA")),
		hx(make([]byte, 8)), hx(make([]byte, 64)), hx(make([]byte, 64)), hostdouble.CCADESTokenLen, hostdouble.CCADESTokenLen)
	wantCodes(t, "CSNBKGN DOUBLE-O", r, 8, 33)
	symNew, err := h.LoadNew(ctx, q0133, mkvp.CCASYM, nil, hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "CSNBKTC AES keyword on a DES token", d.do("call CSNBKTC %s l:2 k:RTNMK,AES io:%s:%d", rcrs, hx(des), len(des)), 8, 34)
	r = d.do("call CSNBKTC %s l:1 k:RTNMK io:%s:%d", rcrs, hx(des), len(des))
	wantCodes(t, "CSNBKTC RTNMK (DES default)", r, 0, 0)
	if got := r.bytes(6)[8:16]; !bytes.Equal(got, symNew.Bytes()) {
		t.Fatalf("CSNBKTC token MKVP % x, want the NEW SYM pattern %s", got, symNew)
	}

	// EC and RSA key pairs: CSNDPKB → CSNDPKG → CSNDPKX; CSNDKTC.
	ecc := genPKA(t, d, "ECC-PAIR,KEY-MGMT,ECC-VER1", "00000100"+"00000000", "02040100")
	eb, err := hsm.DecodeBlob(ecc)
	if err != nil || eb.Layout != hsm.LayoutCCAECC || eb.Bits != 256 || eb.Pattern != pattern(t, h, q0133, mkvp.CCAAPKA, "cur") {
		t.Fatalf("ECC token %v %v", eb.BlobInfo, err)
	}
	r = d.do("call CSNDPKX %s l:0 n l:%d b:%s l:8000 o:8000", rcrs, len(ecc), hx(ecc))
	wantCodes(t, "CSNDPKX", r, 0, 0)
	pubTok := r.bytes(9)[:r.long(8)]
	spki, ok := hostdouble.ParsePublicToken(pubTok)
	want, err := h.PublicKey(ctx, q0133, ecc)
	if !ok || err != nil || !bytes.Equal(spki, want) || pubTok[0] != 0x1e || pubTok[8] != 0x21 {
		t.Fatalf("CSNDPKX: external token % x does not carry the key's public key", pubTok[:16])
	}
	wantCodes(t, "CSNDPKX with a rule", d.do("call CSNDPKX %s l:1 k:RSA l:%d b:%s l:8000 o:8000", rcrs, len(ecc), hx(ecc)), 8, 35)
	wantCodes(t, "P-521", d.do("call CSNDPKB %s l:3 k:ECC-PAIR,KEY-MGMT,ECC-VER1 l:8 b:0000020900000000 l:0 n l:0 n l:4 b:02040100 l:0 n l:0 n l:0 n l:8000 o:8000", rcrs), 8, 874)
	wantCodes(t, "RSA 1024", d.do("call CSNDPKB %s l:2 k:RSA-AESC,KEY-MGMT l:18 b:%s l:0 n n n n n n n n n n n l:8000 o:8000", rcrs, hx(rsaKVS(1024))), 8, 760)
	apkaNew, err := h.LoadNew(ctx, q0133, mkvp.CCAAPKA, nil, hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "CSNDKTC RSA keyword on an ECC token", d.do("call CSNDKTC %s l:2 k:RTNMK,RSA l:%d io:%s:%d", rcrs, len(ecc), hx(ecc), len(ecc)), 8, 34)
	r = d.do("call CSNDKTC %s l:2 k:RTNMK,ECC l:%d io:%s:%d", rcrs, len(ecc), hx(ecc), len(ecc))
	wantCodes(t, "CSNDKTC RTNMK ECC", r, 0, 0)
	if got := r.bytes(7)[24:32]; !bytes.Equal(got, apkaNew.Bytes()) {
		t.Fatalf("CSNDKTC ECC token MKVP % x, want the NEW APKA pattern %s", got, apkaNew)
	}
}

func rsaKVS(bits int) []byte {
	kvs := make([]byte, 18)
	binary.BigEndian.PutUint16(kvs, uint16(bits))
	return kvs
}

// genPKA runs CSNDPKB and CSNDPKG (§1.7) and returns the private token.
func genPKA(t *testing.T, d *driver, rules, kvsHex, deriv string) []byte {
	t.Helper()
	n := len(splitComma(rules))
	// EC: customer data 0/NULL, derivation data in reserved_2; RSA: the
	// five trailing pairs are NULL pointers, as OCK passes them.
	tail := "l:0 n l:4 b:" + deriv + " l:0 n l:0 n l:0 n"
	if deriv == "" {
		tail = "n n n n n n n n n n"
	}
	r := d.do("call CSNDPKB %s l:%d k:%s l:%d b:%s l:0 n %s l:8000 o:8000", rcrs, n, rules, len(kvsHex)/2, kvsHex, tail)
	wantCodes(t, "CSNDPKB", r, 0, 0)
	skel := r.bytes(21)[:r.long(20)]
	r = d.do("call CSNDPKG %s l:1 k:MASTER l:0 n l:%d b:%s b:%s l:8000 o:8000", rcrs, len(skel), hx(skel), hx(make([]byte, 64)))
	wantCodes(t, "CSNDPKG", r, 0, 0)
	return r.bytes(12)[:r.long(11)]
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

// TestTransportFailures: without a server the doubles fail the call with
// the codes of an adapter that does not answer (CCA 12/338, EP11
// CKR_IBM_TRANSPORT_ERROR), never hang or crash; a server that exits is
// the same.
func TestTransportFailures(t *testing.T) {
	_, dir := newSim(t)
	for _, bin := range []string{"/nonexistent/hsmsim", "/bin/true"} {
		d := startDriver(t, "libcsulcca.so", dir, "PKCSHSM_HOSTDOUBLE_HSMSIM="+bin)
		wantCodes(t, bin, d.do("call CSUACFV %s l:20 o:20", rcrs), 12, 338)
		e := startDriver(t, "libep11.so", dir, "PKCSHSM_HOSTDOUBLE_HSMSIM="+bin)
		if r := e.do("call m_get_xcp_info o:4 l:4 v:0xff000001 v:0 v:0"); r.ret != 0x80010003 {
			t.Fatalf("%s: EP11 CK_RV 0x%x, want CKR_IBM_TRANSPORT_ERROR", bin, r.ret)
		}
	}
}
