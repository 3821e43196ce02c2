package hostdouble_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// CK_RVs the tests expect (PKCS#11; IBM ep11.h, host-libraries.md §2.9).
const (
	rvOK                   = 0
	rvArgumentsBad         = 0x7
	rvEncryptedInvalid     = 0x40
	rvKeySizeRange         = 0x62
	rvMechInvalid          = 0x70
	rvMechParamInvalid     = 0x71
	rvPinLenRange          = 0xA2
	rvSessionClosed        = 0xB0
	rvSignatureInvalid     = 0xC0
	rvTemplateIncomplete   = 0xD0
	rvCurveNotSupported    = 0x140
	rvBufferTooSmall       = 0x150
	rvAttributeTypeInvalid = 0x12
	rvWKIDMismatch         = 0x80010001
	rvBlobError            = 0x80010004
	rvWKNotInitialized     = 0x80010009
	rvTargetInvalid        = 0x80010030
)

var ne = binary.NativeEndian

// xcpModule lays out a struct XCP_Module in this machine's ABI (§2.3).
func xcpModule(version uint32, flags uint64, card uint8, doms ...uint16) []byte {
	m := make([]byte, 1360)
	ne.PutUint32(m[0:], version)
	ne.PutUint64(m[8:], flags)
	for _, d := range doms {
		m[20+d/8] |= 0x80 >> (d % 8)
	}
	ne.PutUint32(m[316:], uint32(card))
	return m
}

func ulongHex(vals ...uint64) string {
	var b []byte
	for _, v := range vals {
		b = ne.AppendUint64(b, v)
	}
	return hx(b)
}

func wantRV(t *testing.T, what string, r result, rv uint64) {
	t.Helper()
	if r.ret != rv {
		t.Fatalf("%s: CK_RV 0x%x, want 0x%x", what, r.ret, rv)
	}
}

// addModule makes a target of one card's domains; flags 2 is
// XCP_MFL_MODULE, 0x12 with XCP_MFL_VIRTUAL.
func addModule(t *testing.T, d *driver, target int64, flags uint64, card uint8, doms ...uint16) (uint64, result) {
	t.Helper()
	r := d.do("call m_add_module io:%s:1360 l:%d", hx(xcpModule(2, flags, card, doms...)), target)
	// m_add_module returns int: only the low 32 bits of the register are
	// the value (s390x sign-extends, amd64 need not).
	r.ret = uint64(uint32(r.ret))
	return uint64(r.long(1)), r
}

func TestEP11Double(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libep11.so", dir)
	ctx := context.Background()
	q6 := apqn.MustParse("06.0033")

	if r := d.do("call m_init"); uint32(r.ret) != 0 {
		t.Fatalf("m_init: %d", int32(r.ret))
	}
	r := d.do("call m_get_xcp_info o:4 l:4 v:0xff000001 v:0 v:0")
	wantRV(t, "XCPHQ_VERSION", r, rvOK)
	if v := ne.Uint32(r.bytes(0)); v != 0x00040000 {
		t.Fatalf("host library version 0x%x, want 0x00040000 (4.0.0)", v)
	}

	t6, r := addModule(t, d, -1, 2, 6, 0x33)
	wantRV(t, "m_add_module 06.0033", r, rvOK)
	_, r = addModule(t, d, -1, 2, 9, 0x33)
	wantRV(t, "m_add_module of a card the simulator lacks", r, rvTargetInvalid)
	_, r = addModule(t, d, -1, 1, 6, 0x33)
	wantRV(t, "m_add_module XCP_MFL_SOCKET", r, rvArgumentsBad)
	_, r = addModule(t, d, -1, 2, 6)
	wantRV(t, "m_add_module without domains", r, rvArgumentsBad)
	group, r := addModule(t, d, -1, 0x12, 6, 0x33)
	wantRV(t, "group target", r, rvOK)
	if _, r = addModule(t, d, int64(group), 0x12, 7, 0x33); r.ret != rvOK {
		t.Fatalf("adding 07.0033 to the group: 0x%x", r.ret)
	}
	_, r = addModule(t, d, int64(t6), 2, 7, 0x33)
	wantRV(t, "adding to a target without XCP_MFL_VIRTUAL", r, rvArgumentsBad)

	// Wrapping-key state (§2.5): the 32-byte WK patterns as sysfs shows
	// them, flags CURR_WK.
	domInfo := func(target uint64) result { return d.do("call m_get_xcp_info o:88 l:88 v:3 v:0 v:%d", target) }
	r = domInfo(t6)
	wantRV(t, "XCPQ_DOMAIN", r, rvOK)
	di := r.bytes(0)
	wk := pattern(t, h, q6, mkvp.EP11WK, "cur")
	if ne.Uint64(di) != 0x33 || !bytes.Equal(di[8:24], wk.Bytes()) || ne.Uint64(di[72:]) != 2 || !allZero(di[40:72]) {
		t.Fatalf("domain info: domain %d wk % x flags %d, want 0x33, the CURRENT WK %s, flags 2", ne.Uint64(di), di[8:24], ne.Uint64(di[72:]), wk)
	}
	r = d.do("call m_get_xcp_info n l:0 v:3 v:0 v:%d", t6)
	if r.ret != rvOK || r.long(1) != 88 {
		t.Fatalf("XCPQ_DOMAIN length query: 0x%x, %d", r.ret, r.long(1))
	}
	r = d.do("call m_get_xcp_info o:40 l:40 v:3 v:0 v:%d", t6)
	if r.ret != rvBufferTooSmall || r.long(1) != 88 {
		t.Fatalf("XCPQ_DOMAIN into 40 bytes: 0x%x, length %d, want CKR_BUFFER_TOO_SMALL and 88", r.ret, r.long(1))
	}
	wantRV(t, "XCPQ_DOMAIN on a group", domInfo(group), rvArgumentsBad)
	wantRV(t, "query 99", d.do("call m_get_xcp_info o:88 l:88 v:99 v:0 v:%d", t6), rvArgumentsBad)
	wantRV(t, "XCPHQ_VERSION subquery 1", d.do("call m_get_xcp_info o:4 l:4 v:0xff000001 v:1 v:0"), rvArgumentsBad)
	r = d.do("call m_get_xcp_info o:16 l:16 v:1 v:2 v:%d", t6)
	if r.ret != rvOK || r.long(1) != 16 {
		t.Fatalf("XCPQ_MODULE FNLIST: 0x%x, %d bytes", r.ret, r.long(1))
	}
	wantRV(t, "XCPQ_DOMAIN on target 0", domInfo(0), rvArgumentsBad)
	wantRV(t, "XCPQ_DOMAIN on a made-up target", domInfo(0x1234), rvArgumentsBad)

	// Secret keys.
	aesTempl := "t:0x161=u32"
	genKey := func(mech, templ, pin string, target uint64) result {
		return d.do("call m_GenerateKey m:%s %s v:%d %s o:16384 l:16384 o:64 l:64 v:%d", mech, templ, countAttrs(templ), pin, target)
	}
	r = genKey("0x1080", aesTempl, "n v:0", t6)
	wantRV(t, "m_GenerateKey AES", r, rvOK)
	aes := r.bytes(5)[:r.long(6)]
	csum := r.bytes(7)[:r.long(8)]
	if b, err := hsm.DecodeBlob(aes); err != nil || b.Layout != hsm.LayoutEP11 || b.Bits != 256 || b.Pattern != wk || b.Bound() {
		t.Fatalf("AES blob: %v %v", b.BlobInfo, err)
	}
	if len(csum) != 7 || binary.BigEndian.Uint32(csum[3:]) != 256 {
		t.Fatalf("checksum % x, want a 3-byte check value and BE32 256", csum)
	}
	r = d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(aes), len(aes), hx(make([]byte, 16)), t6)
	wantRV(t, "ECB of a zero block", r, rvOK)
	if !bytes.Equal(r.bytes(5)[:3], csum[:3]) {
		t.Fatalf("check value % x is not the key's encryption of a zero block % x", csum[:3], r.bytes(5)[:3])
	}
	wantRV(t, "AES without CKA_VALUE_LEN", genKey("0x1080", "t:0x0=u4", "n v:0", t6), rvTemplateIncomplete)
	wantRV(t, "AES of 20 bytes", genKey("0x1080", "t:0x161=u20", "n v:0", t6), rvKeySizeRange)
	wantRV(t, "unknown mechanism", genKey("0x1234", aesTempl, "n v:0", t6), rvMechInvalid)
	wantRV(t, "mechanism with a parameter", genKey("0x1080:00", aesTempl, "n v:0", t6), rvMechParamInvalid)
	wantRV(t, "pin blob of 5 bytes", genKey("0x1080", aesTempl, "b:0102030405 v:5", t6), rvArgumentsBad)
	r = d.do("call m_GenerateKey m:0x1080 %s v:1 n v:0 o:50 l:50 o:64 l:64 v:%d", aesTempl, t6)
	if r.ret != rvBufferTooSmall || r.long(6) != int64(len(aes)) {
		t.Fatalf("key buffer of 50 bytes: 0x%x length %d, want CKR_BUFFER_TOO_SMALL and %d", r.ret, r.long(6), len(aes))
	}

	// Encrypt / decrypt.
	plain := []byte("twenty-one bytes.....")
	iv := bytes.Repeat([]byte{3}, 16)
	r = d.do("call m_EncryptSingle b:%s v:%d m:0x1085:%s b:%s v:%d o:64 l:64 v:%d", hx(aes), len(aes), hx(iv), hx(plain), len(plain), group)
	wantRV(t, "CBC-PAD encrypt on the group", r, rvOK)
	ct := r.bytes(5)[:r.long(6)]
	r = d.do("call m_DecryptSingle b:%s v:%d m:0x1085:%s b:%s v:%d o:64 l:64 v:%d", hx(aes), len(aes), hx(iv), hx(ct), len(ct), t6)
	if r.ret != rvOK || !bytes.Equal(r.bytes(5)[:r.long(6)], plain) {
		t.Fatalf("CBC-PAD round trip: 0x%x %q", r.ret, r.bytes(5))
	}
	wantRV(t, "CBC with an 8-byte IV", d.do("call m_EncryptSingle b:%s v:%d m:0x1082:%s b:%s v:16 o:64 l:64 v:%d", hx(aes), len(aes), hx(iv[:8]), hx(plain[:16]), t6), rvMechParamInvalid)
	r = d.do("call m_EncryptSingle b:%s v:%d g:0x1087:%s:%s:128 b:%s v:%d o:64 l:64 v:%d", hx(aes), len(aes), hx(iv[:12]), hx([]byte("aad")), hx(plain), len(plain), t6)
	wantRV(t, "GCM encrypt", r, rvOK)
	gct := r.bytes(5)[:r.long(6)]
	if len(gct) != len(plain)+16 {
		t.Fatalf("GCM output %d bytes, want %d", len(gct), len(plain)+16)
	}
	gct[0] ^= 1
	wantRV(t, "GCM tampered", d.do("call m_DecryptSingle b:%s v:%d g:0x1087:%s:%s:128 b:%s v:%d o:64 l:64 v:%d", hx(aes), len(aes), hx(iv[:12]), hx([]byte("aad")), hx(gct), len(gct), t6), rvEncryptedInvalid)
	bad := append([]byte(nil), aes...)
	bad[len(bad)-3] ^= 1
	wantRV(t, "tampered blob", d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(bad), len(bad), hx(make([]byte, 16)), t6), rvBlobError)
	r = d.do("call m_EncryptSingle b:%s v:%d m:0x1085:%s b:%s v:%d n l:0 v:%d", hx(aes), len(aes), hx(iv), hx(plain), len(plain), t6)
	if r.ret != rvOK || r.long(6) != 32 {
		t.Fatalf("length query: 0x%x %d, want CKR_OK and 32", r.ret, r.long(6))
	}

	// Sessions (§2.6).
	pin := []byte("12345678")
	nonce := []byte("nonce")
	wantRV(t, "m_Login on a group", d.do("call m_Login b:%s v:8 b:%s v:5 o:80 l:80 v:%d", hx(pin), hx(nonce), group), rvArgumentsBad)
	wantRV(t, "m_Login with a 33-byte nonce", d.do("call m_Login b:%s v:8 b:%s v:33 o:80 l:80 v:%d", hx(pin), hx(bytes.Repeat([]byte{1}, 33)), t6), rvArgumentsBad)
	wantRV(t, "m_Login with a 4-byte PIN", d.do("call m_Login b:%s v:4 b:%s v:5 o:80 l:80 v:%d", hx(pin[:4]), hx(nonce), t6), rvPinLenRange)
	r = d.do("call m_Login b:%s v:8 b:%s v:5 o:40 l:40 v:%d", hx(pin), hx(nonce), t6)
	if r.ret != rvBufferTooSmall || r.long(5) != 80 {
		t.Fatalf("pin blob buffer of 40: 0x%x %d", r.ret, r.long(5))
	}
	r = d.do("call m_Login b:%s v:8 b:%s v:5 o:80 l:80 v:%d", hx(pin), hx(nonce), t6)
	wantRV(t, "m_Login", r, rvOK)
	pb := r.bytes(4)
	r = genKey("0x1080", aesTempl, fmt.Sprintf("b:%s v:80", hx(pb)), t6)
	wantRV(t, "bound key", r, rvOK)
	bound := r.bytes(5)[:r.long(6)]
	if !bytes.Equal(bound[:32], pb[:32]) {
		t.Fatalf("bound key's session field % x, want the pin blob's % x", bound[:8], pb[:8])
	}
	wantRV(t, "m_Logout", d.do("call m_Logout b:%s v:80 v:%d", hx(pb), t6), rvOK)
	wantRV(t, "m_Logout twice", d.do("call m_Logout b:%s v:80 v:%d", hx(pb), t6), 0xB3)
	wantRV(t, "bound key after logout", d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(bound), len(bound), hx(make([]byte, 16)), t6), rvSessionClosed)

	// EC key pair, MACed SPKI, sign and verify.
	p256 := "06082a8648ce3d030107"
	r = d.do("call m_GenerateKeyPair m:0x1040 t:0x180=%s v:1 t:0x2=u1 v:1 n v:0 o:16384 l:16384 o:16384 l:16384 v:%d", p256, t6)
	wantRV(t, "m_GenerateKeyPair EC", r, rvOK)
	ecPriv, ecPub := r.bytes(7)[:r.long(8)], r.bytes(9)[:r.long(10)]
	if ecPub[0] != 0x30 || !bytes.Contains(ecPub, append([]byte{4, 16}, wk.Bytes()...)) {
		t.Fatalf("public key blob does not carry the WKID: % x", ecPub[len(ecPub)-40:])
	}
	digest := sha256.Sum256([]byte("to be signed"))
	r = d.do("call m_SignSingle b:%s v:%d m:0x1041 b:%s v:32 o:132 l:132 v:%d", hx(ecPriv), len(ecPriv), hx(digest[:]), t6)
	wantRV(t, "m_SignSingle ECDSA", r, rvOK)
	sig := r.bytes(5)[:r.long(6)]
	wantRV(t, "m_VerifySingle", d.do("call m_VerifySingle b:%s v:%d m:0x1041 b:%s v:32 b:%s v:%d v:%d", hx(ecPub), len(ecPub), hx(digest[:]), hx(sig), len(sig), t6), rvOK)
	sig[3] ^= 1
	wantRV(t, "m_VerifySingle bad signature", d.do("call m_VerifySingle b:%s v:%d m:0x1041 b:%s v:32 b:%s v:%d v:%d", hx(ecPub), len(ecPub), hx(digest[:]), hx(sig), len(sig), t6), rvSignatureInvalid)
	wantRV(t, "P-521", d.do("call m_GenerateKeyPair m:0x1040 t:0x180=06052b81040023 v:1 t:0x2=u1 v:1 n v:0 o:16384 l:16384 o:16384 l:16384 v:%d", t6), rvCurveNotSupported)
	wantRV(t, "sign with the public key", d.do("call m_SignSingle b:%s v:%d m:0x1041 b:%s v:32 o:132 l:132 v:%d", hx(ecPub), len(ecPub), hx(digest[:]), t6), 0x63)

	// Wrap and unwrap with AES key wrap.
	r = genKey("0x1080", "t:0x161=u16", "n v:0", t6)
	wantRV(t, "second AES key", r, rvOK)
	kek := r.bytes(5)[:r.long(6)]
	r = d.do("call m_WrapKey b:%s v:%d b:%s v:%d n v:0 m:0x2109 o:64 l:64 v:%d", hx(aes), len(aes), hx(kek), len(kek), t6)
	wantRV(t, "m_WrapKey", r, rvOK)
	wrapped := r.bytes(7)[:r.long(8)]
	if len(wrapped) != 40 {
		t.Fatalf("wrapped AES-256 key of %d bytes, want 40", len(wrapped))
	}
	r = d.do("call m_UnwrapKey b:%s v:40 b:%s v:%d n v:0 n v:0 m:0x2109 t:0x0=u4;0x100=u31 v:2 o:16384 l:16384 o:64 l:64 v:%d", hx(wrapped), hx(kek), len(kek), t6)
	wantRV(t, "m_UnwrapKey", r, rvOK)
	unwrapped, ucs := r.bytes(11)[:r.long(12)], r.bytes(13)[:r.long(14)]
	if !bytes.Equal(ucs, csum) {
		t.Fatalf("unwrapped key's checksum % x, the original's % x", ucs, csum)
	}
	wantRV(t, "m_UnwrapKey without CKA_KEY_TYPE", d.do("call m_UnwrapKey b:%s v:40 b:%s v:%d n v:0 n v:0 m:0x2109 t:0x0=u4 v:1 o:16384 l:16384 o:64 l:64 v:%d", hx(wrapped), hx(kek), len(kek), t6), rvTemplateIncomplete)
	_ = unwrapped

	// Re-encipher with XCP_ADM_REENCRYPT (§2.7).
	admin := func(blob []byte, dom uint32, target uint64) (result, result) {
		rb := make([]byte, 96)
		ne.PutUint32(rb[4:], dom)
		cmd := d.do("call xcpa_cmdblock o:16384 v:16384 v:25 b:%s n b:%s v:%d", hx(rb), hx(blob), len(blob))
		if int64(cmd.ret) <= 0 { // long
			t.Fatalf("xcpa_cmdblock: %d", int64(cmd.ret))
		}
		block := cmd.bytes(0)[:cmd.ret]
		resp := d.do("call m_admin o:16384 l:16384 n n b:%s v:%d n v:0 v:%d", hx(block), len(block), target)
		if resp.ret != rvOK {
			return resp, result{}
		}
		out := resp.bytes(0)[:resp.long(1)]
		parsed := d.do("call xcpa_internal_rv b:%s v:%d o:96 l:0", hx(out), len(out))
		return resp, parsed
	}
	if _, err := h.LoadNew(ctx, q6, mkvp.EP11WK, nil, hsm.Part{}); err != nil {
		t.Fatal(err)
	}
	_, p := admin(aes, 0x33, t6)
	if p.ret != 0 || ne.Uint64(p.bytes(2)[64:]) != rvWKNotInitialized || ne.Uint32(p.bytes(2)[72:]) != 50 || p.long(3) != rvWKNotInitialized {
		t.Fatalf("REENCRYPT with NEW uncommitted: rv 0x%x reason %d", ne.Uint64(p.bytes(2)[64:]), ne.Uint32(p.bytes(2)[72:]))
	}
	if err := h.Commit(ctx, q6); err != nil {
		t.Fatal(err)
	}
	newWK := pattern(t, h, q6, mkvp.EP11WK, "new")
	r = domInfo(t6)
	if di := r.bytes(0); ne.Uint64(di[72:]) != 2|4|8 || !bytes.Equal(di[40:56], newWK.Bytes()) {
		t.Fatalf("domain info after commit: flags %d nextwk % x, want CURR|NEXT|COMMITTED and %s", ne.Uint64(di[72:]), di[40:56], newWK)
	}
	resp, _ := admin(aes, 0x34, t6)
	wantRV(t, "REENCRYPT naming another domain", resp, rvArgumentsBad)
	resp, _ = admin(aes, 0x33, group)
	wantRV(t, "REENCRYPT on a group target", resp, rvArgumentsBad)
	resp, p = admin(aes, 0x33, t6)
	wantRV(t, "REENCRYPT", resp, rvOK)
	if p.ret != 0 || p.long(3) != 0 {
		t.Fatalf("REENCRYPT embedded rv 0x%x", p.long(3))
	}
	out := resp.bytes(0)[:resp.long(1)]
	re := out[28:]
	if len(re) != len(aes) || !bytes.Equal(re[32:48], newWK.Bytes()) || bytes.Equal(re[32:48], wk.Bytes()) {
		t.Fatalf("re-enciphered blob: %d bytes, WKVP % x; want %d bytes under the NEW WK %s", len(re), re[32:48], len(aes), newWK)
	}
	resp, _ = admin(ecPub, 0x33, t6)
	wantRV(t, "REENCRYPT of the public key blob", resp, rvOK)
	newPub := resp.bytes(0)[28:resp.long(1)]
	if !bytes.Contains(newPub, append([]byte{4, 16}, newWK.Bytes()...)) {
		t.Fatal("re-enciphered public key blob does not carry the NEW WKID")
	}
	// Activate: the old blob is refused, the new one works.
	if err := h.Set(ctx, q6, mkvp.EP11WK); err != nil {
		t.Fatal(err)
	}
	wantRV(t, "old blob after the WK change", d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(aes), len(aes), hx(make([]byte, 16)), t6), rvWKIDMismatch)
	r = d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(re), len(re), hx(make([]byte, 16)), t6)
	if r.ret != rvOK || !bytes.Equal(r.bytes(5)[:3], csum[:3]) {
		t.Fatalf("re-enciphered blob after the WK change: 0x%x, check value % x want % x", r.ret, r.bytes(5)[:3], csum[:3])
	}
	wantRV(t, "old public key blob", d.do("call m_VerifySingle b:%s v:%d m:0x1041 b:%s v:32 b:%s v:%d v:%d", hx(ecPub), len(ecPub), hx(digest[:]), hx(sig), len(sig), t6), rvWKIDMismatch)
	_, p = admin(re, 0x33, t6)
	if p.long(3) != rvWKNotInitialized || ne.Uint32(p.bytes(2)[72:]) != 50 {
		t.Fatalf("REENCRYPT with no next WK: rv 0x%x reason %d", p.long(3), ne.Uint32(p.bytes(2)[72:]))
	}
	// Control-point query (§2.7).
	qb := d.do("call xcpa_queryblock o:100 v:100 v:0x10006 v:%d n v:0", uint64(6)<<32|0x33)
	resp = d.do("call m_admin o:200 l:200 n n b:%s v:%d n v:0 v:%d", hx(qb.bytes(0)[:qb.ret]), qb.ret, t6)
	wantRV(t, "control-point query", resp, rvOK)
	if r := d.do("call m_rm_module n v:%d", group); uint32(r.ret) != rvOK {
		t.Fatalf("m_rm_module: 0x%x", uint32(r.ret))
	}
	wantRV(t, "a removed target", d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(re), len(re), hx(make([]byte, 16)), group), rvArgumentsBad)
}

func countAttrs(templ string) int {
	n := 1
	for _, c := range templ {
		if c == ';' {
			n++
		}
	}
	return n
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestEP11ImportAndThreads imports clear keys the way openCryptoki does
// (encrypt under a generated AES key with CBC-PAD, then m_UnwrapKey with
// CKM_AES_CBC_PAD), checks the imported keys compute with the clear key,
// and runs calls from many threads at once through the connection pool.
func TestEP11ImportAndThreads(t *testing.T) {
	_, dir := newSim(t)
	d := startDriver(t, "libep11.so", dir, "PKCSHSM_HOSTDOUBLE_CONNS=3")
	t6, r := addModule(t, d, -1, 2, 6, 0x33)
	wantRV(t, "m_add_module", r, rvOK)
	r = d.do("call m_GenerateKey m:0x1080 t:0x161=u32 v:1 n v:0 o:16384 l:16384 o:64 l:64 v:%d", t6)
	wantRV(t, "KEK", r, rvOK)
	kek := r.bytes(5)[:r.long(6)]
	iv := bytes.Repeat([]byte{5}, 16)
	wrap := func(clear []byte) []byte {
		r := d.do("call m_EncryptSingle b:%s v:%d m:0x1085:%s b:%s v:%d o:4096 l:4096 v:%d", hx(kek), len(kek), hx(iv), hx(clear), len(clear), t6)
		wantRV(t, "encrypt the clear key", r, rvOK)
		return r.bytes(5)[:r.long(6)]
	}
	unwrap := func(w []byte, templ string) result {
		return d.do("call m_UnwrapKey b:%s v:%d b:%s v:%d n v:0 n v:0 m:0x1085:%s %s v:%d o:16384 l:16384 o:64 l:64 v:%d",
			hx(w), len(w), hx(kek), len(kek), hx(iv), templ, countAttrs(templ), t6)
	}

	clear := []byte("0123456789abcdef")
	r = unwrap(wrap(clear), "t:0x0=u4;0x100=u31")
	wantRV(t, "import AES", r, rvOK)
	imported := r.bytes(11)[:r.long(12)]
	blk, _ := aes.NewCipher(clear)
	want := make([]byte, 16)
	blk.Encrypt(want, make([]byte, 16))
	r = d.do("call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(imported), len(imported), hx(make([]byte, 16)), t6)
	if r.ret != rvOK || !bytes.Equal(r.bytes(5), want) {
		t.Fatalf("imported key's ECB of zero: 0x%x % x, want % x", r.ret, r.bytes(5), want)
	}
	wantRV(t, "import AES with a wrong CKA_VALUE_LEN", unwrap(wrap(clear), "t:0x0=u4;0x100=u31;0x161=u32"), 0xD1)
	wantRV(t, "import of a truncated encryption", unwrap(wrap(clear)[:31], "t:0x0=u4;0x100=u31"), rvEncryptedInvalid)

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	wantRV(t, "EC key declared RSA", unwrap(wrap(p8), "t:0x0=u3;0x100=u0"), 0xD1)
	r = unwrap(wrap(p8), "t:0x0=u3;0x100=u3")
	wantRV(t, "import EC", r, rvOK)
	ecBlob := r.bytes(11)[:r.long(12)]
	digest := sha256.Sum256([]byte("imported"))
	r = d.do("call m_SignSingle b:%s v:%d m:0x1041 b:%s v:32 o:132 l:132 v:%d", hx(ecBlob), len(ecBlob), hx(digest[:]), t6)
	wantRV(t, "sign with the imported EC key", r, rvOK)
	sig := r.bytes(5)[:r.long(6)]
	rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&ecKey.PublicKey, digest[:], rr, ss) {
		t.Fatal("the imported key's signature does not verify with the clear key's public key")
	}

	// Eight threads at once over three server connections: every call
	// answers, each with the same ciphertext.
	rs := d.par(8, "call m_EncryptSingle b:%s v:%d m:0x1081 b:%s v:16 o:16 l:16 v:%d", hx(imported), len(imported), hx(make([]byte, 16)), t6)
	for i, r := range rs {
		if r.ret != rvOK || !bytes.Equal(r.bytes(5), want) {
			t.Fatalf("thread %d: 0x%x % x", i, r.ret, r.bytes(5))
		}
	}
}

// TestEP11GetAttributeValue: the public key of a private key blob, as
// openCryptoki reads it (§2.4), with C_GetAttributeValue's conventions.
func TestEP11GetAttributeValue(t *testing.T) {
	h, dir := newSim(t)
	d := startDriver(t, "libep11.so", dir)
	t6, r := addModule(t, d, -1, 2, 6, 0x33)
	wantRV(t, "m_add_module", r, rvOK)
	r = d.do("call m_GenerateKeyPair m:0x1040 t:0x180=06082a8648ce3d030107 v:1 t:0x2=u1 v:1 n v:0 o:16384 l:16384 o:16384 l:16384 v:%d", t6)
	wantRV(t, "m_GenerateKeyPair", r, rvOK)
	priv := r.bytes(7)[:r.long(8)]
	want, err := h.PublicKey(context.Background(), apqn.MustParse("06.0033"), priv)
	if err != nil {
		t.Fatal(err)
	}
	attrs := func(templ string, n int) []string {
		r := d.do("call m_GetAttributeValue b:%s v:%d T:%s v:%d v:%d", hx(priv), len(priv), templ, n, t6)
		return append([]string{fmt.Sprint(r.ret)}, strings.Split(r.args[2], ";")...)
	}
	got := attrs("0x129=-1;0x100=-1", 2)
	if got[0] != "0" || got[1] != fmt.Sprintf("%d:", len(want)) || got[2] != "8:" {
		t.Fatalf("length query: %v, want CKR_OK, %d and 8", got, len(want))
	}
	got = attrs(fmt.Sprintf("0x129=%d;0x100=8", len(want)), 2)
	kt := make([]byte, 8)
	ne.PutUint64(kt, 3) // CKK_EC
	if got[0] != "0" || got[1] != fmt.Sprintf("%d:%s", len(want), hx(want)) || got[2] != "8:"+hx(kt) {
		t.Fatalf("values: %v", got)
	}
	got = attrs("0x129=10;0x80010000=8;0x100=8", 3)
	if got[0] != fmt.Sprint(rvAttributeTypeInvalid) || got[1] != "-1:" || got[2] != "-1:" || got[3] != "8:"+hx(kt) {
		t.Fatalf("short buffer and unknown attribute: %v, want CKR_ATTRIBUTE_TYPE_INVALID, both unavailable, the key type", got)
	}
}
