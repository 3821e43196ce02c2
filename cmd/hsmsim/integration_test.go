package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
)

// The integration test runs the officer (the hsmsim binary) and several
// applications as separate OS processes on one simulator. An application
// is this test binary re-executed with appEnv set: it opens the simulator
// at paths.FromEnv().SimDir(), as the tokens do, and answers one command
// per line on stdin.

const appEnv = "HSMSIM_TEST_APP"

var hsmsimBin string

func TestMain(m *testing.M) {
	if os.Getenv(appEnv) != "" {
		os.Exit(appMain(os.Stdin, os.Stdout))
	}
	// The binaries of this go test run, shared with the other packages
	// (internal/testenv).
	dir, err := testenv.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hsmsimBin = filepath.Join(dir, "hsmsim")
	os.Exit(m.Run())
}

// appMain is the application process. Commands:
//
//	gen APQN KEYTYPE BITS     → ok BLOBHEX
//	use APQN BLOBHEX          → ok  (an AES-GCM round trip)
//	reenc APQN BLOBHEX        → ok BLOBHEX   (to NEW)
//	regs APQN MKTYPE          → ok NEWSTATE NEWPATTERN CURSTATE CURPATTERN
//
// Failures answer "err CLASS WRONGMK MESSAGE".
func appMain(in io.Reader, out io.Writer) int {
	h, err := sim.Open(paths.FromEnv().SimDir(), sim.Options{})
	if err != nil {
		fmt.Fprintf(out, "err %s false %v\n", errclass.Of(err), err)
		return 1
	}
	defer h.Close()
	ctx := context.Background()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			fmt.Fprintln(out, "err invalid false bad command")
			continue
		}
		reply, err := appCommand(ctx, h, f)
		if err != nil {
			fmt.Fprintf(out, "err %s %v %s\n", strings.ReplaceAll(errclass.Of(err).String(), " ", "-"),
				errors.Is(err, hsm.ErrWrongMK), err)
			continue
		}
		fmt.Fprintln(out, strings.TrimSpace("ok "+reply))
	}
	return 0
}

func appCommand(ctx context.Context, h *sim.HSM, f []string) (string, error) {
	q, err := apqn.Parse(f[1])
	if err != nil {
		return "", err
	}
	blob := func() []byte {
		b, _ := hex.DecodeString(f[2])
		return b
	}
	switch f[0] {
	case "gen":
		var bits int
		fmt.Sscan(f[3], &bits)
		b, err := h.GenerateKey(ctx, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: bits})
		return hex.EncodeToString(b), err
	case "use":
		p := hsm.Params{IV: make([]byte, 12)}
		c, err := h.Encrypt(ctx, q, blob(), hsm.MechAESGCM, p, []byte("payload"))
		if err != nil {
			return "", err
		}
		d, err := h.Decrypt(ctx, q, blob(), hsm.MechAESGCM, p, c)
		if err == nil && string(d) != "payload" {
			err = errors.New("round trip changed the data")
		}
		return "", err
	case "reenc":
		b, err := h.Reencipher(ctx, q, blob(), hsm.ToNew)
		return hex.EncodeToString(b), err
	case "regs":
		t, err := mkvp.ParseType(f[2])
		if err != nil {
			return "", err
		}
		info, err := h.Queue(ctx, q)
		if err != nil {
			return "", err
		}
		r := info.MK[t]
		return fmt.Sprintf("%s %s %s %s", r.New.State, pat(r.New.Pattern), r.Current.State, pat(r.Current.Pattern)), nil
	}
	return "", errclass.New(errclass.InvalidArgument, "unknown command %q", f[0])
}

func pat(p mkvp.Pattern) string {
	if p.IsZero() {
		return "-"
	}
	return strings.ToLower(p.String())
}

// appProc is a running application process.
type appProc struct {
	t *testing.T
	d *testenv.Dialog
}

func startApp(t *testing.T, root string) *appProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), appEnv+"=1", paths.EnvRoot+"="+root)
	a := &appProc{t: t, d: testenv.StartDialog(t, cmd)}
	t.Cleanup(func() {
		if err := a.d.Close(); err != nil {
			t.Errorf("application process: %v", err)
		}
	})
	return a
}

// ask sends one command and waits for its answer.
func (a *appProc) ask(format string, args ...any) (ok bool, fields []string) {
	a.t.Helper()
	f := strings.Fields(a.d.Ask(fmt.Sprintf(format, args...)))
	return f[0] == "ok", f[1:]
}

func (a *appProc) must(format string, args ...any) []string {
	a.t.Helper()
	ok, f := a.ask(format, args...)
	if !ok {
		a.t.Fatalf("%s: %s", fmt.Sprintf(format, args...), strings.Join(f, " "))
	}
	return f
}

// wantWrongMK asserts the command failed with the wrong-master-key error.
func (a *appProc) wantWrongMK(format string, args ...any) {
	a.t.Helper()
	ok, f := a.ask(format, args...)
	if ok || f[0] != "failed-precondition" || f[1] != "true" {
		a.t.Fatalf("%s: %v, want a failed-precondition ErrWrongMK", fmt.Sprintf(format, args...), f)
	}
}

func officer(t *testing.T, root string, args ...string) string {
	t.Helper()
	cmd := exec.Command(hsmsimBin, args...)
	cmd.Env = append(os.Environ(), paths.EnvRoot+"="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hsmsim %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestProcessesSeeOfficerChanges(t *testing.T) {
	root := t.TempDir()
	officer(t, root, "init", "--cca", "01.0033,02.0033", "--ep11", "06.0033,0e.0033")
	apps := []*appProc{startApp(t, root), startApp(t, root)}

	type keys struct{ cca, ep11, ep11New string }
	ks := make([]keys, len(apps))
	for i, a := range apps {
		ks[i].cca = a.must("gen 01.0033 AES 256")[0]
		ks[i].ep11 = a.must("gen 06.0033 AES 256")[0]
		a.must("use 02.0033 %s", ks[i].cca) // same domain group, same keys
		a.must("use 0e.0033 %s", ks[i].ep11)
	}

	aesKey := strings.Repeat("a1", 32)
	wkKey := strings.Repeat("b2", 32)
	aesRaw, _ := hex.DecodeString(aesKey)
	wkRaw, _ := hex.DecodeString(wkKey)
	aesNew := pat(sim.PatternOf(mkvp.CCAAES, aesRaw))
	wkNew := pat(sim.PatternOf(mkvp.EP11WK, wkRaw))

	officer(t, root, "load-new", "--apqns", "01.0033,02.0033", "--type", "AES", "--key", aesKey)
	officer(t, root, "load-new", "--apqns", "06.0033,0e.0033", "--type", "WK", "--key", wkKey)
	for _, a := range apps {
		// The next operation of every process sees the loaded registers.
		if f := a.must("regs 02.0033 AES"); f[0] != "full" || f[1] != aesNew {
			t.Fatalf("app sees AES NEW %v, want full %s", f, aesNew)
		}
		if f := a.must("regs 0e.0033 WK"); f[0] != "uncommitted" || f[1] != wkNew {
			t.Fatalf("app sees WK NEW %v, want uncommitted %s", f, wkNew)
		}
		// Re-enciphering needs a committed wrapping key.
		if ok, f := a.ask("reenc 06.0033 %s", ks[0].ep11); ok || f[0] != "failed-precondition" || f[1] != "false" {
			t.Fatalf("re-encipher to an uncommitted WK: %v", f)
		}
	}
	officer(t, root, "commit", "--apqns", "06.0033,0e.0033")
	for i, a := range apps {
		ks[i].ep11New = a.must("reenc 06.0033 %s", ks[i].ep11)[0]
		a.wantWrongMK("use 06.0033 %s", ks[i].ep11New) // not yet active
		a.must("use 06.0033 %s", ks[i].ep11)
	}

	officer(t, root, "set", "--apqns", "01.0033,02.0033", "--type", "AES")
	officer(t, root, "set", "--apqns", "06.0033,0e.0033")
	for i, a := range apps {
		if f := a.must("regs 01.0033 AES"); f[0] != "empty" || f[2] != "valid" || f[3] != aesNew {
			t.Fatalf("app %d sees AES %v after set, want CURRENT %s", i, f, aesNew)
		}
		if f := a.must("regs 0e.0033 WK"); f[0] != "empty" || f[3] != wkNew {
			t.Fatalf("app %d sees WK %v after set, want CURRENT %s", i, f, wkNew)
		}
		for _, q := range []string{"01.0033", "02.0033"} {
			a.must("use %s %s", q, ks[i].cca) // CCA: still good through OLD
		}
		for _, q := range []string{"06.0033", "0e.0033"} {
			a.wantWrongMK("use %s %s", q, ks[i].ep11) // EP11: dead at once
			a.must("use %s %s", q, ks[i].ep11New)     // re-enciphered before set
		}
	}
	// The view in sysfs agrees.
	m, err := apqn.Bus{Root: paths.Layout{Root: root}.SimSysfs()}.MKVPs(apqn.MustParse("0e.0033"))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := m.Lookup("WK", "CUR"); l.State != apqn.StateValid || hex.EncodeToString(l.Pattern[:16]) != wkNew {
		t.Fatalf("sysfs WK CUR = %+v, want %s", l, wkNew)
	}
}
