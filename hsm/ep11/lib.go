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
