package hostdouble_test

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

// The tests call the real C doubles through dlopen, from a small C driver
// (c/driver.c) that gcc builds once per test run. The libraries start
// their server as PKCSHSM_HOSTDOUBLE_HSMSIM; the tests point that at this
// test binary, which serves as `hsmsim host-double` does when started
// with those arguments (see TestMain), so no hsmsim build is needed.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	if i := indexOf(os.Args, "host-double"); i > 0 {
		os.Exit(serveForTest(os.Args[1:]))
	}
	flag.Parse()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func indexOf(s []string, w string) int {
	for i, v := range s {
		if v == w {
			return i
		}
	}
	return -1
}

// serveForTest is `hsmsim [--dir DIR] host-double --lib LIB`.
func serveForTest(args []string) int {
	dir, lib := "", ""
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "--dir":
			dir = args[i+1]
		case "--lib":
			lib = args[i+1]
		}
	}
	h, err := sim.Open(dir, sim.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "test server:", err)
		return 1
	}
	defer h.Close()
	l := uint8(hostdouble.LibCCA)
	if lib == "ep11" {
		l = hostdouble.LibEP11
	}
	srv, err := hostdouble.NewServer(l, h, zerolog.Nop(), os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "test server:", err)
		return 1
	}
	if err := srv.Serve(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "test server:", err)
		return 1
	}
	return 0
}

// build compiles the doubles and the driver with gcc into a shared
// temporary directory, the way `make host-doubles` does.
func build(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the host-library doubles are Linux libraries")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "hostdouble-")
		if buildErr != nil {
			return
		}
		cc := os.Getenv("CC")
		if cc == "" {
			cc = "gcc"
		}
		flags := []string{"-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"}
		lib := append(append([]string{}, flags...), "-fPIC", "-shared", "-fvisibility=hidden")
		steps := [][]string{
			append(append([]string{}, lib...), "-o", filepath.Join(buildDir, "libcsulcca.so"), "c/transport.c", "c/csulcca.c", "-lpthread"),
			append(append([]string{}, flags...), "-Wno-unused-result", "-o", filepath.Join(buildDir, "driver"), "c/driver.c", "-ldl", "-lpthread"),
		}
		steps = append(steps, append(append([]string{}, lib...), "-o", filepath.Join(buildDir, "libep11.so"), "c/transport.c", "c/ep11.c", "-lpthread"))
		for _, s := range steps {
			out, err := exec.Command(cc, s...).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("%s %s: %v\n%s", cc, strings.Join(s, " "), err, out)
				return
			}
		}
	})
	if buildErr != nil {
		if _, err := exec.LookPath("gcc"); err != nil {
			t.Skip("gcc is not installed")
		}
		t.Fatal(buildErr)
	}
	return buildDir
}

// newSim makes a simulator: CCA 01.0033, 01.0034, 02.0033 in one domain
// group (CRP01, CRP02), CCA 03.0035 in another (CRP03, other master keys),
// EP11 06.0033 and 07.0033 in one group.
func newSim(t *testing.T) (*sim.HSM, string) {
	t.Helper()
	dir := t.TempDir()
	err := sim.Init(dir, sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("01.0034"), apqn.MustParse("02.0033")}},
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("03.0035")}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033"), apqn.MustParse("07.0033")}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := sim.Open(dir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, dir
}

// driver is a running c/driver.c with one of the doubles loaded.
type driver struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startDriver(t *testing.T, lib, simDir string, env ...string) *driver {
	t.Helper()
	dir := build(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "driver"), filepath.Join(dir, lib))
	cmd.Env = append(os.Environ(), "PKCSHSM_HOSTDOUBLE_HSMSIM="+self, "PKCSHSM_SIM_DIR="+simDir)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = &testWriter{t: t}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	d.out.Buffer(make([]byte, 1<<20), 1<<20)
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("driver: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("driver did not exit")
		}
	})
	return d
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("driver stderr: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// result is one call's answer: the return value and, per argument, "-",
// a long's value or a buffer's bytes.
type result struct {
	ret  uint64
	args []string
}

func (r result) long(i int) int64 {
	var v int64
	fmt.Sscan(r.args[i], &v)
	return v
}

func (r result) bytes(i int) []byte {
	if r.args[i] == "=" {
		return nil
	}
	b, err := hex.DecodeString(r.args[i])
	if err != nil {
		panic(fmt.Sprintf("argument %d is not a buffer: %q", i, r.args[i]))
	}
	return b
}

// codes is a CCA call's return and reason code.
func (r result) codes() [2]int64 { return [2]int64{r.long(0), r.long(1)} }

// do runs one driver line ("call NAME ARGS", optionally prefixed by
// "thread " or "fork ").
func (d *driver) do(format string, args ...any) result {
	d.t.Helper()
	line := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(d.in, line); err != nil {
		d.t.Fatalf("driver: %v", err)
	}
	if !d.out.Scan() {
		d.t.Fatalf("driver ended at %q: %v", line, d.out.Err())
	}
	f := strings.Fields(d.out.Text())
	if len(f) < 2 || f[0] != "ok" {
		d.t.Fatalf("%s: %s", line, d.out.Text())
	}
	var r result
	fmt.Sscan(f[1], &r.ret)
	r.args = f[2:]
	return r
}

// par runs one call in n threads at once ("par N call ...").
func (d *driver) par(n int, format string, args ...any) []result {
	d.t.Helper()
	line := fmt.Sprintf("par %d "+format, append([]any{n}, args...)...)
	if _, err := fmt.Fprintln(d.in, line); err != nil {
		d.t.Fatalf("driver: %v", err)
	}
	if !d.out.Scan() {
		d.t.Fatalf("driver ended at %q: %v", line, d.out.Err())
	}
	var out []result
	for _, part := range strings.Split(d.out.Text(), " | ") {
		f := strings.Fields(part)
		if len(f) < 2 || f[0] != "ok" {
			d.t.Fatalf("%s: %s", line, part)
		}
		var r result
		fmt.Sscan(f[1], &r.ret)
		r.args = f[2:]
		out = append(out, r)
	}
	if len(out) != n {
		d.t.Fatalf("%s: %d answers", line, len(out))
	}
	return out
}

// hx is hex for a driver argument.
func hx(b []byte) string { return hex.EncodeToString(b) }
