package ep11

/*
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Prototypes of the EP11 host library as openCryptoki's ep11.h and
// ep11_func.h declare them (host-libraries.md §2.4), written here so that
// no vendor header is needed: CK_ULONG is unsigned long, target_t a
// 64-bit integer, every function returns CK_RV except m_init (int) and
// the xcpa_ helpers (long).
typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef uint64_t target_t;
typedef struct { CK_ULONG mechanism; void *pParameter; CK_ULONG ulParameterLen; } CK_MECHANISM;
typedef struct { CK_ULONG type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;

// struct XCP_Module (ep11.h; host-libraries.md §2.3), natural alignment.
struct XCP_ModuleSocket { char host[256 + 1]; uint32_t port; };
struct XCP_DomainPerf { unsigned int lastperf[256]; };
struct XCP_Module {
	uint32_t version;
	uint64_t flags;
	uint32_t domains;
	unsigned char domainmask[256 / 8];
	struct XCP_ModuleSocket socket;
	uint32_t module_nr;
	void *mhandle;
	struct XCP_DomainPerf perf;
	uint32_t api;
};

// struct XCPadmresp (ep11adm.h; host-libraries.md §2.7).
struct XCPadmresp {
	uint32_t fn;
	uint32_t domain;
	uint32_t domainInst;
	unsigned char module[16];
	unsigned char modNr[8];
	unsigned char modInst[8];
	unsigned char tctr[16];
	CK_RV rv;
	uint32_t reason;
	const unsigned char *payload;
	size_t pllen;
};

static int ep11_m_init(void *fn) { return ((int (*)(void))fn)(); }

static CK_RV ep11_get_xcp_info(void *fn, void *info, CK_ULONG *len, unsigned int q, unsigned int sub, target_t t) {
	return ((CK_RV (*)(void *, CK_ULONG *, unsigned int, unsigned int, target_t))fn)(info, len, q, sub, t);
}

static int ep11_add_module(void *fn, struct XCP_Module *m, target_t *t) {
	return ((int (*)(struct XCP_Module *, target_t *))fn)(m, t);
}

static int ep11_rm_module(void *fn, struct XCP_Module *m, target_t t) {
	return ((int (*)(struct XCP_Module *, target_t))fn)(m, t);
}

static CK_RV ep11_generate_key(void *fn, CK_MECHANISM *mech, CK_ATTRIBUTE *tmpl, CK_ULONG n,
		const unsigned char *pin, size_t pinlen, unsigned char *key, size_t *klen,
		unsigned char *csum, size_t *clen, target_t t) {
	return ((CK_RV (*)(CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, const unsigned char *, size_t,
		unsigned char *, size_t *, unsigned char *, size_t *, target_t))fn)(mech, tmpl, n, pin, pinlen, key, klen, csum, clen, t);
}

static CK_RV ep11_generate_key_pair(void *fn, CK_MECHANISM *mech, CK_ATTRIBUTE *pub, CK_ULONG npub,
		CK_ATTRIBUTE *priv, CK_ULONG npriv, const unsigned char *pin, size_t pinlen,
		unsigned char *key, size_t *klen, unsigned char *pubkey, size_t *pklen, target_t t) {
	return ((CK_RV (*)(CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, CK_ATTRIBUTE *, CK_ULONG,
		const unsigned char *, size_t, unsigned char *, size_t *, unsigned char *, size_t *, target_t))fn)(
		mech, pub, npub, priv, npriv, pin, pinlen, key, klen, pubkey, pklen, t);
}

// m_EncryptSingle, m_DecryptSingle and m_SignSingle share a shape: key,
// key length, mechanism, input, input length, output, output length.
static CK_RV ep11_single(void *fn, const unsigned char *key, size_t klen, CK_MECHANISM *mech,
		unsigned char *in, CK_ULONG inlen, unsigned char *out, CK_ULONG *outlen, target_t t) {
	return ((CK_RV (*)(const unsigned char *, size_t, CK_MECHANISM *, unsigned char *, CK_ULONG,
		unsigned char *, CK_ULONG *, target_t))fn)(key, klen, mech, in, inlen, out, outlen, t);
}

static CK_RV ep11_verify_single(void *fn, const unsigned char *key, size_t klen, CK_MECHANISM *mech,
		unsigned char *data, CK_ULONG dlen, unsigned char *sig, CK_ULONG slen, target_t t) {
	return ((CK_RV (*)(const unsigned char *, size_t, CK_MECHANISM *, unsigned char *, CK_ULONG,
		unsigned char *, CK_ULONG, target_t))fn)(key, klen, mech, data, dlen, sig, slen, t);
}

static CK_RV ep11_wrap_key(void *fn, const unsigned char *key, size_t keylen, const unsigned char *kek, size_t keklen,
		const unsigned char *mackey, size_t mklen, CK_MECHANISM *mech, unsigned char *wrapped, CK_ULONG *wlen, target_t t) {
	return ((CK_RV (*)(const unsigned char *, size_t, const unsigned char *, size_t, const unsigned char *, size_t,
		CK_MECHANISM *, unsigned char *, CK_ULONG *, target_t))fn)(key, keylen, kek, keklen, mackey, mklen, mech, wrapped, wlen, t);
}

static CK_RV ep11_unwrap_key(void *fn, unsigned char *wrapped, CK_ULONG wlen, const unsigned char *kek, size_t keklen,
		const unsigned char *mackey, size_t mklen, const unsigned char *pin, size_t pinlen, CK_MECHANISM *mech,
		CK_ATTRIBUTE *tmpl, CK_ULONG n, unsigned char *out, size_t *outlen, unsigned char *csum, CK_ULONG *cslen, target_t t) {
	return ((CK_RV (*)(unsigned char *, CK_ULONG, const unsigned char *, size_t, const unsigned char *, size_t,
		const unsigned char *, size_t, CK_MECHANISM *, CK_ATTRIBUTE *, CK_ULONG, unsigned char *, size_t *,
		unsigned char *, CK_ULONG *, target_t))fn)(wrapped, wlen, kek, keklen, mackey, mklen, pin, pinlen, mech, tmpl, n, out, outlen, csum, cslen, t);
}

static CK_RV ep11_get_attribute_value(void *fn, const unsigned char *obj, size_t olen, CK_ATTRIBUTE *tmpl, CK_ULONG n, target_t t) {
	return ((CK_RV (*)(const unsigned char *, size_t, CK_ATTRIBUTE *, CK_ULONG, target_t))fn)(obj, olen, tmpl, n, t);
}

static CK_RV ep11_login(void *fn, unsigned char *pin, CK_ULONG pinlen, const unsigned char *nonce, size_t nlen,
		unsigned char *blob, size_t *bloblen, target_t t) {
	return ((CK_RV (*)(unsigned char *, CK_ULONG, const unsigned char *, size_t, unsigned char *, size_t *, target_t))fn)(
		pin, pinlen, nonce, nlen, blob, bloblen, t);
}

static CK_RV ep11_logout(void *fn, const unsigned char *blob, size_t len, target_t t) {
	return ((CK_RV (*)(const unsigned char *, size_t, target_t))fn)(blob, len, t);
}

static CK_RV ep11_admin(void *fn, unsigned char *r1, size_t *r1len, unsigned char *r2, size_t *r2len,
		const unsigned char *cmd, size_t clen, const unsigned char *sigs, size_t slen, target_t t) {
	return ((CK_RV (*)(unsigned char *, size_t *, unsigned char *, size_t *, const unsigned char *, size_t,
		const unsigned char *, size_t, target_t))fn)(r1, r1len, r2, r2len, cmd, clen, sigs, slen, t);
}

static long ep11_cmdblock(void *fn, unsigned char *blk, size_t blen, unsigned int code, const struct XCPadmresp *minf,
		const unsigned char *tctr, const unsigned char *payload, size_t plen) {
	return ((long (*)(unsigned char *, size_t, unsigned int, const struct XCPadmresp *, const unsigned char *,
		const unsigned char *, size_t))fn)(blk, blen, code, minf, tctr, payload, plen);
}

static long ep11_internal_rv(void *fn, const unsigned char *rsp, size_t rlen, struct XCPadmresp *blk, CK_RV *rv) {
	return ((long (*)(const unsigned char *, size_t, struct XCPadmresp *, CK_RV *))fn)(rsp, rlen, blk, rv);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/internal/dl"
)

// Loading the EP11 host library follows openCryptoki's EP11 token
// (host-libraries.md §2.1, §2.2): the names libep11.so.4 down to
// libep11.so.1, then libep11.so, the first that loads; every function
// resolved before first use; m_init; the version from m_get_xcp_info
// (CK_IBM_XCPHQ_VERSION). pkcshsm addresses one APQN per call through
// m_add_module targets, which need host library version 2 or later.
const (
	// EnvLibrary overrides the search (a path or a bare name).
	EnvLibrary = "PKCSHSM_EP11_LIBRARY"
	// Package names what ships the library.
	Package = "IBM's EP11 host library package (ep11-host-<v>.s390x.rpm, or libep11_<v>_s390x.deb on Ubuntu, from the IBM Z EP11 Support Program at ibm.com/security/cryptocards)"
	// MinMajor is the oldest host library version accepted.
	MinMajor = 2
)

// LibraryNames is the search order without an override.
var LibraryNames = []string{"libep11.so.4", "libep11.so.3", "libep11.so.2", "libep11.so.1", "libep11.so"}

// functions pkcshsm calls, resolved all at once at load time.
var functions = []string{
	"m_init", "m_get_xcp_info", "m_add_module", "m_rm_module",
	"m_GenerateKey", "m_GenerateKeyPair", "m_EncryptSingle", "m_DecryptSingle",
	"m_SignSingle", "m_VerifySingle", "m_WrapKey", "m_UnwrapKey", "m_GetAttributeValue",
	"m_Login", "m_Logout", "m_admin", "xcpa_cmdblock", "xcpa_internal_rv",
}

// Library is a loaded EP11 host library.
type Library struct {
	lib     *dl.Library
	fn      map[string]unsafe.Pointer
	version [3]int
}

func loadError(what error) error {
	return errclass.Newh(errclass.FailedPrecondition,
		fmt.Sprintf("install %s so that the dynamic loader finds libep11.so (ldconfig -p | grep libep11), "+
			"or set %s to its path; without CEX*P adapters, set `hsm-backend = simulator` in pkcshsm.conf",
			Package, EnvLibrary),
		"EP11 host library (hsm-backend = host): %w", what)
}

// Load loads the EP11 host library: path if not empty, else
// $PKCSHSM_EP11_LIBRARY, else the first of LibraryNames that loads.
func Load(path string) (*Library, error) {
	if path == "" {
		path = os.Getenv(EnvLibrary)
	}
	names := LibraryNames
	if path != "" {
		names = []string{path}
	}
	lib, err := dl.Open(names...)
	if err != nil {
		return nil, loadError(err)
	}
	fn, err := lib.Syms(functions...)
	if err != nil {
		lib.Close()
		var se *dl.SymbolError
		if errors.As(err, &se) {
			return nil, loadError(fmt.Errorf("%s does not export %s: it is not the IBM EP11 host library, or one older than %d.0", se.Path, se.Symbol, MinMajor))
		}
		return nil, loadError(err)
	}
	l := &Library{lib: lib, fn: fn}
	if rc := C.ep11_m_init(fn["m_init"]); rc < 0 {
		lib.Close()
		return nil, loadError(fmt.Errorf("m_init in %s failed with %d", lib.Path, int(rc)))
	}
	v, err := l.hostVersion()
	if err != nil {
		lib.Close()
		return nil, loadError(err)
	}
	if v[0] < MinMajor {
		lib.Close()
		return nil, loadError(fmt.Errorf("%s is version %d.%d.%d; pkcshsm needs %d.0 or later (single-APQN targets with m_add_module)", lib.Path, v[0], v[1], v[2], MinMajor))
	}
	l.version = v
	return l, nil
}

// Path is the file the library was loaded from.
func (l *Library) Path() string { return l.lib.Path }

// Version is the host library version.
func (l *Library) Version() string {
	return fmt.Sprintf("%d.%d.%d", l.version[0], l.version[1], l.version[2])
}

// Close unloads the library.
func (l *Library) Close() error { return l.lib.Close() }

// Host-only query of the library version (ep11.h CK_IBM_XCPHQ_VERSION).
const xcphqVersion = 0xff000001

// hostVersion decodes the 32-bit version as openCryptoki does: major in
// bits 16-23, release in bits 8-11, modification in bits 0-3; a major of
// 0 (libraries before 2.0 answer 0x100) is 1.0.
func (l *Library) hostVersion() ([3]int, error) {
	a := newArena()
	defer a.free()
	buf := a.bytes(nil, 4)
	n := a.ulong(4)
	rv := C.ep11_get_xcp_info(l.fn["m_get_xcp_info"], buf, n, C.uint(xcphqVersion), 0, 0)
	if rv != 0 {
		return [3]int{}, fmt.Errorf("m_get_xcp_info(CK_IBM_XCPHQ_VERSION) in %s failed with CK_RV 0x%X", l.lib.Path, uint64(rv))
	}
	if *n != 4 {
		return [3]int{}, fmt.Errorf("m_get_xcp_info(CK_IBM_XCPHQ_VERSION) in %s returned %d bytes, want 4", l.lib.Path, uint64(*n))
	}
	v := uint32(*(*C.uint32_t)(buf))
	major := int(v>>16) & 0xff
	if major == 0 {
		return [3]int{1, 0, 0}, nil
	}
	return [3]int{major, int(v>>8) & 0xf, int(v) & 0xf}, nil
}

// arena is C memory for one call: freed (and wiped) together.
type arena struct {
	blocks []block
}

type block struct {
	p    unsafe.Pointer
	size C.size_t
}

func newArena() *arena { return &arena{} }

func (a *arena) alloc(size int) unsafe.Pointer {
	s := C.size_t(max(size, 1))
	p := C.calloc(1, s)
	if p == nil {
		panic("ep11: out of C memory")
	}
	a.blocks = append(a.blocks, block{p, s})
	return p
}

// bytes copies in into a C buffer of size bytes (at least len(in)).
func (a *arena) bytes(in []byte, size int) unsafe.Pointer {
	p := a.alloc(max(size, len(in)))
	if len(in) > 0 {
		C.memcpy(p, unsafe.Pointer(&in[0]), C.size_t(len(in)))
	}
	return p
}

// ulong returns a pointer to a CK_ULONG holding v.
func (a *arena) ulong(v uint64) *C.CK_ULONG {
	p := (*C.CK_ULONG)(a.alloc(int(unsafe.Sizeof(C.CK_ULONG(0)))))
	*p = C.CK_ULONG(v)
	return p
}

// sizeT returns a pointer to a size_t holding v.
func (a *arena) sizeT(v int) *C.size_t {
	p := (*C.size_t)(a.alloc(int(unsafe.Sizeof(C.size_t(0)))))
	*p = C.size_t(v)
	return p
}

func (a *arena) free() {
	for _, b := range a.blocks {
		C.memset(b.p, 0, b.size)
		C.free(b.p)
	}
	a.blocks = nil
}

// goBytes copies n bytes of C memory.
func goBytes(p unsafe.Pointer, n int) []byte {
	if n <= 0 {
		return []byte{}
	}
	return C.GoBytes(p, C.int(n))
}

// Module flags (ep11.h XCP_Module_Flags) and versions (ep11_func.h).
const (
	xcpMFLModule = 2
	xcpModV1     = 1
	xcpModV2     = 2
)

// addModule builds a single-APQN target as openCryptoki's
// get_ep11_target_for_apqn does (host-libraries.md §2.3): a zeroed
// module, version 2 with host library 3 or later (else 1), flag
// XCP_MFL_MODULE, module_nr the card and one bit set in the domain mask
// (bit 0x80 of byte 0 is domain 0).
func (l *Library) addModule(card uint8, domain uint16) (uint64, error) {
	a := newArena()
	defer a.free()
	m := (*C.struct_XCP_Module)(a.alloc(int(unsafe.Sizeof(C.struct_XCP_Module{}))))
	m.version = xcpModV1
	if l.version[0] >= 3 {
		m.version = xcpModV2
	}
	m.flags = xcpMFLModule
	m.module_nr = C.uint32_t(card)
	m.domainmask[domain/8] |= C.uchar(1 << (7 - domain%8))
	t := (*C.target_t)(a.alloc(8))
	*t = C.target_t(^uint64(0)) // XCP_TGT_INIT
	if rc := C.ep11_add_module(l.fn["m_add_module"], m, t); rc != 0 {
		return 0, errclass.New(errclass.Unavailable, "m_add_module for card %02x domain %d failed with %d", card, domain, int(rc))
	}
	return uint64(*t), nil
}

// rmModule frees a target (openCryptoki passes a NULL module).
func (l *Library) rmModule(t uint64) {
	C.ep11_rm_module(l.fn["m_rm_module"], nil, C.target_t(t))
}

// domainInfo calls m_get_xcp_info(CK_IBM_XCPQ_DOMAIN).
func (l *Library) domainInfo(t uint64) (domainInfo, uint64, error) {
	a := newArena()
	defer a.free()
	buf := a.alloc(domainInfoSize)
	n := a.ulong(uint64(domainInfoSize))
	rv := C.ep11_get_xcp_info(l.fn["m_get_xcp_info"], buf, n, 3, 0, C.target_t(t))
	if rv != 0 {
		return domainInfo{}, uint64(rv), nil
	}
	if int(*n) != domainInfoSize {
		return domainInfo{}, 0, errclass.New(errclass.Internal, "m_get_xcp_info(CK_IBM_XCPQ_DOMAIN) returned %d bytes, want %d", uint64(*n), domainInfoSize)
	}
	return readDomainInfo(buf), 0, nil
}

// Buffer sizes as openCryptoki's EP11 token uses them: MAX_BLOBSIZE for
// key blobs and admin blocks, MAX_CSUMSIZE for checksums.
const (
	maxBlob = 16384
	maxCsum = 64
)

// generateKey calls m_GenerateKey.
func (l *Library) generateKey(t uint64, mech uint64, attrs []attr, pin []byte) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	m := a.mech(mech, nil, 0)
	tmpl, n := a.template(attrs)
	var pp unsafe.Pointer
	if len(pin) > 0 {
		pp = a.bytes(pin, len(pin))
	}
	key := a.alloc(maxBlob)
	klen := a.sizeT(maxBlob)
	csum := a.alloc(maxCsum)
	clen := a.sizeT(maxCsum)
	rv := C.ep11_generate_key(l.fn["m_GenerateKey"], m, tmpl, n, (*C.uchar)(pp), C.size_t(len(pin)),
		(*C.uchar)(key), klen, (*C.uchar)(csum), clen, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	return goBytes(key, min(int(*klen), maxBlob)), 0
}

// generateKeyPair calls m_GenerateKeyPair.
func (l *Library) generateKeyPair(t uint64, mech uint64, pub, priv []attr, pin []byte) ([]byte, []byte, uint64) {
	a := newArena()
	defer a.free()
	m := a.mech(mech, nil, 0)
	pt, pn := a.template(pub)
	st, sn := a.template(priv)
	var pp unsafe.Pointer
	if len(pin) > 0 {
		pp = a.bytes(pin, len(pin))
	}
	key := a.alloc(maxBlob)
	klen := a.sizeT(maxBlob)
	spki := a.alloc(maxBlob)
	slen := a.sizeT(maxBlob)
	rv := C.ep11_generate_key_pair(l.fn["m_GenerateKeyPair"], m, pt, pn, st, sn, (*C.uchar)(pp), C.size_t(len(pin)),
		(*C.uchar)(key), klen, (*C.uchar)(spki), slen, C.target_t(t))
	if rv != 0 {
		return nil, nil, uint64(rv)
	}
	return goBytes(key, min(int(*klen), maxBlob)), goBytes(spki, min(int(*slen), maxBlob)), 0
}

// mechSpec is a mechanism and its parameter, built in an arena.
type mechSpec func(a *arena) *C.CK_MECHANISM

// single calls m_EncryptSingle, m_DecryptSingle or m_SignSingle.
func (l *Library) single(fn string, t uint64, key []byte, ms mechSpec, in []byte, outCap int) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	k := a.bytes(key, len(key))
	m := ms(a)
	ip := a.bytes(in, len(in))
	op := a.alloc(outCap)
	on := a.ulong(uint64(outCap))
	rv := C.ep11_single(l.fn[fn], (*C.uchar)(k), C.size_t(len(key)), m, (*C.uchar)(ip), C.CK_ULONG(len(in)), (*C.uchar)(op), on, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	return goBytes(op, min(int(*on), outCap)), 0
}

// verifySingle calls m_VerifySingle.
func (l *Library) verifySingle(t uint64, key []byte, ms mechSpec, data, sig []byte) uint64 {
	a := newArena()
	defer a.free()
	k := a.bytes(key, len(key))
	m := ms(a)
	d := a.bytes(data, len(data))
	s := a.bytes(sig, len(sig))
	return uint64(C.ep11_verify_single(l.fn["m_VerifySingle"], (*C.uchar)(k), C.size_t(len(key)), m,
		(*C.uchar)(d), C.CK_ULONG(len(data)), (*C.uchar)(s), C.CK_ULONG(len(sig)), C.target_t(t)))
}

// wrapKey calls m_WrapKey with no MAC key.
func (l *Library) wrapKey(t uint64, key, kek []byte, ms mechSpec) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	k := a.bytes(key, len(key))
	w := a.bytes(kek, len(kek))
	m := ms(a)
	out := a.alloc(maxBlob)
	n := a.ulong(maxBlob)
	rv := C.ep11_wrap_key(l.fn["m_WrapKey"], (*C.uchar)(k), C.size_t(len(key)), (*C.uchar)(w), C.size_t(len(kek)),
		nil, 0, m, (*C.uchar)(out), n, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	return goBytes(out, min(int(*n), maxBlob)), 0
}

// unwrapKey calls m_UnwrapKey with no MAC key.
func (l *Library) unwrapKey(t uint64, wrapped, kek []byte, ms mechSpec, attrs []attr, pin []byte) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	w := a.bytes(wrapped, len(wrapped))
	k := a.bytes(kek, len(kek))
	m := ms(a)
	tmpl, tn := a.template(attrs)
	var pp unsafe.Pointer
	if len(pin) > 0 {
		pp = a.bytes(pin, len(pin))
	}
	out := a.alloc(maxBlob)
	on := a.sizeT(maxBlob)
	cs := a.alloc(maxCsum)
	cn := a.ulong(maxCsum)
	rv := C.ep11_unwrap_key(l.fn["m_UnwrapKey"], (*C.uchar)(w), C.CK_ULONG(len(wrapped)), (*C.uchar)(k), C.size_t(len(kek)),
		nil, 0, (*C.uchar)(pp), C.size_t(len(pin)), m, tmpl, tn, (*C.uchar)(out), on, (*C.uchar)(cs), cn, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	return goBytes(out, min(int(*on), maxBlob)), 0
}

// attribute calls m_GetAttributeValue for one attribute.
func (l *Library) attribute(t uint64, obj []byte, typ uint64, capacity int) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	o := a.bytes(obj, len(obj))
	tmpl, n := a.template([]attr{bytesAttr(typ, make([]byte, capacity))})
	rv := C.ep11_get_attribute_value(l.fn["m_GetAttributeValue"], (*C.uchar)(o), C.size_t(len(obj)), tmpl, n, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	got := int(tmpl.ulValueLen)
	if got < 0 || got > capacity {
		return nil, 0x150 // CKR_BUFFER_TOO_SMALL
	}
	return goBytes(tmpl.pValue, got), 0
}

// login calls m_Login and returns the pin blob.
func (l *Library) login(t uint64, pin, nonce []byte) ([]byte, uint64) {
	a := newArena()
	defer a.free()
	p := a.bytes(pin, len(pin))
	n := a.bytes(nonce, len(nonce))
	blob := a.alloc(hsmPinBlob)
	bl := a.sizeT(hsmPinBlob)
	rv := C.ep11_login(l.fn["m_Login"], (*C.uchar)(p), C.CK_ULONG(len(pin)), (*C.uchar)(n), C.size_t(len(nonce)), (*C.uchar)(blob), bl, C.target_t(t))
	if rv != 0 {
		return nil, uint64(rv)
	}
	return goBytes(blob, min(int(*bl), hsmPinBlob)), 0
}

// logout calls m_Logout.
func (l *Library) logout(t uint64, blob []byte) uint64 {
	a := newArena()
	defer a.free()
	b := a.bytes(blob, len(blob))
	return uint64(C.ep11_logout(l.fn["m_Logout"], (*C.uchar)(b), C.size_t(len(blob)), C.target_t(t)))
}

// Admin function codes and reasons (ep11.h).
const (
	xcpAdmReencrypt     = 25
	xcpRscWKMissing     = 49
	xcpRscNextWKMissing = 50
)

// adminResult is what xcpa_internal_rv parsed out of an m_admin response.
type adminResult struct {
	rv      uint64
	reason  uint32
	payload []byte
}

// reencrypt runs XCP_ADM_REENCRYPT on blob as openCryptoki's
// ep11tok_reencipher_blob does (host-libraries.md §2.7): xcpa_cmdblock
// with a response block whose domain is the APQN's, no transaction
// counter and the blob as payload; m_admin on the single-APQN target;
// xcpa_internal_rv for the embedded return value, reason and payload.
func (l *Library) reencrypt(t uint64, domain uint16, blob []byte) (adminResult, uint64, error) {
	a := newArena()
	defer a.free()
	rb := (*C.struct_XCPadmresp)(a.alloc(int(unsafe.Sizeof(C.struct_XCPadmresp{}))))
	rb.domain = C.uint32_t(domain)
	req := a.alloc(maxBlob)
	pl := a.bytes(blob, len(blob))
	n := C.ep11_cmdblock(l.fn["xcpa_cmdblock"], (*C.uchar)(req), maxBlob, xcpAdmReencrypt, rb, nil, (*C.uchar)(pl), C.size_t(len(blob)))
	if n < 0 {
		return adminResult{}, 0, errclass.New(errclass.Internal, "xcpa_cmdblock(XCP_ADM_REENCRYPT) failed with %d", int64(n))
	}
	resp := a.alloc(maxBlob)
	rl := a.sizeT(maxBlob)
	rv := C.ep11_admin(l.fn["m_admin"], (*C.uchar)(resp), rl, nil, nil, (*C.uchar)(req), C.size_t(n), nil, 0, C.target_t(t))
	if rv != 0 {
		return adminResult{}, uint64(rv), nil
	}
	if *rl == 0 || *rl > maxBlob {
		return adminResult{}, 0, errclass.New(errclass.Internal, "m_admin(XCP_ADM_REENCRYPT) returned a %d-byte response", uint64(*rl))
	}
	lrb := (*C.struct_XCPadmresp)(a.alloc(int(unsafe.Sizeof(C.struct_XCPadmresp{}))))
	lrb.domain = C.uint32_t(domain)
	irv := (*C.CK_RV)(a.alloc(8))
	if r := C.ep11_internal_rv(l.fn["xcpa_internal_rv"], (*C.uchar)(resp), *rl, lrb, irv); r < 0 {
		return adminResult{}, 0, errclass.New(errclass.Internal, "xcpa_internal_rv could not parse the XCP_ADM_REENCRYPT response (%d)", int64(r))
	}
	res := adminResult{rv: uint64(*irv), reason: uint32(lrb.reason)}
	if res.rv == 0 {
		pllen := int(lrb.pllen)
		// The payload points into the response buffer.
		start := uintptr(unsafe.Pointer(lrb.payload)) - uintptr(resp)
		if lrb.payload == nil || start > uintptr(*rl) || uintptr(pllen) > uintptr(*rl)-start {
			return adminResult{}, 0, errclass.New(errclass.Internal, "xcpa_internal_rv returned a payload outside the response")
		}
		res.payload = goBytes(unsafe.Pointer(lrb.payload), pllen)
	}
	return res, 0, nil
}
