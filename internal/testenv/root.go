package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// The PINs every token of a root gets.
const (
	SOPIN   = "87654321"
	UserPIN = "12345678"
)

// The simulated adapters of every root: two CCA APQNs (allow-listed by
// ccatok.conf) and two EP11 APQNs (ep11tok.conf), as in the runbook.
var (
	CCAAPQNs  = []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}
	EP11APQNs = []apqn.ID{apqn.MustParse("06.0033"), apqn.MustParse("0e.0033")}
)

// Slot is one slot of pkcshsm.conf.
type Slot struct {
	ID    uint
	Type  string // "cca" or "ep11"
	Label string // tokname and token label
	// Options are lines of the token's own configuration file after its
	// APQN allow-list (STRICT_MODE, VHSM_MODE); a slot with options gets
	// <Label>.conf, the others share <Type>tok.conf.
	Options string
}

func (s Slot) confName() string {
	if s.Options != "" {
		return s.Label + ".conf"
	}
	return s.Type + "tok.conf"
}

// CCA is a CCA slot whose token is named "cca", "cca<id>" for a second one.
func CCA(id uint) Slot { return Slot{ID: id, Type: "cca", Label: name("cca", id)} }

// EP11 is an EP11 slot whose token is named "ep11" (see CCA).
func EP11(id uint) Slot { return Slot{ID: id, Type: "ep11", Label: name("ep11", id)} }

func name(kind string, id uint) string {
	if (kind == "cca" && id == 2) || (kind == "ep11" && id == 4) {
		return kind
	}
	return fmt.Sprint(kind, id)
}

// Root is a temporary pkcshsm root: simulated adapters and pkcshsm.conf.
// PKCSHSM_ROOT is set to it for the test (so not with t.Parallel) unless
// the root is made by NewRootParallel.
type Root struct {
	T      testing.TB
	Layout paths.Layout
	Slots  []Slot
}

// NewRoot makes a root with the given slots and sets PKCSHSM_ROOT to it.
func NewRoot(t testing.TB, slots ...Slot) *Root {
	t.Helper()
	r := NewRootParallel(t, slots...)
	t.Setenv(paths.EnvRoot, r.Layout.Root)
	return r
}

// NewRootParallel makes a root without touching the environment: tests
// that run in parallel pass r.Env() to what they start (Run and the other
// methods do).
func NewRootParallel(t testing.TB, slots ...Slot) *Root {
	t.Helper()
	if len(slots) == 0 {
		slots = []Slot{CCA(2)}
	}
	// A short path under the system temporary directory, not t.TempDir():
	// the daemon's sockets hang off the root, and a Unix socket path has
	// at most 107 bytes. World-readable, for processes of another uid.
	dir, err := os.MkdirTemp("", "pkr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Root{T: t, Layout: paths.Layout{Root: dir}, Slots: slots}
	topo := sim.Topology{Groups: []sim.Group{{Mode: apqn.ModeCCA, APQNs: CCAAPQNs}, {Mode: apqn.ModeEP11, APQNs: EP11APQNs}}}
	if err := sim.Init(r.Layout.SimDir(), topo); err != nil {
		t.Fatal(err)
	}
	allow := map[string]string{"cca": "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n", "ep11": "APQN_ALLOWLIST\n6 0x33\n14 0x33\nEND\n"}
	files := map[string]string{"pkcshsm.conf": r.conf(""), "ccatok.conf": allow["cca"], "ep11tok.conf": allow["ep11"]}
	for _, s := range slots {
		files[s.confName()] = allow[s.Type] + s.Options
	}
	if err := os.MkdirAll(r.Layout.ConfDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(r.Layout.ConfDir(), n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Copy copies the whole root (adapters, tokens, configuration, state) to a
// new temporary root for the test t, its configuration naming the copy's
// adapters: a template made once, copied for each of many runs. A failed
// test keeps the copy for inspection (its path is logged).
func (r *Root) Copy(t testing.TB) *Root {
	t.Helper()
	dir, err := os.MkdirTemp("", "pkr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("root kept for inspection: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err := os.CopyFS(dir, os.DirFS(r.Layout.Root)); err != nil {
		t.Fatal(err)
	}
	c := &Root{T: t, Layout: paths.Layout{Root: dir}, Slots: r.Slots}
	if err := os.WriteFile(c.Layout.GlobalConf(), []byte(c.conf("")), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *Root) conf(global string) string {
	// simulator-dir explicitly: the default comes from PKCSHSM_ROOT, which
	// a parallel test does not set in its own process.
	conf := "hsm-backend = simulator\nsimulator-dir = " + r.Layout.SimDir() + "\n" + global
	for _, s := range r.Slots {
		conf += fmt.Sprintf("slot %d {\n\ttoken-type = %s\n\ttokname = %s\n\tconfname = %s\n}\n", s.ID, s.Type, s.Label, s.confName())
	}
	return conf
}

// NoEvents writes disable-event-support into pkcshsm.conf: the tools then
// neither need nor ask a daemon (tests of the token-object passes only).
func (r *Root) NoEvents() {
	r.T.Helper()
	if err := os.WriteFile(r.Layout.GlobalConf(), []byte(r.conf("disable-event-support\n")), 0o644); err != nil {
		r.T.Fatal(err)
	}
}

// Env is the environment of a process started in this root.
func (r *Root) Env() []string { return append(os.Environ(), paths.EnvRoot+"="+r.Layout.Root) }

// Token initialises the token of slot id (SO PIN SOPIN, USER PIN UserPIN,
// the USER PIN already changed) and creates n public AES token keys
// labelled k0, k1, ... in it, through the token library in this process.
func (r *Root) Token(id uint, n int) {
	t := r.T
	t.Helper()
	var label string
	for _, s := range r.Slots {
		if s.ID == id {
			label = s.Label
		}
	}
	if label == "" {
		t.Fatalf("testenv: no slot %d in this root", id)
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: r.Layout, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	slot := tokenlib.SlotID(id)
	if err := lib.InitToken(slot, []byte(SOPIN), label); err != nil {
		t.Fatal(err)
	}
	s, err := lib.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	if err := lib.Login(s, ck.CKU_SO, []byte(SOPIN)); err != nil {
		t.Fatal(err)
	}
	if err := lib.InitPIN(s, []byte(UserPIN)); err != nil {
		t.Fatal(err)
	}
	lib.Logout(s)
	if err := lib.Login(s, ck.CKU_USER, []byte(UserPIN)); err != nil {
		t.Fatal(err)
	}
	// SetPIN to the same PIN clears CKF_USER_PIN_TO_BE_CHANGED.
	if err := lib.SetPIN(s, []byte(UserPIN), []byte(UserPIN)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := lib.GenerateKey(s, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN}, []tokenlib.Attribute{
			tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.Bool(ck.CKA_PRIVATE, false),
			tokenlib.String(ck.CKA_LABEL, fmt.Sprint("k", i)),
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// Sim opens the simulated adapters (the officer's view), closed at cleanup.
func (r *Root) Sim() *sim.HSM {
	r.T.Helper()
	h, err := sim.Open(r.Layout.SimDir(), sim.Options{})
	if err != nil {
		r.T.Fatal(err)
	}
	r.T.Cleanup(func() { h.Close() })
	return h
}

// Result is a finished command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Out is stdout and stderr, for messages.
func (res Result) Out() string { return res.Stdout + res.Stderr }

// PIN is the standard input that answers the given PINs or answers, one a
// line.
func PIN(lines ...string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// Cmd returns the command name (one of Commands) with args in this root,
// not started; the caller sets what else it needs.
func (r *Root) Cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(Bin(r.T, name), args...)
	cmd.Env = r.Env()
	return cmd
}

// Run runs the command name with args and stdin to its end.
func (r *Root) Run(name, stdin string, args ...string) Result {
	r.T.Helper()
	return r.run(r.Cmd(name, args...), stdin)
}

// run runs cmd to its end with stdin.
func (r *Root) run(cmd *exec.Cmd, stdin string) Result {
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	res := Result{Code: exitCode(r.T, cmd.Run())}
	res.Stdout, res.Stderr = out.String(), errb.String()
	return res
}

func exitCode(t testing.TB, err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// Process is a started background process (daemon, application).
type Process struct {
	Cmd *exec.Cmd
	Log *SyncBuffer // stdout and stderr
	t   testing.TB

	once sync.Once
	err  error
	done chan struct{}
}

func (r *Root) start(cmd *exec.Cmd) *Process { return Start(r.T, cmd) }

// Start starts cmd in the background, its standard output and error (where
// not set) collected in Log; it is killed at cleanup.
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, Log: &SyncBuffer{}, t: t, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.Log
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.Log
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the error of exec.Cmd.Wait once the process has ended (Done).
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Stop sends SIGTERM and waits for the exit code.
func (p *Process) Stop() int {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait()
}

// Wait waits for the exit and returns its code (128+signal when killed).
func (p *Process) Wait() int {
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		p.t.Fatalf("%s did not exit:\n%s", p.Cmd.Path, p.Log)
	}
	return exitCode(p.t, p.err)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Daemon starts pkcshsmd with args and waits until its admin and
// application sockets exist. It is killed at cleanup.
func (r *Root) Daemon(args ...string) *Process {
	r.T.Helper()
	p := r.start(r.Cmd("pkcshsmd", append([]string{"--log-level", "warn"}, args...)...))
	r.waitFor(p, "the daemon's sockets", func() bool {
		_, e1 := os.Stat(r.Layout.AdminSocket())
		_, e2 := os.Stat(r.Layout.AppSocket())
		return e1 == nil && e2 == nil
	})
	return p
}

// App starts p11load on the slots (logged in with UserPIN) and waits until
// its keys are set up. Extra p11load flags follow the slots.
func (r *Root) App(slots []uint, args ...string) *Process {
	r.T.Helper()
	ids := make([]string, len(slots))
	for i, s := range slots {
		ids[i] = fmt.Sprint(s)
	}
	ready := filepath.Join(r.T.TempDir(), "ready")
	cmd := r.Cmd("p11load", append([]string{"-slots", strings.Join(ids, ","), "-ready", ready}, args...)...)
	cmd.Stdin = strings.NewReader(UserPIN + "\n")
	p := r.start(cmd)
	r.waitFor(p, "p11load's keys", func() bool { _, err := os.Stat(ready); return err == nil })
	return p
}

func (r *Root) waitFor(p *Process, what string, cond func() bool) {
	r.T.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if p.Exited() {
			r.T.Fatalf("%s exited before %s were ready:\n%s", p.Cmd.Path, what, p.Log)
		}
		if time.Now().After(deadline) {
			r.T.Fatalf("%s not ready after a minute:\n%s", what, p.Log)
		}
		time.Sleep(10 * time.Millisecond) // polling for a file another process makes
	}
}

// SyncBuffer is a bytes.Buffer safe for a process's writes and a test's
// reads at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ io.Writer = (*SyncBuffer)(nil)

// Bash runs the bash script to its end with the built binaries first on
// PATH, in this root, with stdin (for redirections and pipelines).
func (r *Root) Bash(stdin, script string) Result {
	r.T.Helper()
	dir, err := BinDir()
	if err != nil {
		r.T.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(r.Env(), "PATH="+dir+":"+os.Getenv("PATH"))
	cmd.Dir = r.T.TempDir()
	return r.run(cmd, stdin)
}
