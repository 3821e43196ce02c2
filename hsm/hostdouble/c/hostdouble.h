/*
 * Test doubles of IBM's crypto host libraries, for pkcshsm's tests only.
 *
 *   libcsulcca.so   the CCA host library (verbs CSUACFQ, CSNBKTC2, ...)
 *   libep11.so      the EP11 host library (m_init, m_GenerateKey, ...),
 *                   also as libep11.so.4 .. libep11.so.1 (the names
 *                   openCryptoki and the pkcshsm loader try first)
 *
 * Built by `make host-doubles` into build/host-doubles/. NEVER install
 * them on a machine with real adapters: they drive the simulator.
 *
 * Each exported function has the C signature IBM documents (the CCA Basic
 * Services Reference for Linux on IBM Z, the EP11 host library headers as
 * openCryptoki ships them: csulincl.h, ep11.h, ep11adm.h; summarised in
 * the project's reference notes, host-libraries.md §1, §2). It marshals
 * its arguments into a frame (hsm/hostdouble/frame.go, every header field
 * big-endian) and sends it to a server process that runs pkcshsm's
 * simulator (hsm/sim), so the doubles act on the adapters, master key
 * registers and sysfs view `hsmsim` drives. The server checks each call
 * as the real library documents and answers with the documented codes;
 * this file only moves bytes.
 *
 * Configuration (environment of the process that loads the library):
 *
 *   PKCSHSM_HOSTDOUBLE_HSMSIM  path of the hsmsim binary that serves the
 *                              calls (`hsmsim host-double --lib cca|ep11`);
 *                              unset: "hsmsim" from PATH
 *   PKCSHSM_SIM_DIR            the simulator directory (hsmsim --dir);
 *                              unset: hsmsim's default,
 *                              $PKCSHSM_ROOT/var/lib/pkcshsm/sim
 *   PKCSHSM_HOSTDOUBLE_CONNS   server processes per client process, 1..8
 *                              (default 4): how many calls can be in flight
 *                              at once
 *   CSU_DEFAULT_ADAPTER        CCA: CRPnn or DEV-ANY (default: CRP01, the
 *                              first CCA coprocessor)
 *   CSU_DEFAULT_DOMAIN         CCA: a domain number or DOM-ANY (default:
 *                              the lowest domain of the coprocessor)
 *
 * Concurrency: the library keeps up to PKCSHSM_HOSTDOUBLE_CONNS server
 * processes, each on its own socketpair, started lazily; a call takes a
 * free connection (or waits for one), so that many calls run in parallel,
 * each server answering one at a time. CCA selection state lives here, as
 * IBM scopes it: the coprocessor allocated with CSUACRA per thread
 * (thread-local), the domain per process; it is sent with every call, so
 * any server can answer any call. EP11 targets (m_add_module) are kept
 * here too and sent as APQN lists. EP11 sessions (m_Login) live in the
 * simulator's shared state.
 *
 * fork: a child never uses its parent's servers. A pthread_atfork child
 * handler forgets them (and resets the locks); each call also compares
 * getpid() with the pid that started the connection's server. The child
 * starts its own servers on its first call.
 *
 * Transport failures (no server binary, a server that died, a frame that
 * does not fit) are reported as CCA 12/338 ("device driver not installed
 * or not responding") or EP11 CKR_IBM_TRANSPORT_ERROR (0x80010003), with
 * one line on stderr naming the cause.
 *
 * CCA DATA tokens: the real DES/AES DATA token is 64 bytes. The
 * simulator's is the same 64-byte header followed by the sealed key
 * (hsm/blob.go): 64 + 28 + key bytes. The fixed-size token parameters of
 * CSNBKGN, CSNBENC, CSNBDEC and CSNBKTC are therefore read as that many
 * bytes (the key byte count is the BE16 at offset 58), and CSNBKGN writes
 * HD_CCA_DES_TOKEN_LEN bytes.
 */
#ifndef PKCSHSM_HOSTDOUBLE_H
#define PKCSHSM_HOSTDOUBLE_H

#include <stddef.h>
#include <stdint.h>

#define HD_LIB_CCA 1
#define HD_LIB_EP11 2

#define HD_CCA_DES_TOKEN_LEN (64 + 28 + 24)
#define HD_CCA_DATA_TOKEN_MAX (64 + 28 + 32)

#define HD_MAX_ARGS 64
#define HD_MAX_BUFFER (1L << 20)

enum hd_slot_kind { HD_S_NONE, HD_S_LONG, HD_S_BUF, HD_S_ULONG32 };

struct hd_slot {
	int kind;
	void *ptr;
	size_t cap;
};

struct hd_req {
	unsigned char *buf;
	size_t len, cap;
	int nargs;
	int oom;
	struct hd_slot slots[HD_MAX_ARGS];
	const char *name;
	int lib;
};

void hd_begin(struct hd_req *r, int lib, const char *name);
void hd_arg_null(struct hd_req *r);
/* long*, size_t* or CK_ULONG* (all 8 bytes on the supported targets):
 * sent as its value, written back if the server returns one. */
void hd_arg_long(struct hd_req *r, void *p);
/* An integer passed by value. */
void hd_arg_val(struct hd_req *r, int64_t v);
/* Buffers; n or cap < 0 or over HD_MAX_BUFFER: sent as unreadable. */
void hd_arg_in(struct hd_req *r, const void *p, long n);
void hd_arg_out(struct hd_req *r, void *p, long cap);
void hd_arg_inout(struct hd_req *r, void *p, long n, long cap);
/* Raw bytes built here (flattened structures), no write-back. */
void hd_arg_bytes(struct hd_req *r, const void *p, size_t n);
/* Runs the call; 0 on success (*ret = the function's return value),
 * -1 on a transport failure (a line went to stderr). Frees r. */
int hd_call(struct hd_req *r, uint64_t *ret);
void hd_free(struct hd_req *r);

/* CCA selection state (CSUACRA/CSUACRD). */
extern __thread int hd_cca_sel_card;
extern int hd_cca_sel_domain;

/* Big-endian helpers for flattening. */
void hd_put_be16(unsigned char *p, uint16_t v);
void hd_put_be32(unsigned char *p, uint32_t v);
void hd_put_be64(unsigned char *p, uint64_t v);

#endif
