/* Transport of the host-library doubles: frames to and from the server
 * processes. See hostdouble.h for the model and the configuration. */
#define _GNU_SOURCE
#include "hostdouble.h"

#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

_Static_assert(sizeof(long) == 8 && sizeof(size_t) == 8,
	       "the doubles support LP64 targets only (amd64, arm64, s390x)");

#define HD_MAX_CONNS 8

struct hd_conn {
	pthread_mutex_t mu;
	int fd;
	pid_t child;
	pid_t owner; /* the process that started child */
	uint32_t next_id;
};

static struct hd_conn conns[HD_MAX_CONNS];
static int nconns;
static pthread_once_t once = PTHREAD_ONCE_INIT;

__thread int hd_cca_sel_card = -1;
int hd_cca_sel_domain = -1;

static void reset_all(void)
{
	for (int i = 0; i < HD_MAX_CONNS; i++) {
		pthread_mutex_init(&conns[i].mu, NULL);
		/* The descriptors belong to the parent's servers: close our
		 * copies, never signal those processes. */
		if (conns[i].fd >= 0)
			close(conns[i].fd);
		conns[i].fd = -1;
		conns[i].child = 0;
		conns[i].owner = 0;
	}
}

static void init_once(void)
{
	const char *v = getenv("PKCSHSM_HOSTDOUBLE_CONNS");
	nconns = 4;
	if (v && *v) {
		int n = atoi(v);
		if (n >= 1 && n <= HD_MAX_CONNS)
			nconns = n;
		else
			fprintf(stderr, "host-library double: PKCSHSM_HOSTDOUBLE_CONNS=%s is not 1..%d; using 4\n",
				v, HD_MAX_CONNS);
	}
	for (int i = 0; i < HD_MAX_CONNS; i++)
		conns[i].fd = -1;
	reset_all();
	pthread_atfork(NULL, NULL, reset_all);
}

void hd_put_be16(unsigned char *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

void hd_put_be32(unsigned char *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = v;
}

void hd_put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = v;
}

static uint64_t get_be(const unsigned char *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

static unsigned char *grow(struct hd_req *r, size_t n)
{
	if (r->oom)
		return NULL;
	if (r->len + n > r->cap) {
		size_t c = r->cap ? r->cap : 256;
		while (c < r->len + n)
			c *= 2;
		unsigned char *b = realloc(r->buf, c);
		if (!b) {
			r->oom = 1;
			return NULL;
		}
		r->buf = b;
		r->cap = c;
	}
	unsigned char *p = r->buf + r->len;
	r->len += n;
	return p;
}

static int little_endian(void)
{
	uint16_t x = 1;
	return *(unsigned char *)&x == 1;
}

void hd_begin(struct hd_req *r, int lib, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->lib = lib;
	r->name = name;
	size_t nl = strlen(name);
	unsigned char *p = grow(r, 4 + 4 + 1 + 1 + 1 + nl + 4 + 4 + 2);
	if (!p)
		return;
	/* length and id are filled in by hd_call */
	p[8] = lib;
	p[9] = little_endian() ? 1 : 0;
	p[10] = nl;
	memcpy(p + 11, name, nl);
	hd_put_be32(p + 11 + nl, (uint32_t)(lib == HD_LIB_CCA ? hd_cca_sel_card : -1));
	hd_put_be32(p + 15 + nl, (uint32_t)(lib == HD_LIB_CCA ? hd_cca_sel_domain : -1));
	/* argument count at the end, patched in hd_call */
}

static struct hd_slot *slot(struct hd_req *r)
{
	if (r->nargs >= HD_MAX_ARGS) {
		r->oom = 1;
		return NULL;
	}
	return &r->slots[r->nargs++];
}

void hd_arg_null(struct hd_req *r)
{
	unsigned char *p = grow(r, 1);
	if (slot(r) && p)
		p[0] = 0;
}

void hd_arg_long(struct hd_req *r, void *ptr)
{
	struct hd_slot *s = slot(r);
	if (!ptr) {
		unsigned char *p = grow(r, 1);
		if (p)
			p[0] = 0;
		return;
	}
	unsigned char *p = grow(r, 9);
	if (!p || !s)
		return;
	p[0] = 1;
	hd_put_be64(p + 1, (uint64_t) * (long *)ptr);
	s->kind = HD_S_LONG;
	s->ptr = ptr;
}

void hd_arg_val(struct hd_req *r, int64_t v)
{
	unsigned char *p = grow(r, 9);
	if (!slot(r) || !p)
		return;
	p[0] = 1;
	hd_put_be64(p + 1, (uint64_t)v);
}

static int unreadable(struct hd_req *r, long n)
{
	if (n >= 0 && n <= HD_MAX_BUFFER)
		return 0;
	unsigned char *p = grow(r, 9);
	if (slot(r) && p) {
		p[0] = 5;
		hd_put_be64(p + 1, (uint64_t)n);
	}
	return 1;
}

void hd_arg_in(struct hd_req *r, const void *ptr, long n)
{
	if (!ptr) {
		hd_arg_null(r);
		return;
	}
	if (unreadable(r, n))
		return;
	unsigned char *p = grow(r, 5 + n);
	if (!slot(r) || !p)
		return;
	p[0] = 2;
	hd_put_be32(p + 1, n);
	memcpy(p + 5, ptr, n);
}

void hd_arg_bytes(struct hd_req *r, const void *ptr, size_t n)
{
	hd_arg_in(r, ptr ? ptr : "", (long)n);
}

void hd_arg_out(struct hd_req *r, void *ptr, long cap)
{
	if (!ptr) {
		hd_arg_null(r);
		return;
	}
	if (unreadable(r, cap))
		return;
	unsigned char *p = grow(r, 5);
	struct hd_slot *s = slot(r);
	if (!s || !p)
		return;
	p[0] = 3;
	hd_put_be32(p + 1, cap);
	s->kind = HD_S_BUF;
	s->ptr = ptr;
	s->cap = cap;
}

void hd_arg_inout(struct hd_req *r, void *ptr, long n, long cap)
{
	if (!ptr) {
		hd_arg_null(r);
		return;
	}
	if (n > cap)
		n = cap;
	if (unreadable(r, n) || unreadable(r, cap))
		return;
	unsigned char *p = grow(r, 9 + n);
	struct hd_slot *s = slot(r);
	if (!s || !p)
		return;
	p[0] = 4;
	hd_put_be32(p + 1, cap);
	hd_put_be32(p + 5, n);
	memcpy(p + 9, ptr, n);
	s->kind = HD_S_BUF;
	s->ptr = ptr;
	s->cap = cap;
}

void hd_free(struct hd_req *r)
{
	free(r->buf);
	r->buf = NULL;
}

static const char *lib_name(int lib)
{
	return lib == HD_LIB_CCA ? "cca" : "ep11";
}

static int spawn_server(struct hd_conn *c, int lib)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "host-library double: socketpair: %s\n", strerror(errno));
		return -1;
	}
	const char *bin = getenv("PKCSHSM_HOSTDOUBLE_HSMSIM");
	const char *dir = getenv("PKCSHSM_SIM_DIR");
	char *argv[8];
	int a = 0;
	argv[a++] = (char *)(bin && *bin ? bin : "hsmsim");
	if (dir && *dir) {
		argv[a++] = "--dir";
		argv[a++] = (char *)dir;
	}
	argv[a++] = "host-double";
	argv[a++] = "--lib";
	argv[a++] = (char *)lib_name(lib);
	argv[a] = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
	pid_t pid;
	int err = bin && *bin ? posix_spawn(&pid, argv[0], &fa, NULL, argv, environ)
			      : posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	if (err) {
		fprintf(stderr,
			"host-library double: cannot start %s: %s (set PKCSHSM_HOSTDOUBLE_HSMSIM to the hsmsim binary)\n",
			argv[0], strerror(err));
		close(sv[0]);
		return -1;
	}
	c->fd = sv[0];
	c->child = pid;
	c->owner = getpid();
	return 0;
}

static void drop(struct hd_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->child > 0 && c->owner == getpid())
		waitpid(c->child, NULL, WNOHANG);
	c->fd = -1;
	c->child = 0;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= w;
	}
	return 0;
}

static int read_all(int fd, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t g = read(fd, p, n);
		if (g < 0 && errno == EINTR)
			continue;
		if (g <= 0)
			return -1;
		p += g;
		n -= g;
	}
	return 0;
}

static struct hd_conn *acquire(void)
{
	for (int i = 0; i < nconns; i++)
		if (pthread_mutex_trylock(&conns[i].mu) == 0)
			return &conns[i];
	struct hd_conn *c = &conns[(unsigned long)syscall(SYS_gettid) % nconns];
	pthread_mutex_lock(&c->mu);
	return c;
}

/* apply writes the response's outputs through the argument pointers, after
 * checking every one fits. */
static int apply(struct hd_req *r, const unsigned char *b, size_t n, uint64_t *ret)
{
	if (n < 14)
		return -1;
	*ret = get_be(b + 4, 8);
	unsigned cnt = get_be(b + 12, 2);
	size_t off = 14;
	/* First pass: validate. */
	for (unsigned i = 0; i < cnt; i++) {
		if (off + 3 > n)
			return -1;
		unsigned idx = get_be(b + off, 2);
		int kind = b[off + 2];
		off += 3;
		if (kind == 1) {
			if (off + 8 > n)
				return -1;
			if (idx < 0xfffe && (idx >= (unsigned)r->nargs || r->slots[idx].kind != HD_S_LONG))
				return -1;
			off += 8;
		} else if (kind == 2) {
			if (off + 4 > n)
				return -1;
			size_t l = get_be(b + off, 4);
			off += 4;
			if (off + l > n || idx >= (unsigned)r->nargs || r->slots[idx].kind != HD_S_BUF ||
			    l > r->slots[idx].cap)
				return -1;
			off += l;
		} else {
			return -1;
		}
	}
	if (off != n)
		return -1;
	off = 14;
	for (unsigned i = 0; i < cnt; i++) {
		unsigned idx = get_be(b + off, 2);
		int kind = b[off + 2];
		off += 3;
		if (kind == 1) {
			int64_t v = (int64_t)get_be(b + off, 8);
			off += 8;
			if (idx == 0xffff)
				hd_cca_sel_card = (int)v;
			else if (idx == 0xfffe)
				hd_cca_sel_domain = (int)v;
			else
				*(long *)r->slots[idx].ptr = (long)v;
		} else {
			size_t l = get_be(b + off, 4);
			off += 4;
			memcpy(r->slots[idx].ptr, b + off, l);
			off += l;
		}
	}
	return 0;
}

int hd_call(struct hd_req *r, uint64_t *ret)
{
	pthread_once(&once, init_once);
	unsigned char *p = grow(r, 0);
	(void)p;
	if (r->oom || !r->buf) {
		fprintf(stderr, "host-library double: %s: out of memory or too many arguments\n", r->name);
		hd_free(r);
		return -1;
	}
	/* patch the argument count: it sits right after the header */
	size_t nl = strlen(r->name);
	size_t argc_at = 11 + nl + 8;
	/* the arguments were appended after the 2-byte count slot */
	hd_put_be16(r->buf + argc_at, r->nargs);
	struct hd_conn *c = acquire();
	int rv = -1;
	unsigned char *resp = NULL;
	if (c->fd >= 0 && c->owner != getpid()) {
		/* a fork child that bypassed pthread_atfork (e.g. clone) */
		c->fd = -1;
		c->child = 0;
	}
	if (c->fd < 0 && spawn_server(c, r->lib) < 0)
		goto out;
	uint32_t id = ++c->next_id;
	hd_put_be32(r->buf, r->len - 4);
	hd_put_be32(r->buf + 4, id);
	unsigned char hdr[4];
	if (write_all(c->fd, r->buf, r->len) < 0 || read_all(c->fd, hdr, 4) < 0) {
		fprintf(stderr, "host-library double: %s: the server (pid %d) went away; see its messages above\n",
			r->name, (int)c->child);
		drop(c);
		goto out;
	}
	size_t n = get_be(hdr, 4);
	if (n > (4u << 20) || n < 14 || !(resp = malloc(n)) || read_all(c->fd, resp, n) < 0 ||
	    get_be(resp, 4) != id) {
		fprintf(stderr, "host-library double: %s: bad response from the server\n", r->name);
		drop(c);
		goto out;
	}
	if (apply(r, resp, n, ret) < 0) {
		fprintf(stderr, "host-library double: %s: the server's response does not fit the arguments\n",
			r->name);
		drop(c);
		goto out;
	}
	rv = 0;
out:
	pthread_mutex_unlock(&c->mu);
	free(resp);
	hd_free(r);
	return rv;
}
