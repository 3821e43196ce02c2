package cabi_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests of this file build the real libpkcshsm.so and run C programs
// and tools against it in other processes; the test process never loads
// the .so.

var build struct {
	once sync.Once
	dir  string
	lib  string
	err  error
}

// TestMain removes what the outsider tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// moduleSO builds libpkcshsm.so once per test binary and returns its
// absolute path.
func moduleSO(t testing.TB) string {
	t.Helper()
	goTool := lookTool(t, "go")
	lookTool(t, "gcc")
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "cabi-build")
		if build.err != nil {
			return
		}
		build.lib = filepath.Join(build.dir, "libpkcshsm.so")
		cmd := exec.Command(goTool, "build", "-buildmode=c-shared", "-o", build.lib, "../../cmd/libpkcshsm")
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build -buildmode=c-shared: %v\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.lib
}

// cProgram compiles testdata/NAME.c against the vendored headers.
func cProgram(t testing.TB, name string) string {
	t.Helper()
	gcc := lookTool(t, "gcc")
	out := filepath.Join(t.TempDir(), name)
	cmd := exec.Command(gcc, "-O1", "-Wall", "-Werror", "-Iinclude", "-o", out, filepath.Join("testdata", name+".c"), "-ldl", "-lpthread")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, msg)
	}
	return out
}

// TestExportedSymbols: the module's dynamic symbol table holds the
// PKCS#11 entry points and nothing else (no Go runtime, no cgo glue).
func TestExportedSymbols(t *testing.T) {
	lib := moduleSO(t)
	nm := lookTool(t, "nm")
	out, err := exec.Command(nm, "-D", "--defined-only", lib).Output()
	if err != nil {
		t.Fatal(err)
	}
	var syms []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		syms = append(syms, f[len(f)-1])
	}
	sort.Strings(syms)
	header, err := os.ReadFile(filepath.Join("include", "pkcs11f.h"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range regexp.MustCompile(`CK_PKCS11_FUNCTION_INFO\((C_\w+)\)`).FindAllStringSubmatch(string(header), -1) {
		want = append(want, m[1])
	}
	want = append(want, "C_GetInterface", "C_GetInterfaceList")
	sort.Strings(want)
	if strings.Join(syms, " ") != strings.Join(want, " ") {
		t.Errorf("exported symbols:\n%s\nwant exactly the %d PKCS#11 functions:\n%s", strings.Join(syms, " "), len(want), strings.Join(want, " "))
	}
}

// TestForkGuard: children of a process that uses the module, forked while
// two of its threads are inside the module, get CKR_CRYPTOKI_NOT_INITIALIZED
// from every call and CKR_GENERAL_ERROR from C_Initialize, at once and
// without entering the Go runtime (which hangs after fork); the parent
// carries on. The refusal is noted in PKCSHSM_LOG and, once per child, on
// the child's stderr, naming the fix (p11-kit server): the error log of a
// pre-forking server.
func TestForkGuard(t *testing.T) {
	m := ready(t)
	m.ok("C_Finalize", m.f.C_Finalize(0)) // the token is set up; the C program uses it
	lib := moduleSO(t)
	prog := cProgram(t, "forkclient")
	logPath := filepath.Join(m.layout.Root, "fork.log")
	cmd := exec.Command(prog, lib, "direct", "3", "2")
	cmd.Env = append(os.Environ(), "CABI_PIN="+userPIN, "PKCSHSM_LOG="+logPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		t.Fatalf("forkclient: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	wantForkStderr(t, stderr.String(), 3)
	t.Logf("forkclient direct (3 children, 2 busy threads) in %v:\n%s", time.Since(start), stdout.String())
	// Nothing but the program's own lines: the module never prints.
	for _, line := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		if !regexp.MustCompile(`^(child \d ok [0-9.]+ ms|ok)$`).MatchString(line) {
			t.Errorf("unexpected output line %q", line)
		}
	}
	times := regexp.MustCompile(`child (\d) ok ([0-9.]+) ms`).FindAllStringSubmatch(stdout.String(), -1)
	if len(times) != 3 || !strings.HasSuffix(stdout.String(), "ok\n") {
		t.Fatalf("forkclient output:\n%s", stdout.String())
	}
	for _, c := range times {
		var ms float64
		fmt.Sscan(c[2], &ms)
		if ms > 2000 {
			t.Errorf("child %s took %.0f ms to be refused", c[1], ms)
		}
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	refusals := regexp.MustCompile(`"function":"C_GetInfo","pid":(\d+),"parent_pid":(\d+),"message":"libpkcshsm cannot be used in a process forked`).FindAllStringSubmatch(string(log), -1)
	if len(refusals) != 3 {
		t.Errorf("%d refusals logged, want one per child:\n%s", len(refusals), log)
	}
	for _, r := range refusals {
		if r[2] != fmt.Sprint(cmd.Process.Pid) || r[1] == r[2] {
			t.Errorf("refusal names pid %s, parent %s; the parent was %d", r[1], r[2], cmd.Process.Pid)
		}
	}

	// Without PKCSHSM_LOG (and without pkcshsmd, whose absence the agent
	// notes) the module is silent.
	cmd = exec.Command(prog, lib, "direct", "1", "0")
	cmd.Env = append(os.Environ(), "CABI_PIN="+userPIN, "PKCSHSM_LOG=")
	stdout.Reset()
	stderr.Reset()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !regexp.MustCompile(`^child 0 ok [0-9.]+ ms\nok\n$`).MatchString(stdout.String()) {
		t.Errorf("without a log: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	wantForkStderr(t, stderr.String(), 1)
}

// wantForkStderr checks that stderr holds exactly one line per forked
// child, each naming the fix, and nothing else.
func wantForkStderr(t *testing.T, stderr string, children int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if stderr == "" {
		lines = nil
	}
	if len(lines) != children {
		t.Fatalf("stderr has %d lines, want one per child (%d):\n%s", len(lines), children, stderr)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "libpkcshsm: this process was forked after the module was loaded") ||
			!strings.Contains(l, "p11-kit-client.so") || !strings.Contains(l, "p11-kit server") {
			t.Errorf("stderr line does not name the fix: %q", l)
		}
	}
}

// p11KitClient finds p11-kit's client module.
func p11KitClient(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "/usr/lib64/pkcs11/p11-kit-client.so", "/usr/lib/pkcs11/p11-kit-client.so"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("p11-kit-client.so not found; .ci/run must install p11-kit-modules")
	}
	t.Skip("p11-kit-client.so not found")
	return ""
}

// TestP11KitServerForkingClient is the route man/libpkcshsm.3 gives
// forking servers: the module runs behind `p11-kit server`, the
// application loads p11-kit-client.so. Children forked while the parent's
// threads work re-initialise and encrypt and decrypt with their own keys.
func TestP11KitServerForkingClient(t *testing.T) {
	m := ready(t)
	m.ok("C_Finalize", m.f.C_Finalize(0))
	lib := moduleSO(t)
	server := loaderTool(t, "p11-kit")
	client := p11KitClient(t)
	prog := cProgram(t, "forkclient")
	sock := filepath.Join(m.layout.Root, "p11kit.sock")
	srv := exec.Command(server, "server", "-f", "-n", sock, "--provider", lib, "pkcs11:token=cabi")
	var srvOut bytes.Buffer
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	srv.Env = append(os.Environ(), "PKCSHSM_LOG="+filepath.Join(m.layout.Root, "server.log"))
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	t.Cleanup(func() {
		srv.Process.Kill()
		<-exited
	})
	deadline := time.After(20 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("p11-kit server exited: %v\n%s", err, srvOut.String())
		case <-deadline:
			t.Fatalf("p11-kit server did not create %s:\n%s", sock, srvOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cmd := exec.Command(prog, client, "reinit", "3", "2")
	cmd.Env = append(os.Environ(), "CABI_PIN="+userPIN, "P11_KIT_SERVER_ADDRESS=unix:path="+sock)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil || !strings.HasSuffix(stdout.String(), "ok\n") {
		t.Fatalf("forkclient through p11-kit: %v\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", err, stdout.String(), stderr.String(), srvOut.String())
	}
	if n := strings.Count(stdout.String(), " ok "); n != 3 {
		t.Errorf("%d children succeeded, want 3:\n%s", n, stdout.String())
	}
	t.Logf("forkclient reinit through p11-kit server (3 children × 200 AES round trips, 2 busy threads) in %v", time.Since(start))
}

// TestP11KitRemoteForkingClient: the same forking client with
// P11_KIT_SERVER_ADDRESS="|p11-kit remote MODULE": p11-kit-client.so
// spawns p11-kit remote (fork and exec, so the module starts in a fresh
// process) and speaks the RPC over its stdin and stdout, which is also how
// it reaches a module on another machine ("|ssh host p11-kit remote ...").
func TestP11KitRemoteForkingClient(t *testing.T) {
	m := ready(t)
	m.ok("C_Finalize", m.f.C_Finalize(0))
	lib := moduleSO(t)
	remote := loaderTool(t, "p11-kit")
	client := p11KitClient(t)
	prog := cProgram(t, "forkclient")
	cmd := exec.Command(prog, client, "reinit", "2", "1")
	cmd.Env = append(os.Environ(), "CABI_PIN="+userPIN, "P11_KIT_SERVER_ADDRESS=|"+remote+" remote "+lib)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.HasSuffix(stdout.String(), "ok\n") || strings.Count(stdout.String(), " ok ") != 2 {
		t.Fatalf("forkclient through p11-kit remote: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
}
