package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/runtime/event"
)

// stackBin is one of the whole stack's clients (the simulator, the token
// tools, the master key change tool and the load-generating application)
// from internal/testenv, built once per go test run. Not race builds:
// they are the clients, the daemon is the race build.
func stackBin(t testing.TB, name string) string { return testenv.Bin(t, name) }

const (
	soPIN   = "87654321"
	userPIN = "12345678"
	ccaAPQN = "01.0033"
	ep11AP  = "06.0033"
)

// stack is a temporary root with one simulated CCA and one EP11 APQN, a
// CCA token in slot 2 and an EP11 token in slot 4 (each with a few keys),
// and the real pkcshsmd.
type stack struct {
	t      *testing.T
	sb     sandbox
	daemon *daemon
	ops    string // the operations directory
}

func newStack(t *testing.T, daemonArgs ...string) *stack {
	t.Helper()
	s := &stack{t: t, sb: newSandbox(t)}
	s.ops = filepath.Join(s.sb.root, "var", "lib", "pkcshsm", "HSM_MK_CHANGE")
	s.must("", "hsmsim", "init", "--cca", ccaAPQN, "--ep11", ep11AP)
	conf := filepath.Join(s.sb.root, "etc", "pkcshsm")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"pkcshsm.conf": "hsm-backend = simulator\n" +
			"slot 2 {\n\ttoken-type = cca\n\ttokname = cca\n\tconfname = ccatok.conf\n}\n" +
			"slot 4 {\n\ttoken-type = ep11\n\ttokname = ep11\n\tconfname = ep11tok.conf\n}\n",
		"ccatok.conf":  "version cca-0\nAPQN_ALLOWLIST\n1 0x33\nEND\n",
		"ep11tok.conf": "APQN_ALLOWLIST\n6 0x33\nEND\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, slot := range []string{"2", "4"} {
		s.must(soPIN+"\n"+soPIN+"\n", "pkcshsm", "token", "init", "--slot", slot, "--label", "tok"+slot)
		s.must(soPIN+"\n"+userPIN+"\n"+userPIN+"\n", "pkcshsm", "pin", "set", "--slot", slot)
		for _, typ := range []string{"aes", "ec"} {
			s.must(userPIN+"\n", "pkcshsm", "keys", "generate", "--slot", slot, "--type", typ, "--label", slot+"-"+typ)
		}
	}
	s.daemon = startDaemon(t, s.sb, daemonArgs...)
	return s
}

// run runs one of the stack's binaries with stdin and returns its exit
// status and combined output.
// A command of the stack that runs longer than this is blocked: the test
// fails instead of hanging.
const commandLimit = 90 * time.Second

func (s *stack) run(stdin, name string, args ...string) (int, string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, stackBin(s.t, name), args...)
	cmd.Env = s.sb.env()
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		s.t.Fatalf("%s %s blocked: killed after %s\n%s", name, strings.Join(args, " "), commandLimit, out.String())
	}
	if cmd.ProcessState == nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	s.t.Logf("%s %s: exit %d after %s", name, strings.Join(args, " "), cmd.ProcessState.ExitCode(),
		time.Since(start).Round(time.Millisecond))
	return cmd.ProcessState.ExitCode(), out.String()
}

func (s *stack) must(stdin, name string, args ...string) string {
	s.t.Helper()
	code, out := s.run(stdin, name, args...)
	if code != 0 {
		s.t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

// loadNew loads a new master key into the NEW register (committed, for
// EP11) and returns its pattern as reencipher takes it.
func (s *stack) loadNew(q, typ string) string {
	s.t.Helper()
	out := s.must("", "hsmsim", "load-new", "--apqns", q, "--type", typ)
	f := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if len(f) < 5 {
		s.t.Fatalf("hsmsim load-new printed %q", out)
	}
	if typ == "WK" {
		s.must("", "hsmsim", "commit", "--apqns", q)
	}
	return strings.TrimPrefix(f[4], "0x")
}

var createdRE = regexp.MustCompile(`Master key change operation '([A-Za-z0-9]{6})' created`)

// reencipher starts a change of the AES master key (CCA) or the wrapping
// key (EP11) and returns the exit status, output and operation id.
func (s *stack) reencipher(ep11 bool, pattern string, extra ...string) (int, string, string) {
	s.t.Helper()
	args := []string{"reencipher", "-a", ccaAPQN, "-A", pattern}
	if ep11 {
		args = []string{"reencipher", "-a", ep11AP, "-e", pattern}
	}
	code, out := s.run(userPIN+"\n", "pkcshsm_mk_change", append(extra, args...)...)
	id := ""
	if m := createdRE.FindStringSubmatch(out); m != nil {
		id = m[1]
	}
	return code, out, id
}

// keyRow is one secure key of `pkcshsm keys list --json`.
type keyRow struct {
	Handle   uint64 `json:"handle"`
	Label    string `json:"label"`
	HasReenc bool   `json:"has_reenc_blob"`
	HasOld   bool   `json:"has_old_blob"`
	MKType   string `json:"mk_type"`
	MKVP     string `json:"mkvp"`
}

func (s *stack) keys(slot string) []keyRow {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, stackBin(s.t, "pkcshsm"), "keys", "list", "--slot", slot, "--hsm-mkvp", "--json")
	cmd.Env = s.sb.env()
	cmd.Stdin = strings.NewReader(userPIN + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		s.t.Fatalf("keys list --slot %s blocked: killed after %s", slot, commandLimit)
	}
	if err != nil {
		s.t.Fatalf("keys list --slot %s: %v\n%s", slot, err, stderr.String())
	}
	var rows []keyRow
	if err := json.Unmarshal(out, &rows); err != nil {
		s.t.Fatalf("keys list --slot %s: %v\n%s", slot, err, out)
	}
	var secure []keyRow
	for _, r := range rows {
		if r.MKType != "" {
			secure = append(secure, r)
		}
	}
	return secure
}

// loadApp is one p11load process using slots 2 and 4.
type loadApp struct {
	cmd            *exec.Cmd
	out            *syncBuffer
	log, report    string
	done           chan struct{}
	err            error
	exited, killed bool
}

func (s *stack) startLoad(name string, args ...string) *loadApp {
	s.t.Helper()
	dir := filepath.Join(s.sb.root, "apps")
	os.MkdirAll(dir, 0o755)
	a := &loadApp{out: &syncBuffer{}, done: make(chan struct{}),
		log: filepath.Join(dir, name+".log"), report: filepath.Join(dir, name+".json")}
	ready := filepath.Join(dir, name+".ready")
	a.cmd = exec.Command(stackBin(s.t, "p11load"), append([]string{"-slots", "2,4", "-ready", ready, "-report", a.report, "-log", a.log}, args...)...)
	a.cmd.Env = s.sb.env()
	a.cmd.Stdin = strings.NewReader(userPIN + "\n")
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.done) }()
	s.t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.cmd.Process.Kill()
			<-a.done
		}
		if s.t.Failed() {
			logs, _ := os.ReadFile(a.log)
			s.t.Logf("%s output:\n%s\nlog (tail):\n%s", name, a.out.String(), tail(string(logs), 30))
		}
	})
	waitFor(s.t, name+" to set up its keys", func() bool {
		select {
		case <-a.done:
			s.t.Fatalf("%s exited: %v\n%s", name, a.err, a.out.String())
		default:
		}
		_, err := os.Stat(ready)
		return err == nil
	})
	s.waitLog(a, "connected to pkcshsmd")
	return a
}

func (a *loadApp) pid() int32 { return int32(a.cmd.Process.Pid) }

// waitLog waits until the application's log has a line containing text.
func (s *stack) waitLog(a *loadApp, text string) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("%q in the log of pid %d", text, a.pid()), func() bool {
		b, _ := os.ReadFile(a.log)
		return bytes.Contains(b, []byte(text))
	})
}

// stop sends SIGTERM and requires exit status 0 within bound; it returns
// the application's report.
func (s *stack) stopLoad(a *loadApp, bound time.Duration) appReport {
	s.t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(bound):
		s.t.Fatalf("pid %d did not exit within %s of SIGTERM", a.pid(), bound)
	}
	if a.err != nil {
		s.t.Fatalf("pid %d: %v\n%s", a.pid(), a.err, a.out.String())
	}
	var r appReport
	b, err := os.ReadFile(a.report)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		s.t.Fatal(err)
	}
	return r
}

type appReport struct {
	Ops    int `json:"ops"`
	Failed int `json:"failed"`
}

// hostile starts a client that says hello with claims and then never reads
// or answers.
func (s *stack) hostile(claims []event.Token) *app {
	s.t.Helper()
	js, err := json.Marshal(claims)
	if err != nil {
		s.t.Fatal(err)
	}
	a := &app{done: make(chan struct{})}
	a.cmd = exec.Command(appBin, "-socket", s.sb.app, "-raw", "-claims", string(js))
	a.cmd.Env = s.sb.env()
	stdout, err := a.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	var stderr bytes.Buffer
	a.cmd.Stderr = &stderr
	if err := a.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	go func() { a.cmd.Wait(); close(a.done) }()
	s.t.Cleanup(func() {
		a.cmd.Process.Kill()
		<-a.done
	})
	if strings.TrimSpace(line) != "welcomed" {
		s.t.Fatalf("hostile client: %q %s", line, stderr.String())
	}
	return a
}

// status returns the daemon's view of the connected processes.
func (s *stack) status() event.Status {
	s.t.Helper()
	c, err := admin.Dial(context.Background(), s.sb.admin)
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// listedOp is one operation of `pkcshsm_mk_change list --json`.
type listedOp struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// listOps returns the active operations by id.
func (s *stack) listOps() map[string]string {
	s.t.Helper()
	out := s.must("", "pkcshsm_mk_change", "list", "--json")
	var ops []listedOp
	if err := json.Unmarshal([]byte(out), &ops); err != nil {
		s.t.Fatalf("list --json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, op := range ops {
		m[op.ID] = op.State
	}
	return m
}
