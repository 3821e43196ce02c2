/* forkclient: a C application that loads a PKCS#11 module, uses it, then
 * forks children while (optionally) its own threads keep using it.
 *
 *   forkclient MODULE MODE CHILDREN BUSY_THREADS
 *
 * MODE "direct": MODULE is libpkcshsm.so. A child must get
 *   CKR_CRYPTOKI_NOT_INITIALIZED from C_GetInfo and C_Finalize and
 *   CKR_GENERAL_ERROR from C_Initialize, at once.
 * MODE "reinit": MODULE is p11-kit-client.so in front of the module. A
 *   child must C_Initialize again and encrypt and decrypt with a new key.
 *
 * The USER PIN is in $CABI_PIN. Each child has alarm(20): a hang shows as
 * a child killed by SIGALRM. Prints "ok" and exits 0 when every child and
 * the parent afterwards behaved; failures go to stderr. */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (*name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (*name)
#define NULL_PTR 0
#include "pkcs11.h"

static CK_FUNCTION_LIST_PTR f;
static volatile int stop;

#define CHECK(call, want)                                                                       \
	do {                                                                                    \
		CK_RV rv_ = (call);                                                             \
		if (rv_ != (want)) {                                                            \
			fprintf(stderr, "pid %d: %s = 0x%lx, want 0x%lx\n", (int)getpid(), #call, \
				(unsigned long)rv_, (unsigned long)(want));                       \
			return 1;                                                               \
		}                                                                               \
	} while (0)

/* session opens a logged-in session on the first slot with a token and
 * makes an AES-256 session key. */
static int session(CK_SESSION_HANDLE *h, CK_OBJECT_HANDLE *key)
{
	CK_SLOT_ID slots[8];
	CK_ULONG n = 8;
	CHECK(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
	if (n == 0) {
		fprintf(stderr, "no slot\n");
		return 1;
	}
	CHECK(f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, h), CKR_OK);
	const char *pin = getenv("CABI_PIN");
	CK_RV rv = f->C_Login(*h, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		fprintf(stderr, "pid %d: C_Login = 0x%lx\n", (int)getpid(), (unsigned long)rv);
		return 1;
	}
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE;
	CK_ATTRIBUTE t[] = {{CKA_VALUE_LEN, &len, sizeof len}, {CKA_ENCRYPT, &yes, 1}, {CKA_DECRYPT, &yes, 1}};
	CK_MECHANISM gen = {CKM_AES_KEY_GEN, NULL, 0};
	CHECK(f->C_GenerateKey(*h, &gen, t, 3, key), CKR_OK);
	return 0;
}

/* roundtrip encrypts and decrypts 4 KiB with AES-ECB (p11-kit's RPC
 * forwards it; it drops unknown mechanism parameters). */
static int roundtrip(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key)
{
	static __thread unsigned char in[4096], out[4096], back[4096];
	for (size_t i = 0; i < sizeof in; i++)
		in[i] = (unsigned char)(i * 7 + getpid());
	CK_MECHANISM ecb = {CKM_AES_ECB, NULL, 0};
	CK_ULONG n = sizeof out, m = sizeof back;
	CHECK(f->C_EncryptInit(h, &ecb, key), CKR_OK);
	CHECK(f->C_Encrypt(h, in, sizeof in, out, &n), CKR_OK);
	CHECK(f->C_DecryptInit(h, &ecb, key), CKR_OK);
	CHECK(f->C_Decrypt(h, out, n, back, &m), CKR_OK);
	if (m != sizeof in || memcmp(in, back, m) != 0) {
		fprintf(stderr, "pid %d: round trip mismatch\n", (int)getpid());
		return 1;
	}
	return 0;
}

static void *busy(void *arg)
{
	(void)arg;
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE key;
	if (session(&h, &key) != 0)
		return (void *)1;
	while (!stop)
		if (roundtrip(h, key) != 0)
			return (void *)1;
	return NULL;
}

static int child_direct(void)
{
	CK_INFO info;
	CHECK(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK_ULONG n = 0;
	CHECK(f->C_GetSlotList(CK_FALSE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(f->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CHECK(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
	CHECK(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	/* The function list itself is C and still answers. */
	CK_FUNCTION_LIST_PTR again = NULL;
	CHECK(f->C_GetFunctionList(&again), CKR_OK);
	return again == f ? 0 : 1;
}

static int child_reinit(void)
{
	CK_C_INITIALIZE_ARGS args = {0};
	args.flags = CKF_OS_LOCKING_OK;
	CHECK(f->C_Initialize(&args), CKR_OK);
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE key;
	if (session(&h, &key) != 0)
		return 1;
	for (int i = 0; i < 200; i++)
		if (roundtrip(h, key) != 0)
			return 1;
	CHECK(f->C_Finalize(NULL), CKR_OK);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: forkclient MODULE direct|reinit CHILDREN BUSY_THREADS\n");
		return 2;
	}
	int reinit = strcmp(argv[2], "reinit") == 0;
	int children = atoi(argv[3]), threads = atoi(argv[4]);
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	CK_RV (*getList)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(lib, "C_GetFunctionList");
	if (getList == NULL || getList(&f) != CKR_OK) {
		fprintf(stderr, "C_GetFunctionList missing\n");
		return 1;
	}
	CHECK(f->C_Initialize(NULL), CKR_OK);
	CK_SESSION_HANDLE h;
	CK_OBJECT_HANDLE key;
	if (session(&h, &key) != 0 || roundtrip(h, key) != 0)
		return 1;

	pthread_t tids[16];
	if (threads > 16)
		threads = 16;
	for (int i = 0; i < threads; i++)
		pthread_create(&tids[i], NULL, busy, NULL);
	/* Let the threads get into the module before forking. */
	struct timespec ts = {0, 50 * 1000 * 1000};
	nanosleep(&ts, NULL);

	int failed = 0;
	for (int i = 0; i < children; i++) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			alarm(20);
			_exit(reinit ? child_reinit() : child_direct());
		}
		int st;
		waitpid(pid, &st, 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
		if (WIFSIGNALED(st)) {
			fprintf(stderr, "child %d killed by signal %d%s\n", i, WTERMSIG(st),
				WTERMSIG(st) == SIGALRM ? " (hung for 20 s)" : "");
			failed++;
		} else if (WEXITSTATUS(st) != 0) {
			fprintf(stderr, "child %d exited %d\n", i, WEXITSTATUS(st));
			failed++;
		} else {
			printf("child %d ok %.1f ms\n", i, ms);
		}
	}
	stop = 1;
	for (int i = 0; i < threads; i++) {
		void *r;
		pthread_join(tids[i], &r);
		if (r != NULL) {
			fprintf(stderr, "busy thread %d failed\n", i);
			failed++;
		}
	}
	/* The parent is unaffected by its children. */
	if (roundtrip(h, key) != 0)
		return 1;
	CHECK(f->C_Finalize(NULL), CKR_OK);
	if (failed)
		return 1;
	printf("ok\n");
	return 0;
}
