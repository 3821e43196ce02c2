/* libep11.so double: the EP11 host library functions with the signatures
 * of ep11.h / ep11adm.h as openCryptoki ships them (host-libraries.md
 * §2.1-§2.7). Targets made by m_add_module are kept here and sent with
 * each call as their APQN list; everything else is checked by the server
 * (hsm/hostdouble/ep11.go); see hostdouble.h. */
#include "hostdouble.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef unsigned char CK_BYTE;
typedef CK_BYTE *CK_BYTE_PTR;
typedef CK_ULONG *CK_ULONG_PTR;
typedef CK_BYTE CK_UTF8CHAR;
typedef uint64_t target_t;

typedef struct {
	CK_ULONG mechanism;
	void *pParameter;
	CK_ULONG ulParameterLen;
} CK_MECHANISM, *CK_MECHANISM_PTR;

typedef struct {
	CK_ULONG type;
	void *pValue;
	CK_ULONG ulValueLen;
} CK_ATTRIBUTE, *CK_ATTRIBUTE_PTR;

typedef struct {
	CK_BYTE *pIv;
	CK_ULONG ulIvLen, ulIvBits;
	CK_BYTE *pAAD;
	CK_ULONG ulAADLen, ulTagBits;
} CK_GCM_PARAMS;

typedef struct {
	CK_ULONG hashAlg, mgf, source;
	void *pSourceData;
	CK_ULONG ulSourceDataLen;
} CK_RSA_PKCS_OAEP_PARAMS;

typedef struct {
	CK_BYTE major, minor;
} CK_VERSION;

/* CK_IBM_DOMAIN_INFO (ep11.h; §2.5). */
typedef struct {
	CK_ULONG domain;
	CK_BYTE wk[32];
	CK_BYTE nextwk[32];
	CK_ULONG flags;
	CK_BYTE mode[8];
} CK_IBM_DOMAIN_INFO;

/* CK_IBM_XCP_INFO (ep11.h CK_IBM_XCP_INFO_MEMBERS_V0, field order as the
 * reference note lists it; §2.5). */
typedef struct {
	CK_ULONG firmwareApi;
	CK_ULONG firmwareId;
	CK_VERSION firmwareVersion;
	CK_VERSION cspVersion;
	CK_BYTE firmwareConfig[32];
	CK_BYTE xcpConfig[32];
	CK_BYTE cspConfig[32];
	CK_UTF8CHAR serialNumber[16];
	CK_UTF8CHAR utcTime[16];
	CK_ULONG opMode2, opMode1, flags, extflags, domains, symmStateBytes, digestStateBytes, pinBlockBytes,
		symmKeyBytes, spkiBytes, prvkeyBytes, maxPayloadBytes, cpProfileBytes, controlPoints;
} CK_IBM_XCP_INFO;

/* struct XCP_Module (ep11.h; §2.3). */
struct XCP_ModuleSocket {
	char host[256 + 1];
	uint32_t port;
};
struct XCP_DomainPerf {
	unsigned int lastperf[256];
};
typedef struct XCP_Module {
	uint32_t version;
	uint64_t flags;
	uint32_t domains;
	unsigned char domainmask[256 / 8];
	struct XCP_ModuleSocket socket;
	uint32_t module_nr;
	void *mhandle;
	struct XCP_DomainPerf perf;
	uint32_t api;
} *XCP_Module_t;

/* struct XCPadmresp (ep11adm.h; §2.7). */
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

#define CKR_OK 0
#define CKR_ARGUMENTS_BAD 7
#define CKR_FUNCTION_NOT_SUPPORTED 0x54
#define CKR_BUFFER_TOO_SMALL 0x150
#define CKR_IBM_TRANSPORT_ERROR 0x80010003UL
#define XCP_TGT_INIT (~(target_t)0)
#define CKM_AES_GCM 0x1087
#define CKM_RSA_PKCS_OAEP 0x9

#define XCPQ_MODULE 1
#define XCPQ_DOMAIN 3
#define XCPQ_EXT_CAPS 5
#define XCPHQ_VERSION 0xff000001u
#define XCPMSQ_FNLIST 2

/* ---- targets ---------------------------------------------------------- */

#define MAX_TARGETS 256
#define TARGET_MAGIC 0x4844000000000000ULL /* "HD" */

struct apqn {
	unsigned char card;
	uint16_t dom;
};
static struct {
	int used, n;
	struct apqn a[256];
} targets[MAX_TARGETS];
static pthread_mutex_t targets_mu = PTHREAD_MUTEX_INITIALIZER;

static int target_index(target_t t)
{
	if ((t & 0xffff000000000000ULL) != TARGET_MAGIC)
		return -1;
	uint64_t i = (t & 0xffffffff) - 1;
	if (i >= MAX_TARGETS || !targets[i].used)
		return -1;
	return (int)i;
}

/* arg_target sends the APQN list of t (target 0: NULL; unknown:
 * unreadable, which the server refuses). */
static void arg_target(struct hd_req *r, target_t t)
{
	if (t == 0) {
		hd_arg_null(r);
		return;
	}
	pthread_mutex_lock(&targets_mu);
	int i = target_index(t);
	if (i < 0) {
		pthread_mutex_unlock(&targets_mu);
		hd_arg_in(r, "", -1);
		return;
	}
	unsigned char buf[3 * 256];
	int n = targets[i].n;
	for (int k = 0; k < n; k++) {
		buf[3 * k] = targets[i].a[k].card;
		hd_put_be16(buf + 3 * k + 1, targets[i].a[k].dom);
	}
	pthread_mutex_unlock(&targets_mu);
	hd_arg_bytes(r, buf, 3 * (size_t)n);
}

/* ---- flattening ------------------------------------------------------- */

struct flat {
	unsigned char *b;
	size_t n, cap;
};

static void put(struct flat *f, const void *p, size_t n)
{
	if (f->n + n > f->cap) {
		size_t c = f->cap ? f->cap * 2 : 256;
		while (c < f->n + n)
			c *= 2;
		unsigned char *nb = realloc(f->b, c);
		if (!nb)
			abort();
		f->b = nb;
		f->cap = c;
	}
	if (n)
		memcpy(f->b + f->n, p, n);
	f->n += n;
}

static void put64(struct flat *f, uint64_t v)
{
	unsigned char b[8];
	hd_put_be64(b, v);
	put(f, b, 8);
}

static void put32(struct flat *f, uint32_t v)
{
	unsigned char b[4];
	hd_put_be32(b, v);
	put(f, b, 4);
}

static void put8(struct flat *f, unsigned char v)
{
	put(f, &v, 1);
}

/* A CK_MECHANISM: u64 mechanism, u8 kind (0 raw parameter bytes, 1
 * CK_GCM_PARAMS, 2 CK_RSA_PKCS_OAEP_PARAMS, 3 NULL parameter with a
 * length), then the parameter with its pointers followed. */
static void arg_mech(struct hd_req *r, const CK_MECHANISM *m)
{
	if (!m) {
		hd_arg_null(r);
		return;
	}
	struct flat f = {0};
	put64(&f, m->mechanism);
	if (!m->pParameter && m->ulParameterLen) {
		put8(&f, 3);
	} else if (m->mechanism == CKM_AES_GCM && m->pParameter && m->ulParameterLen == sizeof(CK_GCM_PARAMS)) {
		const CK_GCM_PARAMS *g = m->pParameter;
		put8(&f, 1);
		CK_ULONG ivl = g->pIv && g->ulIvLen <= 1024 ? g->ulIvLen : 0;
		CK_ULONG aadl = g->pAAD && g->ulAADLen <= HD_MAX_BUFFER ? g->ulAADLen : 0;
		put32(&f, ivl);
		put(&f, g->pIv, ivl);
		put64(&f, g->ulIvBits);
		put32(&f, aadl);
		put(&f, g->pAAD, aadl);
		put64(&f, g->ulTagBits);
	} else if (m->mechanism == CKM_RSA_PKCS_OAEP && m->pParameter &&
		   m->ulParameterLen == sizeof(CK_RSA_PKCS_OAEP_PARAMS)) {
		const CK_RSA_PKCS_OAEP_PARAMS *o = m->pParameter;
		put8(&f, 2);
		put64(&f, o->hashAlg);
		put64(&f, o->mgf);
		put64(&f, o->source);
		CK_ULONG l = o->pSourceData && o->ulSourceDataLen <= 4096 ? o->ulSourceDataLen : 0;
		put32(&f, l);
		put(&f, o->pSourceData, l);
	} else {
		put8(&f, 0);
		put(&f, m->pParameter, m->ulParameterLen <= 4096 ? m->ulParameterLen : 0);
	}
	hd_arg_bytes(r, f.b, f.n);
	free(f.b);
}

/* A CK_ATTRIBUTE array: u32 count, then u64 type, u32 length (0xffffffff:
 * NULL pValue), the value as the caller holds it (native CK_ULONGs; the
 * server reads them in the byte order the frame header declares). */
static void arg_templ(struct hd_req *r, const CK_ATTRIBUTE *t, CK_ULONG n)
{
	if (!t || n > 256) {
		hd_arg_null(r);
		return;
	}
	struct flat f = {0};
	put32(&f, n);
	for (CK_ULONG i = 0; i < n; i++) {
		put64(&f, t[i].type);
		if (!t[i].pValue || t[i].ulValueLen > 65536) {
			put32(&f, 0xffffffffu);
			continue;
		}
		put32(&f, t[i].ulValueLen);
		put(&f, t[i].pValue, t[i].ulValueLen);
	}
	hd_arg_bytes(r, f.b, f.n);
	free(f.b);
}

static long lenp(const void *p)
{
	return p ? *(const long *)p : -1;
}

static CK_RV finish(struct hd_req *r)
{
	uint64_t ret;
	if (hd_call(r, &ret) < 0)
		return CKR_IBM_TRANSPORT_ERROR;
	return (CK_RV)ret;
}

#define BEGIN(name)                                                                                                    \
	struct hd_req r;                                                                                               \
	hd_begin(&r, HD_LIB_EP11, name)

/* ---- §2.2 ------------------------------------------------------------- */

EXPORT int m_init(void)
{
	BEGIN("m_init");
	return finish(&r) == CKR_OK ? 0 : -1;
}

EXPORT int m_shutdown(void)
{
	return 0;
}

EXPORT int m_add_backend(const char *name, unsigned int port)
{
	fprintf(stderr, "libep11 double: m_add_backend is not implemented (use m_add_module)\n");
	return -1;
}

/* ---- §2.3 ------------------------------------------------------------- */

EXPORT int m_add_module(XCP_Module_t module, target_t *target)
{
	if (!module || !target)
		return CKR_ARGUMENTS_BAD;
	BEGIN("m_add_module");
	hd_arg_val(&r, module->version);
	hd_arg_val(&r, (int64_t)module->flags);
	hd_arg_val(&r, module->module_nr);
	hd_arg_bytes(&r, module->domainmask, 32);
	if (*target == XCP_TGT_INIT)
		hd_arg_null(&r);
	else
		arg_target(&r, *target);
	CK_RV rv = finish(&r);
	if (rv != CKR_OK)
		return (int)rv;
	pthread_mutex_lock(&targets_mu);
	int i;
	if (*target == XCP_TGT_INIT) {
		for (i = 0; i < MAX_TARGETS && targets[i].used; i++)
			;
		if (i == MAX_TARGETS) {
			pthread_mutex_unlock(&targets_mu);
			fprintf(stderr, "libep11 double: more than %d targets\n", MAX_TARGETS);
			return CKR_ARGUMENTS_BAD;
		}
		targets[i].used = 1;
		targets[i].n = 0;
	} else {
		i = target_index(*target);
		if (i < 0) {
			pthread_mutex_unlock(&targets_mu);
			return CKR_ARGUMENTS_BAD;
		}
	}
	int added = 0;
	for (int d = 0; d < 256; d++) {
		if (!(module->domainmask[d / 8] & (0x80 >> (d % 8))))
			continue;
		int dup = 0;
		for (int k = 0; k < targets[i].n; k++)
			dup |= targets[i].a[k].card == module->module_nr && targets[i].a[k].dom == d;
		if (!dup && targets[i].n < 256) {
			targets[i].a[targets[i].n].card = module->module_nr;
			targets[i].a[targets[i].n].dom = d;
			targets[i].n++;
		}
		added++;
	}
	if (module->domains == 0)
		module->domains = added;
	*target = TARGET_MAGIC | (uint64_t)(i + 1);
	pthread_mutex_unlock(&targets_mu);
	return CKR_OK;
}

EXPORT int m_rm_module(XCP_Module_t module, target_t target)
{
	pthread_mutex_lock(&targets_mu);
	int i = target_index(target);
	if (i >= 0)
		targets[i].used = 0;
	pthread_mutex_unlock(&targets_mu);
	return i < 0 ? CKR_ARGUMENTS_BAD : CKR_OK;
}

/* ---- m_get_xcp_info (§2.2, §2.5) -------------------------------------- */

static uint64_t be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

EXPORT CK_RV m_get_xcp_info(void *pinfo, CK_ULONG_PTR infbytes, unsigned int query, unsigned int subquery,
			    target_t target)
{
	if (!infbytes)
		return CKR_ARGUMENTS_BAD;
	unsigned char stream[512];
	long slen = sizeof(stream);
	BEGIN("m_get_xcp_info");
	hd_arg_out(&r, stream, sizeof(stream));
	hd_arg_long(&r, &slen);
	hd_arg_val(&r, query);
	hd_arg_val(&r, subquery);
	arg_target(&r, target);
	CK_RV rv = finish(&r);
	if (rv != CKR_OK)
		return rv;
	/* Lay the field stream out as the caller's structure. */
	union {
		uint32_t version;
		CK_IBM_DOMAIN_INFO dom;
		CK_IBM_XCP_INFO mod;
		unsigned char mask[16];
		CK_ULONG count;
	} u;
	memset(&u, 0, sizeof(u));
	size_t need;
	if (query == XCPHQ_VERSION && slen == 4) {
		u.version = be(stream, 4);
		need = sizeof(u.version);
	} else if (query == XCPQ_DOMAIN && slen == 8 + 64 + 16) {
		u.dom.domain = be(stream, 8);
		memcpy(u.dom.wk, stream + 8, 32);
		memcpy(u.dom.nextwk, stream + 40, 32);
		u.dom.flags = be(stream + 72, 8);
		need = sizeof(u.dom);
	} else if (query == XCPQ_MODULE && subquery == XCPMSQ_FNLIST && slen == 16) {
		memcpy(u.mask, stream, 16);
		need = 16;
	} else if (query == XCPQ_MODULE && slen == 8 + 8 + 2 + 16 + 8 + 8) {
		u.mod.firmwareApi = be(stream, 8);
		u.mod.firmwareId = be(stream + 8, 8);
		u.mod.firmwareVersion.major = stream[16];
		u.mod.firmwareVersion.minor = stream[17];
		memcpy(u.mod.serialNumber, stream + 18, 16);
		u.mod.domains = be(stream + 34, 8);
		u.mod.controlPoints = be(stream + 42, 8);
		need = sizeof(u.mod);
	} else if (query == XCPQ_EXT_CAPS && slen == 8) {
		u.count = be(stream, 8);
		need = sizeof(u.count);
	} else {
		fprintf(stderr, "libep11 double: m_get_xcp_info: unexpected answer of %ld bytes to query 0x%x\n", slen,
			query);
		return CKR_IBM_TRANSPORT_ERROR;
	}
	if (!pinfo) {
		*infbytes = need;
		return CKR_OK;
	}
	if (*infbytes < need) {
		*infbytes = need;
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(pinfo, &u, need);
	*infbytes = need;
	return CKR_OK;
}

/* ---- §2.6 ------------------------------------------------------------- */

EXPORT CK_RV m_Login(CK_UTF8CHAR *pin, CK_ULONG pinlen, const unsigned char *nonce, size_t nlen,
		     unsigned char *pinblob, size_t *pinbloblen, target_t target)
{
	BEGIN("m_Login");
	hd_arg_in(&r, pin, pinlen);
	hd_arg_val(&r, pinlen);
	hd_arg_in(&r, nonce, nlen);
	hd_arg_val(&r, nlen);
	hd_arg_out(&r, pinblob, lenp(pinbloblen));
	hd_arg_long(&r, pinbloblen);
	arg_target(&r, target);
	return finish(&r);
}

EXPORT CK_RV m_Logout(const unsigned char *pin, size_t len, target_t target)
{
	BEGIN("m_Logout");
	hd_arg_in(&r, pin, len);
	hd_arg_val(&r, len);
	arg_target(&r, target);
	return finish(&r);
}

/* ---- §2.4 ------------------------------------------------------------- */

EXPORT CK_RV m_GenerateKey(CK_MECHANISM_PTR pmech, CK_ATTRIBUTE_PTR ptempl, CK_ULONG templcount,
			   const unsigned char *pin, size_t pinlen, unsigned char *key, size_t *klen,
			   unsigned char *csum, size_t *clen, target_t target)
{
	BEGIN("m_GenerateKey");
	arg_mech(&r, pmech);
	arg_templ(&r, ptempl, templcount);
	hd_arg_val(&r, templcount);
	hd_arg_in(&r, pin, pinlen);
	hd_arg_val(&r, pinlen);
	hd_arg_out(&r, key, lenp(klen));
	hd_arg_long(&r, klen);
	hd_arg_out(&r, csum, lenp(clen));
	hd_arg_long(&r, clen);
	arg_target(&r, target);
	return finish(&r);
}

EXPORT CK_RV m_GenerateKeyPair(CK_MECHANISM_PTR pmech, CK_ATTRIBUTE_PTR ppublic, CK_ULONG pubattrs,
			       CK_ATTRIBUTE_PTR pprivate, CK_ULONG prvattrs, const unsigned char *pin, size_t pinlen,
			       unsigned char *key, size_t *klen, unsigned char *pubkey, size_t *pklen, target_t target)
{
	BEGIN("m_GenerateKeyPair");
	arg_mech(&r, pmech);
	arg_templ(&r, ppublic, pubattrs);
	hd_arg_val(&r, pubattrs);
	arg_templ(&r, pprivate, prvattrs);
	hd_arg_val(&r, prvattrs);
	hd_arg_in(&r, pin, pinlen);
	hd_arg_val(&r, pinlen);
	hd_arg_out(&r, key, lenp(klen));
	hd_arg_long(&r, klen);
	hd_arg_out(&r, pubkey, lenp(pklen));
	hd_arg_long(&r, pklen);
	arg_target(&r, target);
	return finish(&r);
}

static CK_RV single(const char *name, const unsigned char *key, size_t klen, CK_MECHANISM_PTR mech,
		    CK_BYTE_PTR in, CK_ULONG inlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen, target_t target)
{
	BEGIN(name);
	hd_arg_in(&r, key, klen);
	hd_arg_val(&r, klen);
	arg_mech(&r, mech);
	hd_arg_in(&r, in, inlen);
	hd_arg_val(&r, inlen);
	hd_arg_out(&r, out, lenp(outlen));
	hd_arg_long(&r, outlen);
	arg_target(&r, target);
	return finish(&r);
}

EXPORT CK_RV m_EncryptSingle(const unsigned char *key, size_t klen, CK_MECHANISM_PTR mech, CK_BYTE_PTR plain,
			     CK_ULONG plen, CK_BYTE_PTR cipher, CK_ULONG_PTR clen, target_t target)
{
	return single("m_EncryptSingle", key, klen, mech, plain, plen, cipher, clen, target);
}

EXPORT CK_RV m_DecryptSingle(const unsigned char *key, size_t klen, CK_MECHANISM_PTR mech, CK_BYTE_PTR cipher,
			     CK_ULONG clen, CK_BYTE_PTR plain, CK_ULONG_PTR plen, target_t target)
{
	return single("m_DecryptSingle", key, klen, mech, cipher, clen, plain, plen, target);
}

EXPORT CK_RV m_SignSingle(const unsigned char *key, size_t klen, CK_MECHANISM_PTR pmech, CK_BYTE_PTR data,
			  CK_ULONG dlen, CK_BYTE_PTR sig, CK_ULONG_PTR slen, target_t target)
{
	return single("m_SignSingle", key, klen, pmech, data, dlen, sig, slen, target);
}

EXPORT CK_RV m_VerifySingle(const unsigned char *key, size_t klen, CK_MECHANISM_PTR pmech, CK_BYTE_PTR data,
			    CK_ULONG dlen, CK_BYTE_PTR sig, CK_ULONG slen, target_t target)
{
	BEGIN("m_VerifySingle");
	hd_arg_in(&r, key, klen);
	hd_arg_val(&r, klen);
	arg_mech(&r, pmech);
	hd_arg_in(&r, data, dlen);
	hd_arg_val(&r, dlen);
	hd_arg_in(&r, sig, slen);
	hd_arg_val(&r, slen);
	arg_target(&r, target);
	return finish(&r);
}

EXPORT CK_RV m_WrapKey(const unsigned char *key, size_t keylen, const unsigned char *kek, size_t keklen,
		       const unsigned char *mackey, size_t mklen, const CK_MECHANISM_PTR pmech, CK_BYTE_PTR wrapped,
		       CK_ULONG_PTR wlen, target_t target)
{
	BEGIN("m_WrapKey");
	hd_arg_in(&r, key, keylen);
	hd_arg_val(&r, keylen);
	hd_arg_in(&r, kek, keklen);
	hd_arg_val(&r, keklen);
	hd_arg_in(&r, mackey, mklen);
	hd_arg_val(&r, mklen);
	arg_mech(&r, pmech);
	hd_arg_out(&r, wrapped, lenp(wlen));
	hd_arg_long(&r, wlen);
	arg_target(&r, target);
	return finish(&r);
}

EXPORT CK_RV m_UnwrapKey(const CK_BYTE_PTR wrapped, CK_ULONG wlen, const unsigned char *kek, size_t keklen,
			 const unsigned char *mackey, size_t mklen, const unsigned char *pin, size_t pinlen,
			 const CK_MECHANISM_PTR uwmech, const CK_ATTRIBUTE_PTR ptempl, CK_ULONG pcount,
			 unsigned char *unwrapped, size_t *uwlen, CK_BYTE_PTR csum, CK_ULONG *cslen, target_t target)
{
	BEGIN("m_UnwrapKey");
	hd_arg_in(&r, wrapped, wlen);
	hd_arg_val(&r, wlen);
	hd_arg_in(&r, kek, keklen);
	hd_arg_val(&r, keklen);
	hd_arg_in(&r, mackey, mklen);
	hd_arg_val(&r, mklen);
	hd_arg_in(&r, pin, pinlen);
	hd_arg_val(&r, pinlen);
	arg_mech(&r, uwmech);
	arg_templ(&r, ptempl, pcount);
	hd_arg_val(&r, pcount);
	hd_arg_out(&r, unwrapped, lenp(uwlen));
	hd_arg_long(&r, uwlen);
	hd_arg_out(&r, csum, lenp(cslen));
	hd_arg_long(&r, cslen);
	arg_target(&r, target);
	return finish(&r);
}

/* ---- §2.7 ------------------------------------------------------------- */

EXPORT CK_RV m_admin(unsigned char *response1, size_t *r1len, unsigned char *response2, size_t *r2len,
		     const unsigned char *cmd, size_t clen, const unsigned char *sigs, size_t slen, target_t target)
{
	BEGIN("m_admin");
	hd_arg_out(&r, response1, lenp(r1len));
	hd_arg_long(&r, r1len);
	hd_arg_out(&r, response2, lenp(r2len));
	hd_arg_long(&r, r2len);
	hd_arg_in(&r, cmd, clen);
	hd_arg_val(&r, clen);
	hd_arg_in(&r, sigs, slen);
	hd_arg_val(&r, slen);
	arg_target(&r, target);
	return finish(&r);
}

/* Admin block helpers: the block layout is the double's own (see
 * hsm/hostdouble/ep11.go mAdmin); callers only use these functions.
 * Negative returns: -1 bad argument (XCP_EARG), -2 buffer too small
 * (XCP_ESIZE). */
static long block(unsigned char *blk, size_t blen, unsigned int fn, uint32_t domain, uint64_t qt,
		  const unsigned char *payload, size_t plen)
{
	if (!blk || (plen && !payload) || plen > HD_MAX_BUFFER)
		return -1;
	size_t n = 4 + 4 + 4 + 8 + 4 + plen;
	if (blen < n)
		return -2;
	memcpy(blk, "HDAC", 4);
	hd_put_be32(blk + 4, fn);
	hd_put_be32(blk + 8, domain);
	hd_put_be64(blk + 12, qt);
	hd_put_be32(blk + 20, plen);
	if (plen)
		memcpy(blk + 24, payload, plen);
	return (long)n;
}

EXPORT long xcpa_cmdblock(unsigned char *blk, size_t blen, unsigned int fn, const struct XCPadmresp *minf,
			  const unsigned char *tctr, const unsigned char *payload, size_t plen)
{
	if (!minf)
		return -1;
	return block(blk, blen, fn, minf->domain, 0, payload, plen);
}

EXPORT long xcpa_queryblock(unsigned char *blk, size_t blen, unsigned int fn, target_t domain,
			    const unsigned char *payload, size_t plen)
{
	return block(blk, blen, fn, (uint32_t)(domain & 0xffffffff), domain, payload, plen);
}

EXPORT long xcpa_internal_rv(const unsigned char *rsp, size_t rlen, struct XCPadmresp *rspblk, CK_RV *rv)
{
	if (!rsp || !rspblk || rlen < 28 || memcmp(rsp, "HDAR", 4))
		return -1;
	size_t pl = be(rsp + 24, 4);
	if (28 + pl != rlen)
		return -1;
	memset(rspblk, 0, sizeof(*rspblk));
	rspblk->fn = be(rsp + 4, 4);
	rspblk->domain = be(rsp + 8, 4);
	rspblk->rv = be(rsp + 12, 8);
	rspblk->reason = be(rsp + 20, 4);
	rspblk->payload = rsp + 28;
	rspblk->pllen = pl;
	if (rv)
		*rv = rspblk->rv;
	return 0;
}

/* m_GetAttributeValue (§2.4): the template goes as (type, capacity) pairs
 * (capacity -1 for a NULL pValue); the answer is a stream of (u64
 * ulValueLen, u32 n, n bytes) per attribute, written back into the
 * caller's template, also with CKR_ATTRIBUTE_TYPE_INVALID and
 * CKR_BUFFER_TOO_SMALL, as C_GetAttributeValue does. */
#define CKR_ATTRIBUTE_TYPE_INVALID 0x12
EXPORT CK_RV m_GetAttributeValue(const unsigned char *obj, size_t olen, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
				 target_t target)
{
	if (!pTemplate || ulCount > 64)
		return CKR_ARGUMENTS_BAD;
	struct flat f = {0};
	size_t cap = 0;
	put32(&f, ulCount);
	for (CK_ULONG i = 0; i < ulCount; i++) {
		put64(&f, pTemplate[i].type);
		if (pTemplate[i].pValue && pTemplate[i].ulValueLen <= 65536) {
			put64(&f, pTemplate[i].ulValueLen);
			cap += pTemplate[i].ulValueLen;
		} else {
			put64(&f, (uint64_t)-1);
		}
		cap += 12;
	}
	unsigned char *stream = calloc(1, cap);
	if (!stream) {
		free(f.b);
		return CKR_IBM_TRANSPORT_ERROR;
	}
	BEGIN("m_GetAttributeValue");
	hd_arg_in(&r, obj, olen);
	hd_arg_bytes(&r, f.b, f.n);
	hd_arg_out(&r, stream, cap);
	arg_target(&r, target);
	free(f.b);
	CK_RV rv = finish(&r);
	if (rv == CKR_OK || rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL) {
		size_t off = 0;
		for (CK_ULONG i = 0; i < ulCount; i++) {
			if (off + 12 > cap)
				return CKR_IBM_TRANSPORT_ERROR;
			uint64_t l = be(stream + off, 8);
			size_t n = be(stream + off + 8, 4);
			off += 12;
			if (off + n > cap || (n && (!pTemplate[i].pValue || n > pTemplate[i].ulValueLen))) {
				free(stream);
				return CKR_IBM_TRANSPORT_ERROR;
			}
			if (n)
				memcpy(pTemplate[i].pValue, stream + off, n);
			pTemplate[i].ulValueLen = (CK_ULONG)l;
			off += n;
		}
	}
	free(stream);
	return rv;
}

/* The other functions openCryptoki resolves (§2.1: all 48 must exist).
 * The double does not implement them. */
#define UNIMPLEMENTED(fn)                                                                                              \
	EXPORT CK_RV fn(void)                                                                                          \
	{                                                                                                              \
		fprintf(stderr, "libep11 double: " #fn " is not implemented\n");                                       \
		return CKR_FUNCTION_NOT_SUPPORTED;                                                                     \
	}

UNIMPLEMENTED(m_GenerateRandom)
UNIMPLEMENTED(m_SeedRandom)
UNIMPLEMENTED(m_Digest)
UNIMPLEMENTED(m_DigestInit)
UNIMPLEMENTED(m_DigestUpdate)
UNIMPLEMENTED(m_DigestFinal)
UNIMPLEMENTED(m_DigestKey)
UNIMPLEMENTED(m_DigestSingle)
UNIMPLEMENTED(m_Encrypt)
UNIMPLEMENTED(m_EncryptInit)
UNIMPLEMENTED(m_EncryptUpdate)
UNIMPLEMENTED(m_EncryptFinal)
UNIMPLEMENTED(m_Decrypt)
UNIMPLEMENTED(m_DecryptInit)
UNIMPLEMENTED(m_DecryptUpdate)
UNIMPLEMENTED(m_DecryptFinal)
UNIMPLEMENTED(m_ReencryptSingle)
UNIMPLEMENTED(m_Sign)
UNIMPLEMENTED(m_SignInit)
UNIMPLEMENTED(m_SignUpdate)
UNIMPLEMENTED(m_SignFinal)
UNIMPLEMENTED(m_Verify)
UNIMPLEMENTED(m_VerifyInit)
UNIMPLEMENTED(m_VerifyUpdate)
UNIMPLEMENTED(m_VerifyFinal)
UNIMPLEMENTED(m_DeriveKey)
UNIMPLEMENTED(m_GetMechanismList)
UNIMPLEMENTED(m_GetMechanismInfo)
UNIMPLEMENTED(m_SetAttributeValue)
