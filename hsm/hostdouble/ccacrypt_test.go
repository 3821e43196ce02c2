package hostdouble_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func TestCCAAESRoundTrips(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)
	tok, r := genAES(t, d, "", 128)
	wantCodes(t, "generate", r, 0, 0)
	plain := bytes.Repeat([]byte("0123456789abcdef"), 2)
	iv := bytes.Repeat([]byte{7}, 16)
	sae := func(rules string, n int, key, kp, ivb []byte, chain int, in, aad []byte, outCap int) result {
		return d.do("call CSNBSAE %s l:%d k:%s l:%d b:%s l:%d io:%s:%d l:16 l:%d b:%s l:%d o:%d l:%d b:%s l:%d o:%d l:%d b:%s",
			rcrs, n, rules, len(key), hx(key), len(kp), hx(kp), len(kp), len(ivb), hx(ivb), chain, chain, len(in), hx(in), outCap, outCap, len(aad), hx(aad))
	}
	sad := func(rules string, n int, key, kp, ivb []byte, chain int, in, aad []byte, outCap int) result {
		return d.do("call CSNBSAD %s l:%d k:%s l:%d b:%s l:%d io:%s:%d l:16 l:%d b:%s l:%d o:%d l:%d b:%s l:%d o:%d l:%d b:%s",
			rcrs, n, rules, len(key), hx(key), len(kp), hx(kp), len(kp), len(ivb), hx(ivb), chain, chain, len(in), hx(in), outCap, outCap, len(aad), hx(aad))
	}
	// CBC as openCryptoki calls it: AES KEYIDENT INITIAL, 32-byte chain.
	r = sae("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, plain, nil, 64)
	wantCodes(t, "CBC encrypt", r, 0, 0)
	ct := r.bytes(18)[:r.long(17)]
	if len(ct) != 32 || bytes.Equal(ct, plain) {
		t.Fatalf("CBC ciphertext %x", ct)
	}
	r = sad("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, ct, nil, 64)
	wantCodes(t, "CBC decrypt", r, 0, 0)
	if got := r.bytes(18)[:r.long(17)]; !bytes.Equal(got, plain) {
		t.Fatalf("CBC round trip: %q", got)
	}
	wantCodes(t, "CBC 17 bytes", sae("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, plain[:17], nil, 64), 8, 25)
	wantCodes(t, "CBC 8-byte IV", sae("AES,KEYIDENT,INITIAL", 3, tok, nil, iv[:8], 32, plain, nil, 64), 8, 72)
	wantCodes(t, "CBC chain 16", sae("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 16, plain, nil, 64), 8, 72)
	r = sae("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, plain, nil, 16)
	wantCodes(t, "CBC short output", r, 8, 72)
	if r.long(17) != 32 {
		t.Fatalf("CBC short output: length back %d, want 32", r.long(17))
	}
	wantCodes(t, "ECB with CBC", sae("AES,ECB,CBC,KEYIDENT", 4, tok, nil, nil, 0, plain, nil, 64), 8, 34)
	r = sae("AES,ECB,KEYIDENT,INITIAL", 4, tok, nil, nil, 0, plain, nil, 64)
	wantCodes(t, "ECB", r, 0, 0)
	// The two plaintext blocks are equal: ECB makes equal blocks.
	if ecb := r.bytes(18)[:32]; !bytes.Equal(ecb[:16], ecb[16:]) || bytes.Equal(ecb[:16], plain[:16]) {
		t.Fatalf("ECB of two equal blocks: %x", ecb)
	}

	// GCM: the tag comes back in key_parms, the AAD is optional_data.
	nonce := bytes.Repeat([]byte{9}, 12)
	aad := []byte("header")
	r = sae("AES,GCM,KEYIDENT,ONLY", 4, tok, make([]byte, 16), nonce, 104, plain[:20], aad, 64)
	wantCodes(t, "GCM encrypt", r, 0, 0)
	gct, tag := r.bytes(18)[:r.long(17)], r.bytes(9)
	if len(gct) != 20 || len(tag) != 16 {
		t.Fatalf("GCM: ciphertext %d bytes, tag %d", len(gct), len(tag))
	}
	r = sad("AES,GCM,KEYIDENT,ONLY", 4, tok, tag, nonce, 104, gct, aad, 64)
	wantCodes(t, "GCM decrypt", r, 0, 0)
	if got := r.bytes(18)[:r.long(17)]; !bytes.Equal(got, plain[:20]) {
		t.Fatalf("GCM round trip: %q", got)
	}
	tag[0] ^= 1
	wantCodes(t, "GCM bad tag", sad("AES,GCM,KEYIDENT,ONLY", 4, tok, tag, nonce, 104, gct, aad, 64), 8, 2947)
	wantCodes(t, "GCM with INITIAL", sae("AES,GCM,KEYIDENT,INITIAL", 4, tok, make([]byte, 16), nonce, 104, plain, aad, 64), 8, 34)
	wantCodes(t, "GCM chain 32", sae("AES,GCM,KEYIDENT,ONLY", 4, tok, make([]byte, 16), nonce, 32, plain, aad, 64), 8, 72)

	// After the officer activates a new AES key the token is under OLD:
	// it still decrypts, with reason 10001.
	ctx := context.Background()
	if _, err := h.LoadNew(ctx, q0133, mkvp.CCAAES, nil, hsm.Part{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Set(ctx, q0133, mkvp.CCAAES); err != nil {
		t.Fatal(err)
	}
	r = sad("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, ct, nil, 64)
	wantCodes(t, "decrypt with an OLD-MK token", r, 0, 10001)
	if got := r.bytes(18)[:32]; !bytes.Equal(got, plain) {
		t.Fatalf("OLD-MK decrypt: %q", got)
	}
	// A second activation pushes the token's key out of OLD: 8/48.
	if _, err := h.LoadNew(ctx, q0133, mkvp.CCAAES, nil, hsm.Part{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Set(ctx, q0133, mkvp.CCAAES); err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "token under neither CURRENT nor OLD", sad("AES,KEYIDENT,INITIAL", 3, tok, nil, iv, 32, ct, nil, 64), 8, 48)
}

func TestCCADESHMACAndPKA(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libcsulcca.so", dir)
	ctx := context.Background()

	// DES3 CBC.
	r := d.do("call CSNBKGN %s b:%s b:%s b:%s b:%s b:%s b:%s o:%d o:%d", rcrs, hx(kw("OP")), hx(kw("TRIPLE-O")), hx(kw("DATA")),
		hx(make([]byte, 8)), hx(make([]byte, 64)), hx(make([]byte, 64)), hostdouble.CCADESTokenLen, hostdouble.CCADESTokenLen)
	wantCodes(t, "CSNBKGN", r, 0, 0)
	des := r.bytes(10)
	plain := []byte("sixteen bytes!!!")
	iv := []byte("8bytesIV")
	r = d.do("call CSNBENC %s b:%s l:16 b:%s b:%s l:1 k:CBC l:0 io::18 o:16", rcrs, hx(des), hx(plain), hx(iv))
	wantCodes(t, "CSNBENC", r, 0, 0)
	dct := r.bytes(12)
	r = d.do("call CSNBDEC %s b:%s l:16 b:%s b:%s l:1 k:CBC io::18 o:16", rcrs, hx(des), hx(dct), hx(iv))
	wantCodes(t, "CSNBDEC", r, 0, 0)
	if got := r.bytes(11); !bytes.Equal(got, plain) || bytes.Equal(dct, plain) {
		t.Fatalf("DES3 round trip: %q via %x", got, dct)
	}
	wantCodes(t, "CSNBENC 12 bytes", d.do("call CSNBENC %s b:%s l:12 b:%s b:%s l:1 k:CBC l:0 io::18 o:16", rcrs, hx(des), hx(plain[:12]), hx(iv)), 8, 25)
	wantCodes(t, "CSNBENC X9.23", d.do("call CSNBENC %s b:%s l:16 b:%s b:%s l:1 k:X9.23 l:0 io::18 o:16", rcrs, hx(des), hx(plain), hx(iv)), 8, 33)

	// HMAC: CSNBKTB2 HMAC MAC GENERATE + CSNBKGN2 HMAC OP.
	r = d.do("call CSNBKTB2 %s l:4 k:INTERNAL,HMAC,MAC,GENERATE l:0 n l:0 n l:0 n l:0 n l:0 n l:8000 o:8000", rcrs)
	wantCodes(t, "CSNBKTB2 HMAC", r, 0, 0)
	skel := r.bytes(17)[:r.long(16)]
	r = d.do("call CSNBKGN2 %s l:2 k:HMAC,OP l:256 b:%s b:%s l:0 n l:0 n l:0 n l:0 n l:0 n l:0 n l:8000 io:%s:8000 l:0 n",
		rcrs, hx(kw("TOKEN")), hx(kw("")), hx(skel))
	wantCodes(t, "CSNBKGN2 HMAC", r, 0, 0)
	hk := r.bytes(22)[:r.long(21)]
	if b, err := hsm.DecodeBlob(hk); err != nil || b.Layout != hsm.LayoutCCAHMAC || b.Pattern != pattern(t, h, q0133, mkvp.CCAAES, "cur") {
		t.Fatalf("HMAC token: %v %v", b.BlobInfo, err)
	}
	msg := []byte("message")
	r = d.do("call CSNBHMG %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 o:32", rcrs, len(hk), hx(hk), len(msg), hx(msg))
	wantCodes(t, "CSNBHMG", r, 0, 0)
	mac := r.bytes(13)
	wantCodes(t, "CSNBHMV", d.do("call CSNBHMV %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 b:%s", rcrs, len(hk), hx(hk), len(msg), hx(msg), hx(mac)), 0, 0)
	mac[31] ^= 1
	wantCodes(t, "CSNBHMV wrong MAC", d.do("call CSNBHMV %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 b:%s", rcrs, len(hk), hx(hk), len(msg), hx(msg), hx(mac)), 4, 1)
	wantCodes(t, "CSNBHMG SHA-1", d.do("call CSNBHMG %s l:3 k:HMAC,SHA-1,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 o:32", rcrs, len(hk), hx(hk), len(msg), hx(msg)), 8, 33)
	wantCodes(t, "CSNBHMG chain 64", d.do("call CSNBHMG %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:64 o:64 l:32 o:32", rcrs, len(hk), hx(hk), len(msg), hx(msg)), 8, 72)
	wantCodes(t, "CSNBHMG with a DES key", d.do("call CSNBHMG %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 o:32", rcrs, len(des), hx(des), len(msg), hx(msg)), 8, 39)

	// ECDSA with the external public token from CSNDPKX.
	ecc := genPKA(t, d, "ECC-PAIR,KEY-MGMT,ECC-VER1", "0000010000000000", "02040100")
	r = d.do("call CSNDPKX %s l:0 n l:%d b:%s l:8000 o:8000", rcrs, len(ecc), hx(ecc))
	wantCodes(t, "CSNDPKX", r, 0, 0)
	eccPub := r.bytes(9)[:r.long(8)]
	digest := sha256.Sum256(msg)
	r = d.do("call CSNDDSG %s l:1 k:ECDSA l:%d b:%s l:32 b:%s l:132 l:0 o:132", rcrs, len(ecc), hx(ecc), hx(digest[:]))
	wantCodes(t, "CSNDDSG ECDSA", r, 0, 0)
	sig := r.bytes(12)[:r.long(10)]
	if len(sig) != 64 || r.long(11) != 512 {
		t.Fatalf("ECDSA signature %d bytes, %d bits", len(sig), r.long(11))
	}
	wantCodes(t, "CSNDDSV ECDSA", d.do("call CSNDDSV %s l:1 k:ECDSA l:%d b:%s l:32 b:%s l:%d b:%s", rcrs, len(eccPub), hx(eccPub), hx(digest[:]), len(sig), hx(sig)), 0, 0)
	sig[5] ^= 1
	wantCodes(t, "CSNDDSV bad ECDSA", d.do("call CSNDDSV %s l:1 k:ECDSA l:%d b:%s l:32 b:%s l:%d b:%s", rcrs, len(eccPub), hx(eccPub), hx(digest[:]), len(sig), hx(sig)), 4, 429)
	wantCodes(t, "CSNDDSG with a public token", d.do("call CSNDDSG %s l:1 k:ECDSA l:%d b:%s l:32 b:%s l:132 l:0 o:132", rcrs, len(eccPub), hx(eccPub), hx(digest[:])), 8, 39)
	wantCodes(t, "CSNDDSG PKCS-1.1 with an EC key", d.do("call CSNDDSG %s l:1 k:PKCS-1.1 l:%d b:%s l:32 b:%s l:512 l:0 o:512", rcrs, len(ecc), hx(ecc), hx(digest[:])), 8, 39)

	// RSA: OAEP with the public token, PSS with the private one.
	rsa := genPKA(t, d, "RSA-AESC,KEY-MGMT", hx(binary.BigEndian.AppendUint16(nil, 2048))+"00000000"+"00000000"+"0000000000000000", "")
	if b, err := hsm.DecodeBlob(rsa); err != nil || b.Layout != hsm.LayoutCCARSACRT || b.Bits != 2048 {
		t.Fatalf("RSA token %v %v", b.BlobInfo, err)
	}
	r = d.do("call CSNDPKX %s l:0 n l:%d b:%s l:8000 o:8000", rcrs, len(rsa), hx(rsa))
	wantCodes(t, "CSNDPKX RSA", r, 0, 0)
	rsaPub := r.bytes(9)[:r.long(8)]
	secret := []byte("a 32-byte session key, say......")
	r = d.do("call CSNDPKE %s l:2 k:PKOAEP2,SHA-256 l:%d b:%s l:0 n l:%d b:%s l:512 o:512", rcrs, len(secret), hx(secret), len(rsaPub), hx(rsaPub))
	wantCodes(t, "CSNDPKE", r, 0, 0)
	enc := r.bytes(13)[:r.long(12)]
	r = d.do("call CSNDPKD %s l:2 k:PKOAEP2,SHA-256 l:%d b:%s l:0 n l:%d b:%s l:512 o:512", rcrs, len(enc), hx(enc), len(rsa), hx(rsa))
	wantCodes(t, "CSNDPKD", r, 0, 0)
	if got := r.bytes(13)[:r.long(12)]; !bytes.Equal(got, secret) {
		t.Fatalf("OAEP round trip: %q", got)
	}
	enc[10] ^= 1
	wantCodes(t, "CSNDPKD tampered", d.do("call CSNDPKD %s l:2 k:PKOAEP2,SHA-256 l:%d b:%s l:0 n l:%d b:%s l:512 o:512", rcrs, len(enc), hx(enc), len(rsa), hx(rsa)), 8, 2053)
	wantCodes(t, "PKCSOAEP SHA-512", d.do("call CSNDPKE %s l:2 k:PKCSOAEP,SHA-512 l:%d b:%s l:0 n l:%d b:%s l:512 o:512", rcrs, len(secret), hx(secret), len(rsaPub), hx(rsaPub)), 8, 34)
	wantCodes(t, "CSNDPKE data structure", d.do("call CSNDPKE %s l:2 k:PKOAEP2,SHA-256 l:%d b:%s l:4 b:00000000 l:%d b:%s l:512 o:512", rcrs, len(secret), hx(secret), len(rsaPub), hx(rsaPub)), 8, 72)
	r = d.do("call CSNDPKE %s l:2 k:PKOAEP2,SHA-256 l:%d b:%s l:0 n l:%d b:%s l:100 o:100", rcrs, len(secret), hx(secret), len(rsaPub), hx(rsaPub))
	wantCodes(t, "CSNDPKE short output", r, 8, 72)
	if r.long(12) != 256 {
		t.Fatalf("CSNDPKE short output: length back %d, want 256", r.long(12))
	}
	pss := append(binary.BigEndian.AppendUint32(nil, 32), digest[:]...)
	r = d.do("call CSNDDSG %s l:2 k:PKCS-PSS,SHA-256 l:%d b:%s l:%d b:%s l:512 l:0 o:512", rcrs, len(rsa), hx(rsa), len(pss), hx(pss))
	wantCodes(t, "CSNDDSG PSS", r, 0, 0)
	psig := r.bytes(12)[:r.long(10)]
	wantCodes(t, "CSNDDSV PSS", d.do("call CSNDDSV %s l:2 k:PKCS-PSS,SHA-256 l:%d b:%s l:%d b:%s l:%d b:%s", rcrs, len(rsaPub), hx(rsaPub), len(pss), hx(pss), len(psig), hx(psig)), 0, 0)
	wantCodes(t, "PSS without hash keyword", d.do("call CSNDDSG %s l:1 k:PKCS-PSS l:%d b:%s l:%d b:%s l:512 l:0 o:512", rcrs, len(rsa), hx(rsa), len(pss), hx(pss)), 8, 34)
	wantCodes(t, "PSS hash of the wrong length", d.do("call CSNDDSG %s l:2 k:PKCS-PSS,SHA-384 l:%d b:%s l:%d b:%s l:512 l:0 o:512", rcrs, len(rsa), hx(rsa), len(pss), hx(pss)), 8, 72)

	// A key of another domain group (CRP03 = 03.0035) on the default APQN.
	other, err := h.GenerateKey(ctx, apqn.MustParse("03.0035"), hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 256})
	if err != nil {
		t.Fatal(err)
	}
	wantCodes(t, "HMAC key of another group", d.do("call CSNBHMG %s l:3 k:HMAC,SHA-256,ONLY l:%d b:%s l:%d b:%s l:128 o:128 l:32 o:32", rcrs, len(other), hx(other), len(msg), hx(msg)), 8, 48)
}
