// Package consumers_test runs programs nobody here wrote — pkcs11-tool,
// p11tool, the OpenSSL pkcs11 engine, PyKCS11, p11-kit — and our own C
// client against the built libpkcshsm.so, as separate processes, and
// checks what they produce (signatures verify, decrypted data equals the
// input, listed tokens and objects are the ones created), not only their
// exit status. The Go test process never loads the module itself.
//
// TestMain takes the binaries and the module (go build
// -buildmode=c-shared) from internal/testenv, builds the C client (gcc),
// and sets up a temporary root with a simulated CCA adapter and one
// initialised token. A tool that is not
// installed skips its test, except under CI=true, where it fails: CI
// installs them (.ci/run).
package consumers_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/hostarch"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

const (
	soPIN   = "87654321"
	userPIN = "12345678"
	token   = "cca"
)

// env is the fixture every test shares; set up by TestMain.
var env struct {
	repo   string // repository root
	bin    string // binaries, the module and the C client
	root   string // PKCSHSM_ROOT with the simulator and the token
	module string // absolute path of libpkcshsm.so
	err    error  // why the fixture could not be set up
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pkcshsm-consumers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env.err = setup(dir)
	code := m.Run()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "consumers: fixture kept in %s\n", dir)
	}
	os.Exit(code)
}

func setup(dir string) error {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	env.repo, env.bin, env.root = repo, filepath.Join(dir, "bin"), filepath.Join(dir, "root")
	// The binaries and the module of this go test run (internal/testenv:
	// built once, shared with the other packages), linked into one
	// directory with the C client: rotation-demo.sh takes them all from
	// PKCSHSM_BIN.
	built, err := testenv.BinDir()
	if err != nil {
		return err
	}
	module, err := testenv.ProgramPath("cmd/libpkcshsm", "-buildmode=c-shared")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(env.bin, 0o755); err != nil {
		return err
	}
	env.module = filepath.Join(env.bin, "libpkcshsm.so")
	links := map[string]string{env.module: module}
	for _, c := range testenv.Commands {
		links[filepath.Join(env.bin, c)] = filepath.Join(built, c)
	}
	for link, target := range links {
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	builds := [][]string{{cc(), "-O2", "-Wall", "-Werror", "-pthread", "-I/usr/include/p11-kit-1", "-o",
		filepath.Join(env.bin, "p11stress"), "testdata/clients/p11stress.c", "-ldl"}}
	for _, b := range builds {
		cmd := exec.Command(b[0], b[1:]...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(b, " "), err, out)
		}
	}
	// One CCA adapter and one CCA token, initialised with the project's own
	// tools, as an administrator would.
	if err := os.MkdirAll(filepath.Join(env.root, "etc/pkcshsm"), 0o755); err != nil {
		return err
	}
	conf := "hsm-backend = simulator\nslot 2 {\n\ttoken-type = cca\n\ttokname = cca\n\tconfname = ccatok.conf\n}\n"
	if err := os.WriteFile(filepath.Join(env.root, "etc/pkcshsm/pkcshsm.conf"), []byte(conf), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(env.root, "etc/pkcshsm/ccatok.conf"), []byte("version cca-0\nAPQN_ALLOWLIST\n1 0x33\nEND\n"), 0o644); err != nil {
		return err
	}
	steps := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"hsmsim", "init", "--cca", "01.0033"}},
		{soPIN + "\n" + soPIN + "\n", []string{"pkcshsm", "token", "init", "--slot", "2", "--label", token}},
		{soPIN + "\n" + userPIN + "\n" + userPIN + "\n", []string{"pkcshsm", "pin", "set", "--slot", "2"}},
		{userPIN + "\n", []string{"pkcshsm", "keys", "generate", "--slot", "2", "--type", "aes", "--label", "admin-aes"}},
	}
	for _, s := range steps {
		cmd := exec.Command(filepath.Join(env.bin, s.args[0]), s.args[1:]...)
		cmd.Env = toolEnv()
		cmd.Stdin = strings.NewReader(s.stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(s.args, " "), err, out)
		}
	}
	return nil
}

// toolEnv is the environment of every consumer: the module finds its
// configuration and tokens under PKCSHSM_ROOT and logs to a file there.
func toolEnv(extra ...string) []string {
	e := append(os.Environ(), "PKCSHSM_ROOT="+env.root, "PKCSHSM_LOG="+filepath.Join(env.root, "module.log"))
	return append(e, extra...)
}

// need returns the path of a tool, skipping the test when it is missing —
// or failing it under CI=true, where every consumer must be installed.
func need(t *testing.T, tool string) string {
	t.Helper()
	if env.err != nil {
		t.Fatalf("fixture: %v", env.err)
	}
	p, err := exec.LookPath(tool)
	if err == nil {
		_, err = os.Stat(p)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI installs it in .ci/run): %v", tool, err)
		}
		t.Skipf("%s is not installed: %v", tool, err)
	}
	// Every consumer here loads the module into its own process, which
	// only a program of the module's architecture can (the s390x run).
	if why := hostarch.Mismatch(p); why != "" {
		t.Skip(why)
	}
	return p
}

// run executes a consumer with the module's environment and returns its
// combined output; a non-zero exit fails the test.
func run(t *testing.T, stdin string, extraEnv []string, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, stdin, extraEnv, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t *testing.T, stdin string, extraEnv []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = toolEnv(extraEnv...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// mustContain fails the test for every wanted string the output lacks.
func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// cc is the C compiler for our own C client: $CC (s390x-linux-gnu-gcc in
// scripts/test-s390x.sh) or gcc.
func cc() string {
	if c := os.Getenv("CC"); c != "" {
		return c
	}
	return "gcc"
}
