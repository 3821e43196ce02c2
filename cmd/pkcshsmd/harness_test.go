package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// The binaries under test (internal/testenv: built once per go test run,
// in a world-readable directory, for the uid-switching test): the daemon a
// race build when the tests are, the client processes never (they stay
// small).
var (
	daemonBin string
	appBin    string
)

func TestMain(m *testing.M) {
	var err error
	if daemonBin, err = testenv.ProgramPath("cmd/pkcshsmd", testenv.RaceFlags...); err == nil {
		appBin, err = testenv.ProgramPath("runtime/internal/fakeapp")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// syncBuffer collects a daemon's log.
type syncBuffer = testenv.SyncBuffer

// sandbox is a temporary PKCSHSM_ROOT with a short path (socket paths are
// limited to 107 bytes), readable by everyone so other uids can reach it.
type sandbox struct {
	root, app, admin string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	root, err := os.MkdirTemp("", "hsmd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	os.MkdirAll(filepath.Join(root, "run"), 0o755)
	os.Chmod(filepath.Join(root, "run"), 0o755)
	return sandbox{root: root,
		app:   filepath.Join(root, "run", "pkcshsm", "app.sock"),
		admin: filepath.Join(root, "run", "pkcshsm", "admin.sock")}
}

func (s sandbox) env(extra ...string) []string {
	return append(append(os.Environ(), "PKCSHSM_ROOT="+s.root, "GOMAXPROCS=1"), extra...)
}

type daemon struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error // valid after done
}

// startDaemon runs the real pkcshsmd in the sandbox and waits until it
// answers a status request.
func startDaemon(t testing.TB, sb sandbox, args ...string) *daemon {
	t.Helper()
	d := &daemon{logs: &syncBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(daemonBin, append([]string{"--log-level", "debug"}, args...)...)
	d.cmd.Env = sb.env()
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	waitFor(t, "the daemon to answer", func() bool {
		select {
		case <-d.done:
			t.Fatalf("daemon exited: %v\n%s", d.err, d.logs.String())
		default:
		}
		c, err := admin.Dial(context.Background(), sb.admin)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.Status(context.Background())
		return err == nil
	})
	return d
}

// stop sends SIGTERM and requires a clean exit with status 0.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit within 30s of SIGTERM")
	}
	if d.err != nil {
		t.Fatalf("daemon exit: %v\n%s", d.err, d.logs.String())
	}
}

// app is one fakeapp process.
type app struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (a *app) pid() int32 { return int32(a.cmd.Process.Pid) }

func startApp(t testing.TB, sb sandbox, args ...string) *app {
	t.Helper()
	a := &app{done: make(chan struct{})}
	a.cmd = exec.Command(appBin, append([]string{"-socket", sb.app}, args...)...)
	a.cmd.Env = sb.env()
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGCONT)
		a.cmd.Process.Kill()
		<-a.done
	})
	return a
}

func dialAdmin(t testing.TB, sb sandbox) *admin.Client {
	t.Helper()
	c, err := admin.Dial(context.Background(), sb.admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds: tests wait by asking, never by
// sleeping for a guessed time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitConnected waits until exactly these pids are connected.
func waitConnected(t testing.TB, c *admin.Client, apps ...*app) {
	t.Helper()
	want := map[int32]bool{}
	for _, a := range apps {
		want[a.pid()] = true
	}
	waitFor(t, fmt.Sprintf("%d processes to connect", len(apps)), func() bool {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if len(st.Processes) != len(want) {
			return false
		}
		for _, p := range st.Processes {
			if !want[p.PID] {
				return false
			}
		}
		return true
	})
}

func byPID(acct event.Account) map[int32]event.ProcessResult {
	out := map[int32]event.ProcessResult{}
	for _, p := range acct.Processes {
		out[p.PID] = p
	}
	return out
}

// vmRSS reads a process's resident set size in KiB.
func vmRSS(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
