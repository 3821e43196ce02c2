package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

func TestFanOut100(t *testing.T) {
	sb := newSandbox(t)
	startDaemon(t, sb)
	c := dialAdmin(t, sb)
	const n = 100
	apps := make([]*app, n)
	for i := range apps {
		apps[i] = startApp(t, sb, "-tokens", "2")
	}
	waitConnected(t, c, apps...)

	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test.fanout", OpID: "Ab12Cd",
		Timeout: event.TimeoutOf(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if err := acct.Err(); err != nil {
		t.Fatalf("account: %v", err)
	}
	got := byPID(acct)
	if len(got) != n || len(acct.Processes) != n {
		t.Fatalf("account lists %d processes (%d distinct), want %d", len(acct.Processes), len(got), n)
	}
	for _, a := range apps {
		p, ok := got[a.pid()]
		if !ok {
			t.Errorf("pid %d missing from the account", a.pid())
			continue
		}
		if p.Outcome != event.Replied || len(p.Results) != 2 || p.Program != "fakeapp" || len(p.Tokens) != 2 {
			t.Errorf("pid %d: %+v", a.pid(), p)
		}
	}
	if tl := acct.Tally(); tl.Affected != 2*n || tl.Replied != n {
		t.Errorf("tally %+v", tl)
	}
}

func TestStoppedHungAndKilledProcesses(t *testing.T) {
	sb := newSandbox(t)
	startDaemon(t, sb)
	c := dialAdmin(t, sb)
	good := startApp(t, sb)
	stopped := startApp(t, sb)
	hung := startApp(t, sb, "-hang")
	doomed := startApp(t, sb, "-hang")
	waitConnected(t, c, good, stopped, hung, doomed)

	if err := stopped.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer stopped.cmd.Process.Signal(syscall.SIGCONT)
	// kill(2) returns before every thread of the target has stopped; on a
	// loaded machine one may still run. Ask the kernel until it says so.
	waitFor(t, "the process to be stopped", func() bool { return procState(stopped.pid()) == "T" })

	deadline := time.Now().Add(3 * time.Second)
	type result struct {
		acct event.Account
		err  error
	}
	first := make(chan result, 1)
	go func() {
		a, err := dialAdmin(t, sb).Broadcast(context.Background(), event.Event{Type: "test.slow", Timeout: event.TimeoutOf(time.Until(deadline))})
		first <- result{a, err}
	}()
	waitFor(t, "the broadcast to be pending", func() bool {
		st, err := c.Status(context.Background())
		return err == nil && st.Pending == 1
	})
	// Neither the stopped nor the hung process holds up other work.
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test.quick",
		Target: &event.Target{PIDs: []int32{good.pid()}}, Timeout: event.TimeoutOf(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().After(deadline) {
		t.Errorf("a broadcast to a healthy process waited for the hung ones")
	}
	if p := byPID(acct); len(p) != 1 || p[good.pid()].Outcome != event.Replied {
		t.Errorf("targeted broadcast: %+v", acct.Processes)
	}

	doomed.cmd.Process.Kill()
	r := <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := byPID(r.acct)
	want := map[int32]event.ProcessOutcome{good.pid(): event.Replied, stopped.pid(): event.TimedOut,
		hung.pid(): event.TimedOut, doomed.pid(): event.Disconnected}
	role := map[int32]string{good.pid(): "good", stopped.pid(): "stopped", hung.pid(): "hung", doomed.pid(): "killed"}
	for pid, w := range want {
		if got[pid].Outcome != w {
			t.Errorf("pid %d (%s): outcome %q, want %q; results %+v", pid, role[pid], got[pid].Outcome, w, got[pid].Results)
		}
	}
	if len(got) != len(want) {
		t.Errorf("account lists %d processes, want %d", len(got), len(want))
	}
	err = r.acct.Err()
	if !errors.Is(err, errclass.DeadlineExceeded) || !strings.Contains(err.Error(), "disconnected") {
		t.Errorf("account error: %v", err)
	}

	// After SIGCONT the stopped process answers again; its stale reply to
	// the old event is dropped.
	stopped.cmd.Process.Signal(syscall.SIGCONT)
	acct, err = c.Broadcast(context.Background(), event.Event{Type: "test.after",
		Target: &event.Target{ExcludePIDs: []int32{hung.pid()}}, Timeout: event.TimeoutOf(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if p := byPID(acct); len(p) != 2 || p[stopped.pid()].Outcome != event.Replied || p[good.pid()].Outcome != event.Replied {
		t.Errorf("after SIGCONT: %+v", acct.Processes)
	}
}

func TestDaemonRestartAgentsReconnect(t *testing.T) {
	sb := newSandbox(t)
	d := startDaemon(t, sb)
	c := dialAdmin(t, sb)
	ops := filepath.Join(sb.root, "var", "lib", "pkcshsm", "HSM_MK_CHANGE")
	logs := make([]string, 3)
	apps := make([]*app, 3)
	for i := range apps {
		logs[i] = filepath.Join(sb.root, "reconcile"+string(rune('a'+i)))
		apps[i] = startApp(t, sb, "-reconcile-log", logs[i], "-ops-dir", ops)
	}
	waitConnected(t, c, apps...)
	lines := func(path string) int {
		b, _ := os.ReadFile(path)
		return bytes.Count(b, []byte("\n"))
	}
	for _, l := range logs {
		waitFor(t, "the reconcile at start", func() bool { return lines(l) >= 1 })
	}

	// Restart midway: a broadcast is pending (a hung process holds it open)
	// when the daemon gets SIGTERM.
	hung := startApp(t, sb, "-hang")
	waitConnected(t, c, append(apps, hung)...)
	pending := make(chan error, 1)
	go func() {
		acct, err := dialAdmin(t, sb).Broadcast(context.Background(), event.Event{Type: "test.midway",
			Timeout: event.TimeoutOf(time.Minute)})
		if err == nil && byPID(acct)[hung.pid()].Outcome == event.Replied {
			err = errors.New("the hung process replied")
		}
		pending <- err
	}()
	waitFor(t, "the broadcast to be pending", func() bool {
		st, err := c.Status(context.Background())
		return err == nil && st.Pending == 1
	})
	d.stop(t)
	if err := <-pending; err != nil && !errors.Is(err, errclass.Unavailable) {
		t.Errorf("broadcast cut short by the restart: %v, want an account or an Unavailable error", err)
	}
	for _, s := range []string{sb.app, sb.admin} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left behind after SIGTERM: %v", s, err)
		}
	}
	before := make([]int, len(logs))
	for i, l := range logs {
		before[i] = lines(l)
	}

	startDaemon(t, sb)
	c = dialAdmin(t, sb)
	// The hung process is back too: its busy handler does not hold up the
	// reconnect.
	waitConnected(t, c, append(apps, hung)...)
	for i, l := range logs {
		waitFor(t, "a reconcile after the reconnect", func() bool { return lines(l) > before[i] })
	}
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test.after-restart",
		Target: &event.Target{ExcludePIDs: []int32{hung.pid()}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := acct.Err(); err != nil || len(acct.Processes) != 3 {
		t.Errorf("after restart: %v, %+v", err, acct.Processes)
	}

	// A change in the operations directory (created only now) reaches
	// every agent.
	for i := range before {
		before[i] = lines(logs[i])
	}
	if err := os.MkdirAll(ops, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ops, "Ab12Cd"), []byte("op"), 0o600)
	for i, l := range logs {
		waitFor(t, "a reconcile after the ops dir changed", func() bool { return lines(l) > before[i] })
	}
}

func TestAdminRefusedForOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	sb := newSandbox(t)
	// World-accessible sockets, so that only the daemon's peer check can
	// refuse the stranger.
	d := startDaemon(t, sb, "--admin-socket-mode", "0666", "--app-socket-mode", "0666",
		"--app-group", "", "--admin-group", "")
	c := dialAdmin(t, sb)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

	for _, mode := range []string{"broadcast", "status"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(appBin, "-admin", mode, "-socket", sb.admin)
			cmd.Env = sb.env()
			cmd.SysProcAttr = nobody
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want status 2; stderr %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "class: permission denied") || !strings.Contains(stderr.String(), "uid 65534") {
				t.Errorf("stderr %q: want a permission-denied refusal from the daemon", stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("refused request printed %q", stdout.String())
			}
		})
	}
	// An application process of a stranger is refused too.
	a := exec.Command(appBin, "-socket", sb.app)
	a.Env = sb.env()
	a.SysProcAttr = nobody
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { a.Process.Kill(); a.Wait() }()
	waitFor(t, "the refusal in the daemon log", func() bool {
		return strings.Contains(d.logs.String(), "may not use the application socket")
	})
	if st, err := c.Status(context.Background()); err != nil || len(st.Processes) != 0 {
		t.Errorf("status %+v, %v: the stranger must not be connected", st, err)
	}
	// The same requests from root still work.
	if _, err := c.Broadcast(context.Background(), event.Event{Type: "test"}); err != nil {
		t.Errorf("root broadcast: %v", err)
	}
}

func TestGarbageFramesWhileOthersWork(t *testing.T) {
	sb := newSandbox(t)
	d := startDaemon(t, sb)
	c := dialAdmin(t, sb)
	good := startApp(t, sb)
	waitConnected(t, c, good)

	hdr := func(n uint32) []byte { b := make([]byte, 4); binary.BigEndian.PutUint32(b, n); return b }
	wrongVersion := []byte(`{"v":7,"kind":"status_request","status_request":{}}`)
	var lie bytes.Buffer
	event.WriteMessage(&lie, event.Wrap(&event.Hello{PID: int32(os.Getpid()) + 1, UID: uint32(os.Getuid()), Program: "liar"}))
	tests := []struct {
		name, socket string
		send         []byte
		log          string
	}{
		{"garbage", sb.app, append(hdr(10), "\x00\x01garbage!"...), "malformed frame"},
		{"oversized", sb.app, hdr(0xffffffff), "exceeds the limit"},
		{"truncated", sb.admin, append(hdr(500), `{"v":1,"kind":`...), "truncated frame"},
		{"wrong version", sb.admin, append(hdr(uint32(len(wrongVersion))), wrongVersion...), "protocol version 7"},
		{"lying pid", sb.app, lie.Bytes(), "hello claims pid"},
	}
	var conns []net.Conn
	for _, tt := range tests {
		raw, err := net.Dial("unix", tt.socket)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, raw)
		defer raw.Close()
		raw.Write(tt.send)
		if tt.name == "truncated" {
			raw.(*net.UnixConn).CloseWrite()
		}
	}
	for i, raw := range conns {
		raw.SetReadDeadline(time.Now().Add(20 * time.Second))
		// The daemon closes each bad connection (after an error frame).
		for {
			_, err := event.ReadMessage(raw)
			if err == nil {
				continue
			}
			if !errors.Is(err, io.EOF) && errclass.Of(err) != errclass.InvalidArgument {
				t.Errorf("%s: connection not closed by the daemon: %v", tests[i].name, err)
			}
			break
		}
		waitFor(t, "a log line about "+tests[i].name, func() bool { return strings.Contains(d.logs.String(), tests[i].log) })
	}
	acct, err := c.Broadcast(context.Background(), event.Event{Type: "test.after-garbage"})
	if err != nil {
		t.Fatal(err)
	}
	if p := byPID(acct); len(p) != 1 || p[good.pid()].Outcome != event.Replied {
		t.Errorf("good client after garbage: %+v", acct.Processes)
	}
}

func TestSocketTakeover(t *testing.T) {
	sb := newSandbox(t)
	first := startDaemon(t, sb)

	// A second daemon refuses to steal the sockets of a live one.
	cmd := exec.Command(daemonBin)
	cmd.Env = sb.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "already listening") ||
		!strings.Contains(stderr.String(), "hint:") {
		t.Fatalf("second daemon: %v\n%s", err, stderr.String())
	}
	if _, err := dialAdmin(t, sb).Status(context.Background()); err != nil {
		t.Fatalf("first daemon disturbed: %v", err)
	}

	// A daemon killed hard leaves its socket files; the next one replaces them.
	first.cmd.Process.Kill()
	<-first.done
	if _, err := os.Lstat(sb.app); err != nil {
		t.Fatalf("expected a stale socket after SIGKILL: %v", err)
	}
	second := startDaemon(t, sb)
	waitFor(t, "the stale-socket log line", func() bool { return strings.Contains(second.logs.String(), "removed stale socket") })
	second.stop(t)
}

func TestReadinessNotification(t *testing.T) {
	sb := newSandbox(t)
	path := filepath.Join(sb.root, "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(daemonBin)
	cmd.Env = sb.env("NOTIFY_SOCKET=" + path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	l.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 128)
	n, err := l.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notification %q, %v", buf[:n], err)
	}
	// Ready means reachable.
	if _, err := dialAdmin(t, sb).Status(context.Background()); err != nil {
		t.Errorf("status right after READY=1: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	n, err = l.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("notification %q, %v", buf[:n], err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--frobnicate"}, "unknown flag"},
		{"bad mode", []string{"--app-socket-mode", "rw-rw----"}, "is not a file mode"},
		{"bad level", []string{"--log-level", "loud"}, "is not a level"},
		{"bad timeout", []string{"--timeout", "-1s"}, "--timeout"},
		{"timeout above max", []string{"--timeout", "2h", "--max-timeout", "1h"}, "do not fit"},
		{"argument", []string{"extra"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newSandbox(t)
			var stdout, stderr bytes.Buffer
			t.Setenv("PKCSHSM_ROOT", sb.root)
			code := runMain(tt.args, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), "pkcshsmd: error:") || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q, want an error mentioning %q", stderr.String(), tt.want)
			}
			if !strings.Contains(stderr.String(), "pkcshsmd: hint:") {
				t.Errorf("stderr %q has no hint", stderr.String())
			}
			if _, err := os.Stat(filepath.Join(sb.root, "run", "pkcshsm")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused start created the run directory: %v", err)
			}
		})
	}
}

// procState returns the state letter of a process from /proc/<pid>/stat
// ("T" for stopped), or "" when it cannot be read.
func procState(pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name in parentheses may hold blanks; the state follows it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}
