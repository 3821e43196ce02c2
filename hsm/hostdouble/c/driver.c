/* Test driver for the host-library doubles (test only, built by
 * hsm/hostdouble's tests). It dlopens a library and runs calls read from
 * standard input, one per line, printing one line per call:
 *
 *   call NAME ARG...          run NAME in this thread
 *   thread call NAME ARG...   run it in a new thread (joined)
 *   fork call NAME ARG...     run it in a fork child (waited for)
 *   par N call NAME ARG...    run it in N threads at once; the N answers
 *                             on one line, separated by " | "
 *
 * Every CCA and EP11 parameter is a pointer or a 64-bit integer, which the
 * LP64 ABIs (amd64, s390x) pass alike, so one generic caller serves every
 * function. ARG is one of:
 *
 *   n                  NULL
 *   l:DEC              pointer to a long (also size_t*, CK_ULONG*) holding DEC
 *   v:DEC|0xHEX        the integer itself, by value
 *   b:HEX              pointer to a copy of the bytes
 *   o:N                pointer to N zero bytes (printed afterwards)
 *   io:HEX:N           pointer to N bytes starting with HEX (printed afterwards)
 *   k:KW,KW            rule array of 8-byte blank-padded keywords (its first
 *                      128 bytes are printed afterwards)
 *   m:MECH:HEX         CK_MECHANISM with raw parameter bytes (HEX may be empty)
 *   g:MECH:IV:AAD:BITS CK_MECHANISM with a CK_GCM_PARAMS
 *   e:MECH:HASH:MGF    CK_MECHANISM with a CK_RSA_PKCS_OAEP_PARAMS (no label)
 *   t:TYPE=HEX;TYPE=uDEC;...  CK_ATTRIBUTE array (u: a native CK_ULONG)
 *   T:TYPE=N;...       CK_ATTRIBUTE array of N-byte zeroed buffers (N -1:
 *                      NULL pValue), printed afterwards as LEN:HEX;...
 *
 * The answer is "ok RET A0 A1 ...": RET the return value (EP11 CK_RV; junk
 * for the void CCA verbs), each Ai "-" or the long's value or the buffer's
 * hex after the call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXA 30
typedef unsigned long (*fn_t)(void *, void *, void *, void *, void *, void *, void *, void *, void *, void *, void *,
			      void *, void *, void *, void *, void *, void *, void *, void *, void *, void *, void *,
			      void *, void *, void *, void *, void *, void *, void *, void *);

typedef struct {
	unsigned long mechanism;
	void *p;
	unsigned long len;
} mech_t;
typedef struct {
	unsigned char *iv;
	unsigned long ivlen, ivbits;
	unsigned char *aad;
	unsigned long aadlen, tagbits;
} gcm_t;
typedef struct {
	unsigned long hash, mgf, source;
	void *src;
	unsigned long srclen;
} oaep_t;
typedef struct {
	unsigned long type;
	void *p;
	unsigned long len;
} attr_t;

enum { K_NONE, K_LONG, K_BUF, K_TEMPL };
struct arg {
	int kind;
	void *p;
	size_t n;
};

static void *lib;

static size_t unhex(const char *h, unsigned char *out, size_t max)
{
	size_t n = 0;
	while (h[0] && h[1] && h[0] != ':' && h[0] != ';' && n < max) {
		unsigned v;
		sscanf(h, "%2x", &v);
		out[n++] = v;
		h += 2;
	}
	return n;
}

static unsigned long num(const char *s)
{
	return strtoul(s, NULL, 0);
}

static int parse(char *tok, struct arg *a, void **val)
{
	a->kind = K_NONE;
	if (!strcmp(tok, "n")) {
		*val = NULL;
	} else if (!strncmp(tok, "l:", 2)) {
		long *p = malloc(sizeof(long));
		*p = strtol(tok + 2, NULL, 0);
		a->kind = K_LONG;
		a->p = p;
		*val = p;
	} else if (!strncmp(tok, "v:", 2)) {
		*val = (void *)(uintptr_t)strtoull(tok + 2, NULL, 0);
	} else if (!strncmp(tok, "b:", 2)) {
		size_t l = strlen(tok + 2) / 2;
		unsigned char *p = malloc(l + 1);
		unhex(tok + 2, p, l);
		*val = p;
	} else if (!strncmp(tok, "o:", 2)) {
		size_t l = num(tok + 2);
		a->kind = K_BUF;
		a->p = calloc(1, l + 1);
		a->n = l;
		*val = a->p;
	} else if (!strncmp(tok, "io:", 3)) {
		char *c = strchr(tok + 3, ':');
		size_t l = c ? num(c + 1) : 0;
		a->kind = K_BUF;
		a->p = calloc(1, l + 1);
		a->n = l;
		unhex(tok + 3, a->p, l);
		*val = a->p;
	} else if (!strncmp(tok, "k:", 2)) {
		unsigned char *p = calloc(1, 8 * 64);
		int i = 0;
		char *sv;
		for (char *w = strtok_r(tok + 2, ",", &sv); w && i < 64; w = strtok_r(NULL, ",", &sv), i++) {
			memset(p + 8 * i, ' ', 8);
			memcpy(p + 8 * i, w, strlen(w) > 8 ? 8 : strlen(w));
		}
		a->kind = K_BUF;
		a->p = p;
		a->n = 128;
		*val = p;
	} else if (!strncmp(tok, "m:", 2)) {
		mech_t *m = calloc(1, sizeof(*m));
		char *c = strchr(tok + 2, ':');
		m->mechanism = num(tok + 2);
		if (c && c[1]) {
			m->p = malloc(strlen(c + 1) / 2 + 1);
			m->len = unhex(c + 1, m->p, strlen(c + 1) / 2);
		}
		*val = m;
	} else if (!strncmp(tok, "g:", 2)) {
		mech_t *m = calloc(1, sizeof(*m));
		gcm_t *g = calloc(1, sizeof(*g));
		char *f[4] = {0};
		char *s = tok + 2;
		for (int i = 0; i < 4 && s; i++) {
			f[i] = s;
			s = strchr(s, ':');
			if (s)
				*s++ = 0;
		}
		m->mechanism = num(f[0]);
		g->iv = malloc(64);
		g->ivlen = f[1] ? unhex(f[1], g->iv, 64) : 0;
		g->ivbits = g->ivlen * 8;
		g->aad = malloc(256);
		g->aadlen = f[2] ? unhex(f[2], g->aad, 256) : 0;
		g->tagbits = f[3] ? num(f[3]) : 128;
		m->p = g;
		m->len = sizeof(*g);
		*val = m;
	} else if (!strncmp(tok, "e:", 2)) {
		mech_t *m = calloc(1, sizeof(*m));
		oaep_t *o = calloc(1, sizeof(*o));
		char *s = tok + 2;
		m->mechanism = strtoul(s, &s, 0);
		o->hash = strtoul(s + 1, &s, 0);
		o->mgf = strtoul(s + 1, &s, 0);
		o->source = 1; /* CKZ_DATA_SPECIFIED */
		m->p = o;
		m->len = sizeof(*o);
		*val = m;
	} else if (!strncmp(tok, "T:", 2)) {
		attr_t *t = calloc(32, sizeof(*t));
		int i = 0;
		char *sv;
		for (char *w = strtok_r(tok + 2, ";", &sv); w && i < 32; w = strtok_r(NULL, ";", &sv), i++) {
			char *eq = strchr(w, '=');
			long n = strtol(eq + 1, NULL, 0);
			t[i].type = num(w);
			t[i].len = n < 0 ? 0 : n;
			t[i].p = n < 0 ? NULL : calloc(1, n + 1);
		}
		a->kind = K_TEMPL;
		a->p = t;
		a->n = i;
		*val = t;
	} else if (!strncmp(tok, "t:", 2)) {
		attr_t *t = calloc(32, sizeof(*t));
		int i = 0;
		char *sv;
		for (char *w = strtok_r(tok + 2, ";", &sv); w && i < 32; w = strtok_r(NULL, ";", &sv), i++) {
			char *eq = strchr(w, '=');
			t[i].type = num(w);
			if (eq[1] == 'u') {
				unsigned long *u = malloc(sizeof(*u));
				*u = num(eq + 2);
				t[i].p = u;
				t[i].len = sizeof(*u);
			} else {
				t[i].p = malloc(strlen(eq + 1) / 2 + 1);
				t[i].len = unhex(eq + 1, t[i].p, strlen(eq + 1) / 2);
			}
		}
		*val = t;
	} else {
		return -1;
	}
	return 0;
}

struct job {
	char line[1 << 16];
	char out[1 << 18];
};

static void run(struct job *j)
{
	char *save;
	char *w = strtok_r(j->line, " \n", &save);
	if (!w || strcmp(w, "call")) {
		snprintf(j->out, sizeof(j->out), "error: want call NAME ARG...");
		return;
	}
	char *name = strtok_r(NULL, " \n", &save);
	fn_t f = name ? (fn_t)dlsym(lib, name) : NULL;
	if (!f) {
		snprintf(j->out, sizeof(j->out), "error: no symbol %s", name ? name : "");
		return;
	}
	struct arg a[MAXA] = {0};
	void *v[MAXA] = {0};
	int n = 0;
	for (char *t = strtok_r(NULL, " \n", &save); t && n < MAXA; t = strtok_r(NULL, " \n", &save), n++) {
		if (parse(t, &a[n], &v[n]) < 0) {
			snprintf(j->out, sizeof(j->out), "error: bad argument %s", t);
			return;
		}
	}
	unsigned long ret = f(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
			      v[14], v[15], v[16], v[17], v[18], v[19], v[20], v[21], v[22], v[23], v[24], v[25], v[26],
			      v[27], v[28], v[29]);
	size_t o = snprintf(j->out, sizeof(j->out), "ok %lu", ret);
	for (int i = 0; i < n && o < sizeof(j->out) - 4; i++) {
		if (a[i].kind == K_LONG) {
			o += snprintf(j->out + o, sizeof(j->out) - o, " %ld", *(long *)a[i].p);
		} else if (a[i].kind == K_BUF) {
			o += snprintf(j->out + o, sizeof(j->out) - o, " ");
			for (size_t k = 0; k < a[i].n && o < sizeof(j->out) - 4; k++)
				o += snprintf(j->out + o, sizeof(j->out) - o, "%02x", ((unsigned char *)a[i].p)[k]);
			if (a[i].n == 0)
				o += snprintf(j->out + o, sizeof(j->out) - o, "=");
		} else if (a[i].kind == K_TEMPL) {
			attr_t *t = a[i].p;
			o += snprintf(j->out + o, sizeof(j->out) - o, " ");
			for (size_t k = 0; k < a[i].n && o < sizeof(j->out) - 40; k++) {
				o += snprintf(j->out + o, sizeof(j->out) - o, "%s%ld:", k ? ";" : "", (long)t[k].len);
				for (size_t b = 0; t[k].p && b < t[k].len && (long)t[k].len > 0 && o < sizeof(j->out) - 4; b++)
					o += snprintf(j->out + o, sizeof(j->out) - o, "%02x", ((unsigned char *)t[k].p)[b]);
			}
		} else {
			o += snprintf(j->out + o, sizeof(j->out) - o, " -");
		}
	}
}

static void *thread_main(void *p)
{
	run(p);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: driver LIBRARY < calls\n");
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	static struct job j;
	char line[1 << 16];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "thread ", 7)) {
			strcpy(j.line, line + 7);
			pthread_t t;
			pthread_create(&t, NULL, thread_main, &j);
			pthread_join(t, NULL);
		} else if (!strncmp(line, "par ", 4)) {
			/* par N call ...: N threads run the call at once */
			char *rest;
			int n = strtol(line + 4, &rest, 10);
			if (n < 1 || n > 64) {
				printf("error: par takes 1..64 threads\n");
				continue;
			}
			struct job *js = calloc(n, sizeof(*js));
			pthread_t *ts = calloc(n, sizeof(*ts));
			for (int i = 0; i < n; i++) {
				strcpy(js[i].line, rest + 1);
				pthread_create(&ts[i], NULL, thread_main, &js[i]);
			}
			for (int i = 0; i < n; i++)
				pthread_join(ts[i], NULL);
			for (int i = 0; i < n; i++)
				printf("%s%s", js[i].out, i + 1 < n ? " | " : "\n");
			free(js);
			free(ts);
			continue;
		} else if (!strncmp(line, "fork ", 5)) {
			strcpy(j.line, line + 5);
			fflush(stdout);
			pid_t pid = fork();
			if (pid == 0) {
				run(&j);
				printf("%s\n", j.out);
				fflush(stdout);
				_exit(0);
			}
			waitpid(pid, NULL, 0);
			continue;
		} else {
			strcpy(j.line, line);
			run(&j);
		}
		printf("%s\n", j.out);
	}
	return 0;
}
