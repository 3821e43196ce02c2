// The hand-written C of the module: the fork guard and the PKCS#11 3.0
// interface functions. Every C_* wrapper (zfuncs.c, generated) asks
// pkcshsm_forked() before it enters Go.

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "cabi.h"

extern CK_FUNCTION_LIST pkcshsm_function_list;

// The process that loaded the module. The Go runtime started in this
// process when the library was loaded (not at C_Initialize), so a child
// forked at any time afterwards has a copy of a runtime whose threads do
// not exist: entering Go there can hang for ever.
static pid_t pkcshsm_pid;

__attribute__((constructor)) static void pkcshsm_record_pid(void)
{
	pkcshsm_pid = getpid();
}

int pkcshsm_forked(void)
{
	return getpid() != pkcshsm_pid;
}

// pkcshsm_fork_stderr is the one line a forked child writes to its
// standard error at its first refusal: pre-forking servers (nginx, Apache
// httpd) send their workers' standard error to their error log, so the
// operator reads there why the handshakes fail and how to fix it.
static const char pkcshsm_fork_stderr[] =
	"libpkcshsm: this process was forked after the module was loaded; the module cannot work in it "
	"(every call returns CKR_CRYPTOKI_NOT_INITIALIZED). Load p11-kit-client.so instead and run "
	"libpkcshsm.so behind `p11-kit server` (see libpkcshsm(3), FORK)\n";

// pkcshsm_refuse_forked returns rv for a call fn made in a forked child.
// The first refusal in each child is noted in PKCSHSM_LOG (when set) and,
// once, on the child's standard error when that is a file, pipe or
// terminal (never a socket, which may be a client's connection); the
// module writes nothing to stdout or stderr anywhere else.
CK_RV pkcshsm_refuse_forked(const char *fn, CK_RV rv)
{
	static pid_t noted;
	pid_t self = getpid();
	if (noted == self)
		return rv;
	noted = self;
	struct stat st;
	if (fstat(2, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		ssize_t w = write(2, pkcshsm_fork_stderr, sizeof pkcshsm_fork_stderr - 1);
		(void)w;
	}
	const char *path = getenv("PKCSHSM_LOG");
	if (path == NULL || path[0] == '\0')
		return rv;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return rv;
	char line[512];
	int n = snprintf(line, sizeof line,
			 "{\"level\":\"error\",\"component\":\"cabi\",\"function\":\"%s\",\"pid\":%ld,\"parent_pid\":%ld,"
			 "\"message\":\"libpkcshsm cannot be used in a process forked after it was loaded (the Go runtime "
			 "does not survive fork); load the module after fork, or run it behind p11-kit server (see libpkcshsm(3))\"}\n",
			 fn, (long)self, (long)pkcshsm_pid);
	if (n > 0 && n < (int)sizeof line) {
		ssize_t w = write(fd, line, (size_t)n);
		(void)w;
	}
	close(fd);
	return rv;
}

static CK_CHAR pkcshsm_interface_name[] = "PKCS 11";

static CK_INTERFACE pkcshsm_interfaces[] = {
	{pkcshsm_interface_name, &pkcshsm_function_list, 0},
};

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
	CK_ULONG n = sizeof pkcshsm_interfaces / sizeof pkcshsm_interfaces[0];
	if (pulCount == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	if (pInterfacesList == NULL_PTR) {
		*pulCount = n;
		return CKR_OK;
	}
	if (*pulCount < n) {
		*pulCount = n;
		return CKR_BUFFER_TOO_SMALL;
	}
	memcpy(pInterfacesList, pkcshsm_interfaces, sizeof pkcshsm_interfaces);
	*pulCount = n;
	return CKR_OK;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
		     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
	if (ppInterface == NULL_PTR)
		return CKR_ARGUMENTS_BAD;
	if (pInterfaceName != NULL_PTR && strcmp((const char *)pInterfaceName, (const char *)pkcshsm_interface_name) != 0)
		return CKR_ARGUMENTS_BAD;
	if (pVersion != NULL_PTR && (pVersion->major != CRYPTOKI_VERSION_MAJOR || pVersion->minor != CRYPTOKI_VERSION_MINOR))
		return CKR_ARGUMENTS_BAD;
	// The module is not fork safe: a caller that insists gets nothing.
	if ((flags & ~pkcshsm_interfaces[0].flags) != 0)
		return CKR_ARGUMENTS_BAD;
	*ppInterface = &pkcshsm_interfaces[0];
	return CKR_OK;
}
