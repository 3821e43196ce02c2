package host_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/cca"
	"github.com/pkcshsm/pkcshsm/hsm/ep11"
	"github.com/pkcshsm/pkcshsm/hsm/host"
	"github.com/pkcshsm/pkcshsm/hsm/hostdouble"
	"github.com/pkcshsm/pkcshsm/hsm/hsmtest"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The contract suite runs against the host backends with IBM's libraries
// replaced by the test doubles (hsm/hostdouble, built here with gcc as
// `make host-doubles` does). The doubles start their servers as
// PKCSHSM_HOSTDOUBLE_HSMSIM; that is this test binary, which serves as
// `hsmsim host-double` when started with those arguments.

func TestMain(m *testing.M) {
	for i, a := range os.Args {
		if a == "host-double" && i > 0 {
			os.Exit(serve(os.Args[1:]))
		}
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// serve is `hsmsim [--dir DIR] host-double --lib LIB`.
func serve(args []string) int {
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
	if err := srv.Serve(context.Background(), os.Stdin, os.Stdout); err != nil && err != io.EOF {
		fmt.Fprintln(os.Stderr, "test server:", err)
		return 1
	}
	return 0
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// doubles builds the doubles that exist; the EP11 double is "" until
// hsm/hostdouble has one.
func doubles(t *testing.T) (ccaLib, ep11Lib string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the host-library doubles are Linux libraries")
	}
	src := filepath.Join("..", "hostdouble", "c")
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "host-contract-")
		if buildErr != nil {
			return
		}
		cc := os.Getenv("CC")
		if cc == "" {
			cc = "gcc"
		}
		flags := []string{"-std=gnu11", "-O1", "-fPIC", "-shared", "-fvisibility=hidden"}
		libs := map[string]string{"libcsulcca.so": "csulcca.c", "libep11.so": "ep11.c"}
		for out, file := range libs {
			if _, err := os.Stat(filepath.Join(src, file)); err != nil {
				continue
			}
			args := append(append([]string{}, flags...), "-o", filepath.Join(buildDir, out),
				filepath.Join(src, "transport.c"), filepath.Join(src, file), "-lpthread")
			if o, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, o)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	ccaLib = filepath.Join(buildDir, "libcsulcca.so")
	if _, err := os.Stat(filepath.Join(buildDir, "libep11.so")); err == nil {
		ep11Lib = filepath.Join(buildDir, "libep11.so")
	}
	return ccaLib, ep11Lib
}

var (
	ccaIDs  = []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033"), apqn.MustParse("03.0034")}
	ep11IDs = []apqn.ID{apqn.MustParse("06.0033"), apqn.MustParse("07.0033")}
)

// copyLib copies a double to a fresh path: dlopen of a new path is a new
// instance of the library, with no servers of an earlier simulator.
func copyLib(t *testing.T, lib string) string {
	t.Helper()
	raw, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(lib))
	if err := os.WriteFile(p, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// newEnv makes a simulator and opens the host backends over it through
// the doubles.
func newEnv(t *testing.T) (*host.Backend, *sim.HSM) {
	t.Helper()
	ccaLib, ep11Lib := doubles(t)
	dir := t.TempDir()
	err := sim.Init(dir, sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: ccaIDs[:2]},
		{Mode: apqn.ModeCCA, APQNs: ccaIDs[2:]},
		{Mode: apqn.ModeEP11, APQNs: ep11IDs},
	}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := sim.Open(dir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PKCSHSM_HOSTDOUBLE_HSMSIM", self)
	t.Setenv("PKCSHSM_SIM_DIR", dir)
	t.Setenv("CSU_DEFAULT_DOMAIN", "DOM-ANY")
	lib, err := cca.Load(copyLib(t, ccaLib))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lib.Close() })
	if ep11Lib == "" {
		t.Fatal("hsm/hostdouble/c/ep11.c is missing")
	}
	el, err := ep11.Load(copyLib(t, ep11Lib))
	if err != nil {
		t.Fatal(err)
	}
	eb := ep11.New(el, h.SysfsRoot())
	t.Cleanup(func() { eb.Close(); el.Close() })
	return host.New(h.SysfsRoot(), cca.New(lib, h.SysfsRoot()), eb), h
}

// hostLimits are the libraries' (docs/ARCHITECTURE.md, "Host
// libraries"): four of the CCA library as openCryptoki uses it, and the
// EP11 library reports no session count.
var hostLimits = hsmtest.Limits{NoCCAKeyWrap: true, NoCCAImport: true, NoCCAOAEPLabel: true, NoCCASymOldPattern: true, NoCCADES3ECB: true,
	NoEP11SessionStatus: true}

// TestContract: the whole suite, CCA through the CCA double, EP11
// through the EP11 double.
func TestContract(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) hsmtest.Env {
		b, h := newEnv(t)
		return hsmtest.Env{Backend: b, Officer: h, CCA: ccaIDs, EP11: ep11IDs, Limits: hostLimits}
	})
}

// TestConcurrentDomains: goroutines on APQNs of two domains (with
// different master keys) at once through the CCA double. Each key must
// come back under the CURRENT master key of its own APQN: a call run on
// the wrong adapter or domain would make it under the other group's key
// (or be refused by the double's per-thread and per-process selection).
func TestConcurrentDomains(t *testing.T) {
	b, _ := newEnv(t)
	ctx := context.Background()
	want := map[apqn.ID]mkvp.Pattern{}
	for _, q := range ccaIDs {
		info, err := b.Queue(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		want[q] = info.MK[mkvp.CCAAES].Current.Pattern
	}
	if want[ccaIDs[0]] == want[ccaIDs[2]] {
		t.Fatal("test set-up: the two domain groups share the AES master key")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				q := ccaIDs[(g+i)%len(ccaIDs)]
				blob, err := b.GenerateKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", q, err)
					return
				}
				info, err := hsm.Inspect(blob)
				if err != nil || info.Pattern != want[q] {
					errs <- fmt.Errorf("%s: key under %s, want %s (%v)", q, info.Pattern, want[q], err)
					return
				}
				if _, err := b.Encrypt(ctx, q, blob, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
					errs <- fmt.Errorf("%s: encrypt: %w", q, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
