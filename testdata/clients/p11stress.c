/*
 * p11stress: an outside PKCS#11 application written in C. It loads a module
 * by path (libpkcshsm.so, libsofthsm2.so, ...) with dlopen, exactly as any C
 * application does, and uses it from several threads.
 *
 *   p11stress load  --module SO --token LABEL[,LABEL...] [--threads N]
 *                   [--duration SEC] [--ready FILE] [--report FILE]
 *                   [--phases FILE] [--progress FILE]            < pin
 *   p11stress save  --module SO --token LABEL[,...] --file FILE   < pin
 *   p11stress check --module SO --token LABEL[,...] --file FILE   < pin
 *   p11stress bench --module SO --token LABEL [--seconds SEC]
 *                   [--objects N] [--only TEST[,TEST...]]         < pin
 *
 * load: every thread encrypts and decrypts (AES-CBC-PAD, AES-GCM, checking
 * the round trip), signs and verifies (ECDSA P-256, RSA-2048, and a
 * tampered digest must not verify) and now and then creates a session or a
 * token AES key, uses it, and later checks that data it encrypted with that
 * key still decrypts before destroying it. Every operation is counted with
 * its latency and wall-clock time; at the end (SIGTERM, SIGINT or
 * --duration) the data encrypted at start is decrypted again, and if
 * --phases names a file of "NAME EPOCH_NS" lines (written by whoever drives
 * the run, e.g. the rotation demo), operations and latencies are reported
 * per phase; --progress names a file rewritten every 200 ms with the number
 * of operations done so far. Exit status 0 only when no operation failed.
 *
 * save/check: save creates token keys (AES, EC) on each token, encrypts and
 * signs with them and writes the results; check, run later by another
 * process (after a master key change), finds the keys by label and proves
 * that the old ciphertexts decrypt and the old signatures verify.
 *
 * bench: single-thread figures for the operations of docs/bench.md and two
 * threads' throughput, one tab-separated line per test: operations per
 * second, wall and CPU time (getrusage) per operation, p99 latency. Each
 * test starts from an emptied token; --only runs some tests (the list is
 * bench_tests below), --objects sets the number of objects the find tests
 * search (default 10000; keep it under a module's object cap).
 *
 * The USER PIN is the first line of standard input, never an argument.
 * Build: gcc -O2 -pthread -I/usr/include/p11-kit-1 -o p11stress p11stress.c -ldl
 */
#define _GNU_SOURCE
#define CRYPTOKI_GNU 1
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define MAXTOK 8
#define PLAIN_LEN 1024
#define RING 4

static struct ck_function_list *fl;
static unsigned char pin[256];
static unsigned long pinlen;
static const unsigned char ec_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char rsa_e[] = {0x01, 0x00, 0x01};
static unsigned char plain[PLAIN_LEN];

static struct {
	const char *mode, *module, *ready, *report, *phases, *file, *only, *progress;
	const char *labels[MAXTOK];
	int ntok, threads, keys_every, objects;
	double duration, seconds;
} opt = {.threads = 4, .keys_every = 40, .objects = 10000, .seconds = 2};

static ck_slot_id_t slots[MAXTOK];

/* ---------- errors ---------- */

static const char *rvname(ck_rv_t rv)
{
	static const struct {
		ck_rv_t rv;
		const char *name;
	} t[] = {
		{CKR_OK, "CKR_OK"},
		{CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
		{CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
		{CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
		{CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
		{CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
		{CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"},
		{CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
		{CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
		{CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID"},
		{CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
		{CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
		{CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
		{CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
		{CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
		{CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
		{CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
		{CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
		{CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
		{CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
		{CKR_SIGNATURE_INVALID, "CKR_SIGNATURE_INVALID"},
		{CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"},
		{CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"},
		{CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
		{CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
		{CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
		{CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
		{CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
		{CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
		{CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
	};
	static __thread char buf[32];
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (t[i].rv == rv)
			return t[i].name;
	snprintf(buf, sizeof buf, "CKR_0x%lx", rv);
	return buf;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "p11stress: error: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* The first errors, to say what failed; the counters hold the totals. */
static pthread_mutex_t errmu = PTHREAD_MUTEX_INITIALIZER;
static char errors[20][160];
static int nerrors;

static void note(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&errmu);
	if (nerrors < 20) {
		va_start(ap, fmt);
		vsnprintf(errors[nerrors++], sizeof errors[0], fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&errmu);
}

/* ---------- time ---------- */

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------- operations and their records ---------- */

enum {
	OP_CBC_ENC,
	OP_CBC_DEC,
	OP_GCM_ENC,
	OP_GCM_DEC,
	OP_EC_SIGN,
	OP_EC_VERIFY,
	OP_EC_VERIFY_BAD,
	OP_RSA_SIGN,
	OP_RSA_VERIFY,
	OP_GEN_SESSION_KEY,
	OP_GEN_TOKEN_KEY,
	OP_DESTROY,
	OP_CHECK,
	NOPS
};
static const char *opnames[NOPS] = {"aes-cbc-encrypt", "aes-cbc-decrypt", "aes-gcm-encrypt", "aes-gcm-decrypt",
				    "ecdsa-sign", "ecdsa-verify", "ecdsa-verify-tampered", "rsa-sign", "rsa-verify",
				    "generate-session-key", "generate-token-key", "destroy-key", "decrypt-earlier-data"};

struct rec {
	int64_t wall;  /* when the operation started */
	uint32_t lat;  /* its latency in ns, capped */
	uint8_t op, ok;
};

struct key {
	ck_object_handle_t h;
	int token;
	unsigned char iv[16], ct[PLAIN_LEN + 16];
	unsigned long ctlen;
};

struct worker {
	pthread_t th;
	int idx;
	ck_slot_id_t slot;
	ck_session_handle_t s;
	ck_object_handle_t ec_pub, ec_priv, rsa_pub, rsa_priv;
	struct key base[2]; /* session and token key made at start */
	struct key ring[RING];
	int nring, next;
	unsigned long rounds;
	uint64_t ops[NOPS], fails[NOPS], verified;
	uint64_t done; /* operations so far, read by the main thread (atomic) */
	struct rec *recs;
	size_t nrecs, caprecs;
};

static void record(struct worker *w, int op, int64_t wall, int64_t t0, int ok)
{
	int64_t lat = mono_ns() - t0;
	w->ops[op]++;
	__atomic_add_fetch(&w->done, 1, __ATOMIC_RELAXED);
	if (!ok)
		w->fails[op]++;
	if (w->nrecs == w->caprecs) {
		size_t n = w->caprecs ? w->caprecs * 2 : 4096;
		struct rec *r = realloc(w->recs, n * sizeof *r);
		if (!r)
			return; /* counted, not timed */
		w->recs = r, w->caprecs = n;
	}
	w->recs[w->nrecs++] = (struct rec){wall, lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat, (uint8_t)op, (uint8_t)ok};
}

#define ATTR(t, p, l) {(t), (void *)(p), (l)}
static unsigned char yes = 1, no = 0; /* CK_BBOOL */

static ck_rv_t gen_aes(ck_session_handle_t s, int token, const char *label, ck_object_handle_t *h)
{
	ck_object_class_t cls = CKO_SECRET_KEY;
	ck_key_type_t kt = CKK_AES;
	unsigned long len = 32;
	struct ck_attribute t[] = {
		ATTR(CKA_CLASS, &cls, sizeof cls),
		ATTR(CKA_KEY_TYPE, &kt, sizeof kt),
		ATTR(CKA_VALUE_LEN, &len, sizeof len),
		ATTR(CKA_TOKEN, token ? &yes : &no, 1),
		ATTR(CKA_PRIVATE, &yes, 1),
		ATTR(CKA_SENSITIVE, &yes, 1),
		ATTR(CKA_ENCRYPT, &yes, 1),
		ATTR(CKA_DECRYPT, &yes, 1),
		ATTR(CKA_LABEL, label, strlen(label)),
	};
	struct ck_mechanism m = {CKM_AES_KEY_GEN, NULL, 0};
	return fl->C_GenerateKey(s, &m, t, sizeof t / sizeof t[0], h);
}

static ck_rv_t gen_ec(ck_session_handle_t s, int token, const char *label, ck_object_handle_t *pub, ck_object_handle_t *priv)
{
	struct ck_attribute pt[] = {
		ATTR(CKA_EC_PARAMS, ec_p256, sizeof ec_p256),
		ATTR(CKA_VERIFY, &yes, 1),
		ATTR(CKA_TOKEN, token ? &yes : &no, 1),
		ATTR(CKA_LABEL, label, strlen(label)),
	};
	struct ck_attribute st[] = {
		ATTR(CKA_SIGN, &yes, 1),
		ATTR(CKA_PRIVATE, &yes, 1),
		ATTR(CKA_SENSITIVE, &yes, 1),
		ATTR(CKA_TOKEN, token ? &yes : &no, 1),
		ATTR(CKA_LABEL, label, strlen(label)),
	};
	struct ck_mechanism m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	return fl->C_GenerateKeyPair(s, &m, pt, 4, st, 5, pub, priv);
}

static ck_rv_t gen_rsa(ck_session_handle_t s, ck_object_handle_t *pub, ck_object_handle_t *priv)
{
	unsigned long bits = 2048;
	struct ck_attribute pt[] = {
		ATTR(CKA_MODULUS_BITS, &bits, sizeof bits),
		ATTR(CKA_PUBLIC_EXPONENT, rsa_e, sizeof rsa_e),
		ATTR(CKA_VERIFY, &yes, 1),
		ATTR(CKA_TOKEN, &no, 1),
	};
	struct ck_attribute st[] = {
		ATTR(CKA_SIGN, &yes, 1),
		ATTR(CKA_PRIVATE, &yes, 1),
		ATTR(CKA_SENSITIVE, &yes, 1),
		ATTR(CKA_TOKEN, &no, 1),
	};
	struct ck_mechanism m = {CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0};
	return fl->C_GenerateKeyPair(s, &m, pt, 4, st, 4, pub, priv);
}

static ck_rv_t cbc(ck_session_handle_t s, int enc, ck_object_handle_t k, unsigned char *iv, const unsigned char *in,
		   unsigned long inlen, unsigned char *out, unsigned long *outlen)
{
	struct ck_mechanism m = {CKM_AES_CBC_PAD, iv, 16};
	ck_rv_t rv = enc ? fl->C_EncryptInit(s, &m, k) : fl->C_DecryptInit(s, &m, k);
	if (rv != CKR_OK)
		return rv;
	return enc ? fl->C_Encrypt(s, (unsigned char *)in, inlen, out, outlen)
		   : fl->C_Decrypt(s, (unsigned char *)in, inlen, out, outlen);
}

/* The v2.40 CK_GCM_PARAMS layout (p11-kit's header has the same). */
static ck_rv_t gcm(ck_session_handle_t s, int enc, ck_object_handle_t k, unsigned char *iv, const unsigned char *in,
		   unsigned long inlen, unsigned char *out, unsigned long *outlen)
{
	static unsigned char aad[] = "p11stress";
	struct ck_gcm_params p = {iv, 12, 96, aad, sizeof aad - 1, 128};
	struct ck_mechanism m = {CKM_AES_GCM, &p, sizeof p};
	ck_rv_t rv = enc ? fl->C_EncryptInit(s, &m, k) : fl->C_DecryptInit(s, &m, k);
	if (rv != CKR_OK)
		return rv;
	return enc ? fl->C_Encrypt(s, (unsigned char *)in, inlen, out, outlen)
		   : fl->C_Decrypt(s, (unsigned char *)in, inlen, out, outlen);
}

static ck_rv_t sign(ck_session_handle_t s, ck_mechanism_type_t mt, ck_object_handle_t k, const unsigned char *in,
		    unsigned long inlen, unsigned char *sig, unsigned long *siglen)
{
	struct ck_mechanism m = {mt, NULL, 0};
	ck_rv_t rv = fl->C_SignInit(s, &m, k);
	if (rv != CKR_OK)
		return rv;
	return fl->C_Sign(s, (unsigned char *)in, inlen, sig, siglen);
}

static ck_rv_t verify(ck_session_handle_t s, ck_mechanism_type_t mt, ck_object_handle_t k, const unsigned char *in,
		      unsigned long inlen, unsigned char *sig, unsigned long siglen)
{
	struct ck_mechanism m = {mt, NULL, 0};
	ck_rv_t rv = fl->C_VerifyInit(s, &m, k);
	if (rv != CKR_OK)
		return rv;
	return fl->C_Verify(s, (unsigned char *)in, inlen, sig, siglen);
}

/* ---------- setup ---------- */

static void read_pin(void)
{
	char line[sizeof pin + 2];
	if (!fgets(line, sizeof line, stdin))
		die("no USER PIN on standard input");
	size_t n = strcspn(line, "\r\n");
	if (n == 0 || n >= sizeof pin)
		die("the USER PIN on standard input is empty or too long");
	memcpy(pin, line, n);
	pinlen = n;
	memset(line, 0, sizeof line);
}

static void load_module(void)
{
	void *h = dlopen(opt.module, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		die("cannot load %s: %s", opt.module, dlerror());
	ck_rv_t (*get)(struct ck_function_list **) = (ck_rv_t(*)(struct ck_function_list **))dlsym(h, "C_GetFunctionList");
	if (!get)
		die("%s has no C_GetFunctionList", opt.module);
	ck_rv_t rv = get(&fl);
	if (rv != CKR_OK)
		die("C_GetFunctionList: %s", rvname(rv));
	/* As OpenSSL's engine and p11-kit do: the OS locks, no callbacks. */
	struct ck_c_initialize_args args = {0};
	args.flags = CKF_OS_LOCKING_OK;
	rv = fl->C_Initialize(&args);
	if (rv != CKR_OK)
		die("C_Initialize: %s", rvname(rv));
}

static void trim_label(char *dst, const unsigned char *src)
{
	memcpy(dst, src, 32);
	dst[32] = 0;
	for (int i = 31; i >= 0 && dst[i] == ' '; i--)
		dst[i] = 0;
}

static void find_slots(void)
{
	ck_slot_id_t list[64];
	unsigned long n = 64;
	ck_rv_t rv = fl->C_GetSlotList(1, list, &n);
	if (rv != CKR_OK)
		die("C_GetSlotList: %s", rvname(rv));
	for (int t = 0; t < opt.ntok; t++) {
		int found = 0;
		for (unsigned long i = 0; i < n && !found; i++) {
			struct ck_token_info ti;
			char label[33];
			if (fl->C_GetTokenInfo(list[i], &ti) != CKR_OK)
				continue;
			trim_label(label, ti.label);
			if (strcmp(label, opt.labels[t]) == 0)
				slots[t] = list[i], found = 1;
		}
		if (!found)
			die("no token labelled \"%s\" in %s", opt.labels[t], opt.module);
	}
}

/* login opens a session that stays open for the whole run: login state
 * belongs to the application and ends with its last session. */
static ck_session_handle_t login(ck_slot_id_t slot)
{
	ck_session_handle_t s;
	ck_rv_t rv = fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		die("C_OpenSession(slot %lu): %s", slot, rvname(rv));
	rv = fl->C_Login(s, CKU_USER, pin, pinlen);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		die("C_Login(slot %lu): %s", slot, rvname(rv));
	return s;
}

/* ---------- load ---------- */

static volatile sig_atomic_t stopping;
static sem_t stopsem;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
	sem_post(&stopsem);
}

static int key_encrypt(struct worker *w, struct key *k, int op)
{
	int64_t wall = wall_ns(), t0 = mono_ns();
	k->ctlen = sizeof k->ct;
	ck_rv_t rv = cbc(w->s, 1, k->h, k->iv, plain, PLAIN_LEN, k->ct, &k->ctlen);
	record(w, op, wall, t0, rv == CKR_OK);
	if (rv != CKR_OK)
		note("thread %d slot %lu: encrypt with a new key: %s", w->idx, w->slot, rvname(rv));
	return rv == CKR_OK;
}

/* key_check decrypts the data encrypted with k when k was made. */
static void key_check(struct worker *w, struct key *k, const char *what)
{
	unsigned char out[PLAIN_LEN + 16];
	unsigned long outlen = sizeof out;
	int64_t wall = wall_ns(), t0 = mono_ns();
	ck_rv_t rv = cbc(w->s, 0, k->h, k->iv, k->ct, k->ctlen, out, &outlen);
	int ok = rv == CKR_OK && outlen == PLAIN_LEN && memcmp(out, plain, PLAIN_LEN) == 0;
	record(w, OP_CHECK, wall, t0, ok);
	if (ok)
		w->verified++;
	else
		note("thread %d slot %lu: data encrypted earlier with the %s does not decrypt: %s", w->idx, w->slot, what,
		     rv == CKR_OK ? "wrong plaintext" : rvname(rv));
}

static void new_ring_key(struct worker *w, int token)
{
	char label[64];
	struct key k = {0};
	snprintf(label, sizeof label, "p11stress-%d-%d-%lu", (int)getpid(), w->idx, w->rounds);
	int op = token ? OP_GEN_TOKEN_KEY : OP_GEN_SESSION_KEY;
	int64_t wall = wall_ns(), t0 = mono_ns();
	ck_rv_t rv = gen_aes(w->s, token, label, &k.h);
	record(w, op, wall, t0, rv == CKR_OK);
	if (rv != CKR_OK) {
		note("thread %d slot %lu: %s: %s", w->idx, w->slot, opnames[op], rvname(rv));
		return;
	}
	k.token = token;
	memset(k.iv, 0x40 + (int)(w->rounds & 0x3f), sizeof k.iv);
	if (!key_encrypt(w, &k, OP_CBC_ENC))
		return;
	if (w->nring == RING) {
		/* The oldest key leaves: its data must still decrypt. */
		struct key *old = &w->ring[w->next];
		key_check(w, old, old->token ? "token key made during the run" : "session key made during the run");
		wall = wall_ns(), t0 = mono_ns();
		rv = fl->C_DestroyObject(w->s, old->h);
		record(w, OP_DESTROY, wall, t0, rv == CKR_OK);
		if (rv != CKR_OK)
			note("thread %d slot %lu: C_DestroyObject: %s", w->idx, w->slot, rvname(rv));
		*old = k;
		w->next = (w->next + 1) % RING;
	} else {
		w->ring[w->nring++] = k;
	}
}

static void round_trip(struct worker *w, int gcm_mode, ck_object_handle_t k)
{
	unsigned char iv[16], ct[PLAIN_LEN + 32], pt[PLAIN_LEN + 32];
	unsigned long ctlen = sizeof ct, ptlen = sizeof pt;
	int enc = gcm_mode ? OP_GCM_ENC : OP_CBC_ENC, dec = gcm_mode ? OP_GCM_DEC : OP_CBC_DEC;
	memset(iv, (int)(w->rounds & 0xff), sizeof iv);
	memcpy(iv, &w->idx, sizeof w->idx);
	int64_t wall = wall_ns(), t0 = mono_ns();
	ck_rv_t rv = (gcm_mode ? gcm : cbc)(w->s, 1, k, iv, plain, PLAIN_LEN, ct, &ctlen);
	record(w, enc, wall, t0, rv == CKR_OK);
	if (rv != CKR_OK) {
		note("thread %d slot %lu: %s: %s", w->idx, w->slot, opnames[enc], rvname(rv));
		return;
	}
	wall = wall_ns(), t0 = mono_ns();
	rv = (gcm_mode ? gcm : cbc)(w->s, 0, k, iv, ct, ctlen, pt, &ptlen);
	int ok = rv == CKR_OK && ptlen == PLAIN_LEN && memcmp(pt, plain, PLAIN_LEN) == 0;
	record(w, dec, wall, t0, ok);
	if (!ok)
		note("thread %d slot %lu: %s: %s", w->idx, w->slot, opnames[dec], rv == CKR_OK ? "round trip differs" : rvname(rv));
}

static void sign_verify(struct worker *w, int rsa)
{
	unsigned char data[64], sig[512];
	unsigned long siglen = sizeof sig;
	ck_mechanism_type_t mt = rsa ? CKM_SHA256_RSA_PKCS : CKM_ECDSA;
	unsigned long dlen = rsa ? sizeof data : 32; /* ECDSA signs a digest */
	ck_object_handle_t priv = rsa ? w->rsa_priv : w->ec_priv, pub = rsa ? w->rsa_pub : w->ec_pub;
	int sop = rsa ? OP_RSA_SIGN : OP_EC_SIGN, vop = rsa ? OP_RSA_VERIFY : OP_EC_VERIFY;
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (unsigned char)(w->rounds * 7 + i);
	int64_t wall = wall_ns(), t0 = mono_ns();
	ck_rv_t rv = sign(w->s, mt, priv, data, dlen, sig, &siglen);
	record(w, sop, wall, t0, rv == CKR_OK);
	if (rv != CKR_OK) {
		note("thread %d slot %lu: %s: %s", w->idx, w->slot, opnames[sop], rvname(rv));
		return;
	}
	wall = wall_ns(), t0 = mono_ns();
	rv = verify(w->s, mt, pub, data, dlen, sig, siglen);
	record(w, vop, wall, t0, rv == CKR_OK);
	if (rv != CKR_OK)
		note("thread %d slot %lu: %s: %s", w->idx, w->slot, opnames[vop], rvname(rv));
	if (!rsa && w->rounds % 8 == 0) {
		/* A signature must not verify for other data. */
		data[0] ^= 1;
		wall = wall_ns(), t0 = mono_ns();
		rv = verify(w->s, mt, pub, data, dlen, sig, siglen);
		record(w, OP_EC_VERIFY_BAD, wall, t0, rv == CKR_SIGNATURE_INVALID);
		if (rv != CKR_SIGNATURE_INVALID)
			note("thread %d slot %lu: verify of a tampered digest: %s, want CKR_SIGNATURE_INVALID", w->idx, w->slot,
			     rvname(rv));
	}
}

static void *load_thread(void *arg)
{
	struct worker *w = arg;
	while (!stopping) {
		w->rounds++;
		/* Turn through the keys: session, token, then those made since. */
		int nk = 2 + w->nring, pick = (int)(w->rounds % (unsigned long)nk);
		ck_object_handle_t k = pick < 2 ? w->base[pick].h : w->ring[pick - 2].h;
		round_trip(w, 0, k);
		round_trip(w, 1, k);
		sign_verify(w, 0);
		if (w->rounds % 2 == 0)
			sign_verify(w, 1);
		if (opt.keys_every > 0 && w->rounds % (unsigned long)opt.keys_every == 0)
			new_ring_key(w, (w->rounds / (unsigned long)opt.keys_every) % 2 == 0);
	}
	key_check(w, &w->base[0], "session key made at start");
	key_check(w, &w->base[1], "token key made at start");
	for (int i = 0; i < w->nring; i++)
		key_check(w, &w->ring[i], w->ring[i].token ? "token key made during the run" : "session key made during the run");
	return NULL;
}

struct phase {
	char name[48];
	int64_t start;
};

static int read_phases(struct phase *ph, int max)
{
	int n = 0;
	strcpy(ph[n].name, "setup");
	ph[n++].start = INT64_MIN;
	if (!opt.phases)
		return n;
	FILE *f = fopen(opt.phases, "r");
	if (!f) {
		fprintf(stderr, "p11stress: warning: cannot read the phases file %s: %s\n", opt.phases, strerror(errno));
		return n;
	}
	char line[128];
	while (n < max && fgets(line, sizeof line, f)) {
		long long t;
		if (sscanf(line, "%47s %lld", ph[n].name, &t) == 2)
			ph[n++].start = t;
	}
	fclose(f);
	return n;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int run_load(void)
{
	struct sigaction sa = {0};
	sa.sa_handler = on_signal;
	/* The module's Go threads run on small stacks: an alternate stack. */
	sa.sa_flags = SA_ONSTACK | SA_RESTART;
	sem_init(&stopsem, 0, 0);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	ck_session_handle_t ls[MAXTOK];
	struct worker *ws = calloc((size_t)opt.threads, sizeof *ws);
	ck_object_handle_t ec[MAXTOK][2], rsa[MAXTOK][2];
	for (int t = 0; t < opt.ntok; t++) {
		ls[t] = login(slots[t]);
		char label[64];
		snprintf(label, sizeof label, "p11stress-%d-ec", (int)getpid());
		ck_rv_t rv = gen_ec(ls[t], 0, label, &ec[t][0], &ec[t][1]);
		if (rv != CKR_OK)
			die("slot %lu: EC key pair: %s", slots[t], rvname(rv));
		rv = gen_rsa(ls[t], &rsa[t][0], &rsa[t][1]);
		if (rv != CKR_OK)
			die("slot %lu: RSA key pair: %s", slots[t], rvname(rv));
	}
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &ws[i];
		int t = i % opt.ntok;
		w->idx = i, w->slot = slots[t];
		w->ec_pub = ec[t][0], w->ec_priv = ec[t][1], w->rsa_pub = rsa[t][0], w->rsa_priv = rsa[t][1];
		ck_rv_t rv = fl->C_OpenSession(w->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &w->s);
		if (rv != CKR_OK)
			die("thread %d: C_OpenSession: %s", i, rvname(rv));
		for (int b = 0; b < 2; b++) {
			char label[64];
			snprintf(label, sizeof label, "p11stress-%d-%d-%s", (int)getpid(), i, b ? "token" : "session");
			rv = gen_aes(w->s, b, label, &w->base[b].h);
			if (rv != CKR_OK)
				die("thread %d: generate AES key: %s", i, rvname(rv));
			w->base[b].token = b;
			memset(w->base[b].iv, 0x10 + b, 16);
			if (!key_encrypt(w, &w->base[b], OP_CBC_ENC))
				die("thread %d: encrypt the start data: %s", i, errors[nerrors - 1]);
		}
	}
	int64_t started = mono_ns();
	for (int i = 0; i < opt.threads; i++)
		if (pthread_create(&ws[i].th, NULL, load_thread, &ws[i]) != 0)
			die("pthread_create failed");
	if (opt.ready) {
		FILE *f = fopen(opt.ready, "w");
		if (!f)
			die("cannot create %s: %s", opt.ready, strerror(errno));
		fprintf(f, "%d\n", (int)getpid());
		fclose(f);
	}
	/* Wait for a signal or the end of --duration, reporting progress. */
	int64_t end = opt.duration > 0 ? started + (int64_t)(opt.duration * 1e9) : INT64_MAX;
	while (!stopping && mono_ns() < end) {
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_nsec += 200000000;
		if (dl.tv_nsec >= 1000000000)
			dl.tv_sec++, dl.tv_nsec -= 1000000000;
		if (sem_timedwait(&stopsem, &dl) == 0)
			break;
		if (opt.progress) {
			uint64_t n = 0;
			for (int i = 0; i < opt.threads; i++)
				n += __atomic_load_n(&ws[i].done, __ATOMIC_RELAXED);
			char tmp[4096];
			snprintf(tmp, sizeof tmp, "%s.tmp", opt.progress);
			FILE *f = fopen(tmp, "w");
			if (f) {
				fprintf(f, "%llu\n", (unsigned long long)n);
				fclose(f);
				rename(tmp, opt.progress);
			}
		}
	}
	stopping = 1;
	for (int i = 0; i < opt.threads; i++)
		pthread_join(ws[i].th, NULL);
	double secs = (double)(mono_ns() - started) / 1e9;

	uint64_t ops = 0, fails = 0, verified = 0, per[NOPS] = {0}, perf[NOPS] = {0};
	for (int i = 0; i < opt.threads; i++) {
		for (int o = 0; o < NOPS; o++) {
			per[o] += ws[i].ops[o], perf[o] += ws[i].fails[o];
			ops += ws[i].ops[o], fails += ws[i].fails[o];
		}
		verified += ws[i].verified;
	}
	struct phase ph[64];
	int nph = read_phases(ph, 64);
	FILE *rep = opt.report ? fopen(opt.report, "w") : NULL;
	if (opt.report && !rep)
		fprintf(stderr, "p11stress: warning: cannot write %s: %s\n", opt.report, strerror(errno));
	if (rep) {
		fprintf(rep, "{\n  \"client\": \"c\",\n  \"pid\": %d,\n  \"threads\": %d,\n  \"seconds\": %.3f,\n", (int)getpid(),
			opt.threads, secs);
		fprintf(rep, "  \"ops\": %llu,\n  \"failed\": %llu,\n  \"ciphertexts_verified\": %llu,\n  \"per_op\": {",
			(unsigned long long)ops, (unsigned long long)fails, (unsigned long long)verified);
		for (int o = 0; o < NOPS; o++)
			fprintf(rep, "%s\n    \"%s\": {\"ops\": %llu, \"failed\": %llu}", o ? "," : "", opnames[o],
				(unsigned long long)per[o], (unsigned long long)perf[o]);
		fprintf(rep, "\n  },\n  \"phases\": [");
	}
	printf("p11stress %d: %llu operations, %llu failed, %llu ciphertexts from earlier verified (%d threads, %.1f s)\n",
	       (int)getpid(), (unsigned long long)ops, (unsigned long long)fails, (unsigned long long)verified, opt.threads, secs);
	size_t total = 0;
	for (int i = 0; i < opt.threads; i++)
		total += ws[i].nrecs;
	uint32_t *lat = malloc((total + 1) * sizeof *lat);
	int nreported = 0;
	for (int p = 0; p < nph; p++) {
		int64_t lo = ph[p].start, hi = p + 1 < nph ? ph[p + 1].start : INT64_MAX;
		size_t n = 0;
		uint64_t pf = 0;
		for (int i = 0; i < opt.threads; i++)
			for (size_t j = 0; j < ws[i].nrecs; j++) {
				struct rec *r = &ws[i].recs[j];
				if (r->wall >= lo && r->wall < hi) {
					lat[n++] = r->lat;
					pf += !r->ok;
				}
			}
		if (n == 0 && p == 0)
			continue;
		uint64_t p50 = 0, p99 = 0, mx = 0;
		if (n > 0) {
			qsort(lat, n, sizeof *lat, cmp_u32);
			p50 = lat[n / 2] / 1000, p99 = lat[n * 99 / 100] / 1000, mx = lat[n - 1] / 1000;
		}
		printf("p11stress %d: phase %-14s %8zu ops %4llu failed  p50 %6llu us  p99 %6llu us  max %7llu us\n", (int)getpid(),
		       ph[p].name, n, (unsigned long long)pf, (unsigned long long)p50, (unsigned long long)p99,
		       (unsigned long long)mx);
		if (rep)
			fprintf(rep, "%s\n    {\"name\": \"%s\", \"ops\": %zu, \"failed\": %llu, \"p50_us\": %llu, \"p99_us\": %llu, \"max_us\": %llu}",
				nreported++ ? "," : "", ph[p].name, n,
				(unsigned long long)pf, (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)mx);
	}
	if (rep) {
		fprintf(rep, "\n  ],\n  \"errors\": [");
		for (int i = 0; i < nerrors; i++)
			fprintf(rep, "%s\n    \"%s\"", i ? "," : "", errors[i]);
		fprintf(rep, "\n  ]\n}\n");
		fclose(rep);
	}
	for (int i = 0; i < nerrors; i++)
		fprintf(stderr, "p11stress: %s\n", errors[i]);
	for (int t = 0; t < opt.ntok; t++)
		fl->C_CloseSession(ls[t]);
	fl->C_Finalize(NULL);
	if (fails > 0)
		return 1;
	if (ops == 0) {
		fprintf(stderr, "p11stress: error: no operation ran\n");
		return 1;
	}
	return 0;
}

/* ---------- save / check ---------- */

static void hex(FILE *f, const unsigned char *b, unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		fprintf(f, "%02x", b[i]);
}

static unsigned long unhex(const char *s, unsigned char *out, unsigned long max)
{
	unsigned long n = 0;
	unsigned int v;
	while (n < max && sscanf(s + 2 * n, "%2x", &v) == 1)
		out[n++] = (unsigned char)v;
	return n;
}

static ck_object_handle_t find_one(ck_session_handle_t s, ck_object_class_t cls, const char *label)
{
	struct ck_attribute t[] = {ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_LABEL, label, strlen(label))};
	ck_object_handle_t hs[2];
	unsigned long n = 0;
	ck_rv_t rv = fl->C_FindObjectsInit(s, t, 2);
	if (rv != CKR_OK)
		die("C_FindObjectsInit: %s", rvname(rv));
	rv = fl->C_FindObjects(s, hs, 2, &n);
	fl->C_FindObjectsFinal(s);
	if (rv != CKR_OK || n != 1)
		die("token key \"%s\" (class %lu): found %lu objects (%s), want 1", label, cls, n, rvname(rv));
	return hs[0];
}

static int run_save(void)
{
	FILE *f = fopen(opt.file, "w");
	if (!f)
		die("cannot create %s: %s", opt.file, strerror(errno));
	for (int t = 0; t < opt.ntok; t++) {
		ck_session_handle_t s = login(slots[t]);
		char label[64];
		ck_object_handle_t k, pub, priv;
		unsigned char iv[16], ct[PLAIN_LEN + 16], sig[128], digest[32];
		unsigned long ctlen = sizeof ct, siglen = sizeof sig;
		snprintf(label, sizeof label, "p11stress-saved-%d-%d", (int)getpid(), t);
		ck_rv_t rv = gen_aes(s, 1, label, &k);
		if (rv != CKR_OK)
			die("%s: generate token AES key: %s", opt.labels[t], rvname(rv));
		rv = gen_ec(s, 1, label, &pub, &priv);
		if (rv != CKR_OK)
			die("%s: generate token EC key pair: %s", opt.labels[t], rvname(rv));
		memset(iv, 0x5a, sizeof iv);
		rv = cbc(s, 1, k, iv, plain, PLAIN_LEN, ct, &ctlen);
		if (rv != CKR_OK)
			die("%s: encrypt: %s", opt.labels[t], rvname(rv));
		memset(digest, 0xd1, sizeof digest);
		rv = sign(s, CKM_ECDSA, priv, digest, sizeof digest, sig, &siglen);
		if (rv != CKR_OK)
			die("%s: sign: %s", opt.labels[t], rvname(rv));
		fprintf(f, "%s %s ", opt.labels[t], label);
		hex(f, iv, 16);
		fputc(' ', f);
		hex(f, ct, ctlen);
		fputc(' ', f);
		hex(f, sig, siglen);
		fputc('\n', f);
		printf("p11stress: %s: token keys \"%s\" encrypted %d bytes and signed a digest\n", opt.labels[t], label, PLAIN_LEN);
		fl->C_CloseSession(s);
	}
	if (fclose(f) != 0)
		die("write %s: %s", opt.file, strerror(errno));
	fl->C_Finalize(NULL);
	return 0;
}

static int run_check(void)
{
	FILE *f = fopen(opt.file, "r");
	if (!f)
		die("cannot read %s: %s", opt.file, strerror(errno));
	char tok[64], label[64], ivh[64], cth[2 * (PLAIN_LEN + 16) + 2], sigh[300];
	int lines = 0;
	while (fscanf(f, "%63s %63s %63s %2099s %299s", tok, label, ivh, cth, sigh) == 5) {
		lines++;
		int t;
		for (t = 0; t < opt.ntok && strcmp(opt.labels[t], tok) != 0; t++)
			;
		if (t == opt.ntok)
			die("%s names token \"%s\", which is not in --token", opt.file, tok);
		ck_session_handle_t s = login(slots[t]);
		unsigned char iv[16], ct[PLAIN_LEN + 16], sig[128], pt[PLAIN_LEN + 16], digest[32];
		unsigned long ctlen = unhex(cth, ct, sizeof ct), siglen = unhex(sigh, sig, sizeof sig), ptlen = sizeof pt;
		unhex(ivh, iv, sizeof iv);
		ck_object_handle_t k = find_one(s, CKO_SECRET_KEY, label);
		ck_rv_t rv = cbc(s, 0, k, iv, ct, ctlen, pt, &ptlen);
		if (rv != CKR_OK || ptlen != PLAIN_LEN || memcmp(pt, plain, PLAIN_LEN) != 0)
			die("%s: data encrypted earlier with \"%s\" does not decrypt: %s", tok, label,
			    rv == CKR_OK ? "wrong plaintext" : rvname(rv));
		memset(digest, 0xd1, sizeof digest);
		rv = verify(s, CKM_ECDSA, find_one(s, CKO_PUBLIC_KEY, label), digest, sizeof digest, sig, siglen);
		if (rv != CKR_OK)
			die("%s: the signature made earlier with \"%s\" does not verify: %s", tok, label, rvname(rv));
		/* The private key still signs, and that signature verifies. */
		siglen = sizeof sig;
		rv = sign(s, CKM_ECDSA, find_one(s, CKO_PRIVATE_KEY, label), digest, sizeof digest, sig, &siglen);
		if (rv == CKR_OK)
			rv = verify(s, CKM_ECDSA, find_one(s, CKO_PUBLIC_KEY, label), digest, sizeof digest, sig, siglen);
		if (rv != CKR_OK)
			die("%s: sign and verify with \"%s\": %s", tok, label, rvname(rv));
		printf("p11stress: %s: data encrypted earlier with token key \"%s\" decrypts, its signature verifies\n", tok, label);
		fl->C_CloseSession(s);
	}
	fclose(f);
	if (lines == 0)
		die("%s holds no saved data", opt.file);
	fl->C_Finalize(NULL);
	return 0;
}

/* ---------- bench ---------- */

/*
 * Each test starts from an empty token (every object the user sees is
 * destroyed first, outside the timing), makes the session keys it needs,
 * warms up, and then runs for opt.seconds: the timed window holds only the
 * operations, never C_OpenSession or C_Login. Beside wall time it reads the
 * process's CPU time (getrusage RUSAGE_SELF and RUSAGE_CHILDREN, user +
 * system) before and after the window, so an in-process module's whole
 * cost (its threads, its garbage collector, its helpers) is counted per
 * operation. Objects a test made on the token are destroyed afterwards, so
 * a module with an object cap (openCryptoki's soft token holds 2,048 token
 * objects) never fills up.
 */

#define BIG (64 * 1024)
#define PART (16 * 1024)

enum { NEED_AES = 1, NEED_EC = 2, NEED_RSA = 4, NEED_FIND = 8 };

struct bench_ctx {
	ck_session_handle_t s;
	ck_object_handle_t aes, ec, rsa;
	unsigned long len;     /* the input length of the AES tests */
	unsigned char *out;    /* BIG + 32 bytes of output, one per thread */
	ck_object_handle_t *made; /* token or session keys a keygen test made */
	unsigned long nmade, capmade;
	int fail;
	ck_rv_t lastrv;
};

typedef ck_rv_t (*bench_fn)(struct bench_ctx *c, unsigned long i);

static unsigned char bigbuf[BIG];

static ck_rv_t b_gcm(struct bench_ctx *c, unsigned long i)
{
	unsigned char iv[16] = {0};
	unsigned long n = BIG + 32;
	memcpy(iv, &i, sizeof i);
	return gcm(c->s, 1, c->aes, iv, bigbuf, c->len, c->out, &n);
}

static ck_rv_t b_cbc(struct bench_ctx *c, unsigned long i)
{
	unsigned char iv[16] = {0};
	unsigned long n = BIG + 32;
	memcpy(iv, &i, sizeof i);
	return cbc(c->s, 1, c->aes, iv, bigbuf, c->len, c->out, &n);
}

/* parts: C_EncryptInit, C_EncryptUpdate per PART bytes, C_EncryptFinal;
 * the output of every call goes after the previous one's. */
static ck_rv_t parts(struct bench_ctx *c, struct ck_mechanism *m)
{
	ck_rv_t rv = fl->C_EncryptInit(c->s, m, c->aes);
	unsigned long done = 0;
	for (unsigned long off = 0; rv == CKR_OK && off < c->len; off += PART) {
		unsigned long n = BIG + 32 - done, in = c->len - off < PART ? c->len - off : PART;
		rv = fl->C_EncryptUpdate(c->s, bigbuf + off, in, c->out + done, &n);
		done += n;
	}
	if (rv == CKR_OK) {
		unsigned long n = BIG + 32 - done;
		rv = fl->C_EncryptFinal(c->s, c->out + done, &n);
	}
	return rv;
}

static ck_rv_t b_gcm_parts(struct bench_ctx *c, unsigned long i)
{
	static unsigned char aad[] = "p11stress";
	unsigned char iv[16] = {0};
	memcpy(iv, &i, sizeof i);
	struct ck_gcm_params p = {iv, 12, 96, aad, sizeof aad - 1, 128};
	struct ck_mechanism m = {CKM_AES_GCM, &p, sizeof p};
	return parts(c, &m);
}

static ck_rv_t b_cbc_parts(struct bench_ctx *c, unsigned long i)
{
	unsigned char iv[16] = {0};
	memcpy(iv, &i, sizeof i);
	struct ck_mechanism m = {CKM_AES_CBC_PAD, iv, 16};
	return parts(c, &m);
}

static ck_rv_t b_ecdsa(struct bench_ctx *c, unsigned long i)
{
	unsigned char d[32] = {0}, sig[128];
	unsigned long n = sizeof sig;
	memcpy(d, &i, sizeof i);
	return sign(c->s, CKM_ECDSA, c->ec, d, sizeof d, sig, &n);
}

/* CKM_RSA_PKCS over a SHA-256 DigestInfo: what TLS stacks send, and the
 * one RSA signature every module here has (openCryptoki 3.8's soft token
 * lacks CKM_SHA256_RSA_PKCS). */
static ck_rv_t b_rsa(struct bench_ctx *c, unsigned long i)
{
	unsigned char d[51] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
	unsigned char sig[512];
	unsigned long n = sizeof sig;
	memcpy(d + 19, &i, sizeof i);
	return sign(c->s, CKM_RSA_PKCS, c->rsa, d, sizeof d, sig, &n);
}

static void made(struct bench_ctx *c, ck_object_handle_t h)
{
	if (c->nmade == c->capmade) {
		c->capmade = c->capmade ? c->capmade * 2 : 1024;
		c->made = realloc(c->made, c->capmade * sizeof *c->made);
		if (!c->made)
			die("out of memory");
	}
	c->made[c->nmade++] = h;
}

static ck_rv_t keygen(struct bench_ctx *c, unsigned long i, int token)
{
	char label[48];
	ck_object_handle_t h;
	snprintf(label, sizeof label, "p11stress-bench-key-%lu", i);
	ck_rv_t rv = gen_aes(c->s, token, label, &h);
	if (rv == CKR_OK)
		made(c, h);
	return rv;
}

static ck_rv_t b_keygen_session(struct bench_ctx *c, unsigned long i) { return keygen(c, i, 0); }
static ck_rv_t b_keygen_token(struct bench_ctx *c, unsigned long i) { return keygen(c, i, 1); }

static ck_rv_t b_find(struct bench_ctx *c, unsigned long i)
{
	char label[48];
	ck_object_class_t cls = CKO_DATA;
	snprintf(label, sizeof label, "p11stress-find-%05lu", (i * 7919) % (unsigned long)opt.objects);
	struct ck_attribute t[] = {ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_LABEL, label, strlen(label))};
	ck_object_handle_t hs[2];
	unsigned long n = 0;
	ck_rv_t rv = fl->C_FindObjectsInit(c->s, t, 2);
	if (rv != CKR_OK)
		return rv;
	rv = fl->C_FindObjects(c->s, hs, 2, &n);
	fl->C_FindObjectsFinal(c->s);
	if (rv == CKR_OK && n != 1)
		rv = CKR_GENERAL_ERROR; /* exactly one object has that label */
	return rv;
}

static ck_rv_t b_find_all(struct bench_ctx *c, unsigned long i)
{
	ck_object_class_t cls = CKO_DATA;
	struct ck_attribute t[] = {ATTR(CKA_CLASS, &cls, sizeof cls)};
	ck_object_handle_t hs[1000];
	unsigned long n = 0, total = 0;
	(void)i;
	ck_rv_t rv = fl->C_FindObjectsInit(c->s, t, 1);
	if (rv != CKR_OK)
		return rv;
	do {
		rv = fl->C_FindObjects(c->s, hs, 1000, &n);
		total += n;
	} while (rv == CKR_OK && n > 0);
	fl->C_FindObjectsFinal(c->s);
	if (rv == CKR_OK && total != (unsigned long)opt.objects)
		rv = CKR_GENERAL_ERROR;
	return rv;
}

static ck_rv_t b_login(struct bench_ctx *c, unsigned long i)
{
	(void)i;
	ck_rv_t rv = fl->C_Logout(c->s);
	if (rv != CKR_OK)
		return rv;
	return fl->C_Login(c->s, CKU_USER, pin, pinlen);
}

static const struct bench_test {
	const char *name;
	bench_fn fn;
	unsigned long len;
	int threads, needs;
	unsigned long maxops; /* 0: as many as fit in opt.seconds */
} bench_tests[] = {
	{"aes-gcm-64", b_gcm, 64, 1, NEED_AES, 0},
	{"aes-gcm-1k", b_gcm, 1024, 1, NEED_AES, 0},
	{"aes-gcm-64k", b_gcm, BIG, 1, NEED_AES, 0},
	{"aes-gcm-64k-parts", b_gcm_parts, BIG, 1, NEED_AES, 0},
	{"aes-cbc-pad-64", b_cbc, 64, 1, NEED_AES, 0},
	{"aes-cbc-pad-1k", b_cbc, 1024, 1, NEED_AES, 0},
	{"aes-cbc-pad-64k", b_cbc, BIG, 1, NEED_AES, 0},
	{"aes-cbc-pad-64k-parts", b_cbc_parts, BIG, 1, NEED_AES, 0},
	{"ecdsa-p256-sign", b_ecdsa, 0, 1, NEED_EC, 0},
	{"rsa2048-sign", b_rsa, 0, 1, NEED_RSA, 0},
	{"aes-keygen-session", b_keygen_session, 0, 1, 0, 1000},
	{"aes-keygen-token", b_keygen_token, 0, 1, 0, 1000},
	{"find", b_find, 0, 1, NEED_FIND, 0},
	{"find-all", b_find_all, 0, 1, NEED_FIND, 0},
	{"2threads-aes-gcm-1k", b_gcm, 1024, 2, NEED_AES, 0},
	{"2threads-ecdsa-p256-sign", b_ecdsa, 0, 2, NEED_EC, 0},
	{"login", b_login, 0, 1, 0, 0},
};

struct bench_thread {
	pthread_t th;
	struct bench_ctx c;
	bench_fn fn;
	int64_t until;
	unsigned long ops, maxops;
};

static void *bench_loop(void *arg)
{
	struct bench_thread *b = arg;
	for (unsigned long i = 0; mono_ns() < b->until && (b->maxops == 0 || i < b->maxops); i++) {
		ck_rv_t rv = b->fn(&b->c, i);
		if (rv != CKR_OK) {
			b->c.fail++;
			b->c.lastrv = rv;
			break;
		}
		b->ops++;
	}
	return NULL;
}

static int selected(const char *name)
{
	if (!opt.only)
		return 1;
	size_t n = strlen(name);
	for (const char *p = opt.only; (p = strstr(p, name)) != NULL; p += n)
		if ((p == opt.only || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return 1;
	return 0;
}

/* cpu_us is the CPU time (user + system) of this process and its reaped
 * children so far, in microseconds. */
static double cpu_us(void)
{
	struct rusage self, kids;
	getrusage(RUSAGE_SELF, &self);
	getrusage(RUSAGE_CHILDREN, &kids);
	double us = 0;
	struct timeval *tv[] = {&self.ru_utime, &self.ru_stime, &kids.ru_utime, &kids.ru_stime};
	for (int i = 0; i < 4; i++)
		us += (double)tv[i]->tv_sec * 1e6 + (double)tv[i]->tv_usec;
	return us;
}

/* empty_token destroys every object the logged-in user sees: each test
 * starts from an empty token. */
static void empty_token(ck_session_handle_t s)
{
	ck_object_handle_t hs[1000];
	unsigned long n = 0, gone = 0;
	do {
		ck_rv_t rv = fl->C_FindObjectsInit(s, NULL, 0);
		if (rv != CKR_OK)
			die("C_FindObjectsInit(all): %s", rvname(rv));
		rv = fl->C_FindObjects(s, hs, 1000, &n);
		fl->C_FindObjectsFinal(s);
		if (rv != CKR_OK)
			die("C_FindObjects(all): %s", rvname(rv));
		for (unsigned long i = 0; i < n; i++) {
			if ((rv = fl->C_DestroyObject(s, hs[i])) != CKR_OK)
				die("emptying the token: C_DestroyObject: %s", rvname(rv));
			gone++;
		}
	} while (n > 0);
	if (gone)
		fprintf(stderr, "p11stress: destroyed %lu objects left on the token\n", gone);
}

/* find_objects creates opt.objects token data objects for the find tests;
 * a module that refuses one (openCryptoki's cap) makes the tests n/a. */
static int find_objects(struct bench_ctx *c, char *why, size_t whylen)
{
	ck_object_class_t cls = CKO_DATA;
	for (unsigned long i = 0; i < (unsigned long)opt.objects; i++) {
		char label[48], val[32];
		ck_object_handle_t h;
		snprintf(label, sizeof label, "p11stress-find-%05lu", i);
		snprintf(val, sizeof val, "object %lu", i);
		struct ck_attribute ct[] = {
			ATTR(CKA_CLASS, &cls, sizeof cls),   ATTR(CKA_TOKEN, &yes, 1),
			ATTR(CKA_PRIVATE, &no, 1),           ATTR(CKA_LABEL, label, strlen(label)),
			ATTR(CKA_VALUE, val, strlen(val)),
		};
		ck_rv_t rv = fl->C_CreateObject(c->s, ct, 5, &h);
		if (rv != CKR_OK) {
			snprintf(why, whylen, "C_CreateObject fails at object %lu: %s", i, rvname(rv));
			return 0;
		}
		made(c, h);
	}
	return 1;
}

static void destroy_made(struct bench_ctx *c)
{
	for (unsigned long i = 0; i < c->nmade; i++)
		fl->C_DestroyObject(c->s, c->made[i]);
	c->nmade = 0;
}

/* bench_one prints "name <tab> ops/s <tab> wall us/op <tab> CPU us/op <tab>
 * p99 us <tab> ops" (p99 single-thread only), or "name <tab> n/a <tab> why"
 * for what the module lacks, or "name <tab> FAILED <tab> CKR_...". */
static int bench_one(const struct bench_test *bt, ck_session_handle_t s)
{
	struct bench_ctx base = {.s = s, .len = bt->len};
	ck_object_handle_t pub;
	ck_rv_t rv = CKR_OK;
	char why[128] = "";
	empty_token(s);
	if (bt->needs & NEED_AES) {
		ck_object_class_t cls = CKO_SECRET_KEY;
		ck_key_type_t kt = CKK_AES;
		unsigned long len = 32;
		struct ck_attribute t[] = {
			ATTR(CKA_CLASS, &cls, sizeof cls), ATTR(CKA_KEY_TYPE, &kt, sizeof kt), ATTR(CKA_VALUE_LEN, &len, sizeof len),
			ATTR(CKA_TOKEN, &no, 1),           ATTR(CKA_ENCRYPT, &yes, 1),         ATTR(CKA_DECRYPT, &yes, 1),
			ATTR(CKA_SENSITIVE, &yes, 1),
		};
		struct ck_mechanism m = {CKM_AES_KEY_GEN, NULL, 0};
		if ((rv = fl->C_GenerateKey(s, &m, t, 7, &base.aes)) != CKR_OK)
			snprintf(why, sizeof why, "AES key: %s", rvname(rv));
	}
	if (!why[0] && (bt->needs & NEED_EC) && (rv = gen_ec(s, 0, "p11stress-bench", &pub, &base.ec)) != CKR_OK)
		snprintf(why, sizeof why, "EC key pair: %s", rvname(rv));
	if (!why[0] && (bt->needs & NEED_RSA) && (rv = gen_rsa(s, &pub, &base.rsa)) != CKR_OK)
		snprintf(why, sizeof why, "RSA key pair: %s", rvname(rv));
	if (why[0]) {
		printf("%s\t%s\t%s\n", bt->name, rv == CKR_MECHANISM_INVALID ? "n/a" : "FAILED", why);
		return rv != CKR_MECHANISM_INVALID;
	}
	if ((bt->needs & NEED_FIND) && !find_objects(&base, why, sizeof why)) {
		destroy_made(&base);
		printf("%s\tn/a\t%s\n", bt->name, why);
		return 0;
	}
	unsigned long nfind = base.nmade;
	/* Warm-up outside the timing: caches, first-call thread binding. A
	 * mechanism the module lacks (openCryptoki's soft token has no EC, no
	 * GCM) is a line of its own, not a failure. */
	base.out = malloc(BIG + 32);
	for (unsigned long i = 0; i < 3 && rv == CKR_OK; i++)
		rv = bt->fn(&base, 900000 + i);
	if (rv != CKR_OK) {
		printf("%s\t%s\t%s\n", bt->name, rv == CKR_MECHANISM_INVALID ? "n/a" : "FAILED", rvname(rv));
		destroy_made(&base);
		free(base.out);
		return rv != CKR_MECHANISM_INVALID;
	}
	struct bench_thread th[2] = {0};
	for (int t = 0; t < bt->threads; t++) {
		th[t].c = base;
		th[t].c.made = NULL, th[t].c.nmade = th[t].c.capmade = 0;
		th[t].fn = bt->fn, th[t].maxops = bt->maxops;
		if (t > 0) {
			th[t].c.out = malloc(BIG + 32);
			if ((rv = fl->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &th[t].c.s)) != CKR_OK)
				die("C_OpenSession: %s", rvname(rv));
		}
	}
	size_t cap = 1 << 16, n = 0;
	uint32_t *lat = malloc(cap * sizeof *lat);
	double cpu0 = cpu_us();
	int64_t start = mono_ns(), until = start + (int64_t)(opt.seconds * 1e9);
	if (bt->threads == 1) {
		struct bench_ctx *c = &th[0].c;
		for (unsigned long i = 0; mono_ns() < until && (bt->maxops == 0 || i < bt->maxops); i++) {
			int64_t t0 = mono_ns();
			if ((rv = bt->fn(c, i)) != CKR_OK) {
				c->fail++, c->lastrv = rv;
				break;
			}
			if (n == cap)
				lat = realloc(lat, (cap *= 2) * sizeof *lat);
			lat[n++] = (uint32_t)(mono_ns() - t0);
		}
		th[0].ops = n;
	} else {
		for (int t = 0; t < bt->threads; t++) {
			th[t].until = until;
			pthread_create(&th[t].th, NULL, bench_loop, &th[t]);
		}
		for (int t = 0; t < bt->threads; t++)
			pthread_join(th[t].th, NULL);
	}
	double secs = (double)(mono_ns() - start) / 1e9, cpu = cpu_us() - cpu0;
	unsigned long ops = 0;
	int bad = 0;
	for (int t = 0; t < bt->threads; t++) {
		ops += th[t].ops;
		if (th[t].c.fail)
			bad = 1, rv = th[t].c.lastrv;
		destroy_made(&th[t].c);
		free(th[t].c.made);
		if (t > 0) {
			fl->C_CloseSession(th[t].c.s);
			free(th[t].c.out);
		}
	}
	base.nmade = nfind;
	destroy_made(&base); /* the find objects and the warm-up's keys */
	free(base.made);
	free(base.out);
	if (bad || ops == 0) {
		printf("%s\tFAILED\t%s\n", bt->name, rvname(rv));
		free(lat);
		return 1;
	}
	char p99[32] = "-";
	if (bt->threads == 1) {
		qsort(lat, n, sizeof *lat, cmp_u32);
		snprintf(p99, sizeof p99, "%.1f", lat[n * 99 / 100] / 1e3);
	}
	free(lat);
	printf("%s\t%.1f\t%.2f\t%.2f\t%s\t%lu\n", bt->name, (double)ops / secs, secs * 1e6 * bt->threads / (double)ops,
	       cpu / (double)ops, p99, ops);
	fflush(stdout);
	return 0;
}

static int run_bench(void)
{
	ck_session_handle_t s = login(slots[0]);
	printf("test\tops_per_s\twall_us_per_op\tcpu_us_per_op\tp99_us\tops\n");
	int bad = 0, any = 0;
	for (size_t i = 0; i < sizeof bench_tests / sizeof bench_tests[0]; i++)
		if (selected(bench_tests[i].name)) {
			bad |= bench_one(&bench_tests[i], s);
			any = 1;
		}
	if (!any)
		die("--only %s names no test", opt.only);
	fl->C_CloseSession(s);
	fl->C_Finalize(NULL);
	return bad;
}

/* ---------- main ---------- */

static void usage(void)
{
	fprintf(stderr, "usage: p11stress load|save|check|bench --module SO --token LABEL[,LABEL...] [options] < pin\n"
			"hint: see the comment at the top of testdata/clients/p11stress.c\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static struct option lo[] = {
		{"module", 1, 0, 'm'}, {"token", 1, 0, 't'},  {"threads", 1, 0, 'n'}, {"duration", 1, 0, 'd'},
		{"ready", 1, 0, 'r'},  {"report", 1, 0, 'o'}, {"phases", 1, 0, 'p'},  {"file", 1, 0, 'f'},
		{"seconds", 1, 0, 's'}, {"objects", 1, 0, 'N'}, {"only", 1, 0, 'O'}, {"keys-every", 1, 0, 'k'},
		{"progress", 1, 0, 'P'},
		{0, 0, 0, 0},
	};
	if (argc < 2)
		usage();
	opt.mode = argv[1];
	optind = 2;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'm': opt.module = optarg; break;
		case 't':
			for (char *tok = strtok(optarg, ","); tok && opt.ntok < MAXTOK; tok = strtok(NULL, ","))
				opt.labels[opt.ntok++] = tok;
			break;
		case 'n': opt.threads = atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'r': opt.ready = optarg; break;
		case 'o': opt.report = optarg; break;
		case 'p': opt.phases = optarg; break;
		case 'f': opt.file = optarg; break;
		case 's': opt.seconds = atof(optarg); break;
		case 'N': opt.objects = atoi(optarg); break;
		case 'O': opt.only = optarg; break;
		case 'k': opt.keys_every = atoi(optarg); break;
		case 'P': opt.progress = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || !opt.module || opt.ntok == 0 || opt.threads < 1 || opt.objects < 1)
		usage();
	int mode = strcmp(opt.mode, "load") == 0 ? 1 : strcmp(opt.mode, "save") == 0 ? 2 : strcmp(opt.mode, "check") == 0 ? 3 : strcmp(opt.mode, "bench") == 0 ? 4 : 0;
	if (!mode || ((mode == 2 || mode == 3) && !opt.file))
		usage();
	for (int i = 0; i < PLAIN_LEN; i++)
		plain[i] = (unsigned char)"p11stress!"[i % 10];
	for (size_t i = 0; i < sizeof bigbuf; i++)
		bigbuf[i] = (unsigned char)i;
	read_pin();
	load_module();
	find_slots();
	switch (mode) {
	case 1: return run_load();
	case 2: return run_save();
	case 3: return run_check();
	default: return run_bench();
	}
}
