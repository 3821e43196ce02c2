package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
)

// The tests of issue 9's findings 1-5 run the real pkcshsm_mk_change,
// built with the failpoints tag, against a real token store and the
// simulated adapters. Each reproduces its finding on the code before the
// fix (noted per test) and passes after it.

const (
	findKeys = 300
	// pageSpec makes a pass commit findKeys/50 = 6 batches.
	pageSpec = "mkchange.page-size=value:50"
)

// fpTool is pkcshsm_mk_change built with the failpoints tag.
func fpTool(t *testing.T) string { return testenv.Bin(t, "pkcshsm_mk_change", "failpoints") }

// fpRun is one run of the tagged tool.
type fpRun struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	logf   string
	e      *crashEnv
	waited bool
	code   int
	killed bool
}

type syncBuffer = testenv.SyncBuffer

func (e *crashEnv) startFP(spec string, args ...string) *fpRun {
	e.t.Helper()
	r := &fpRun{out: &syncBuffer{}, logf: filepath.Join(e.t.TempDir(), "fp.log"), e: e}
	r.cmd = exec.Command(fpTool(e.t), args...)
	r.cmd.Env = append(os.Environ(), paths.EnvRoot+"="+e.layout.Root,
		failpoint.EnvSpec+"="+spec, failpoint.EnvLog+"="+r.logf)
	r.cmd.Stdin = strings.NewReader(userPIN + "\n")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if !r.waited {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	})
	return r
}

func (r *fpRun) wait() *fpRun {
	err := r.cmd.Wait()
	r.waited = true
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		ws := ee.Sys().(syscall.WaitStatus)
		r.killed = ws.Signaled() && ws.Signal() == syscall.SIGKILL
	default:
		r.e.t.Fatal(err)
	}
	return r
}

// reached waits until the process logged that rule name fired (the
// failpoint log is written and fsynced before the rule acts).
func (r *fpRun) reached(name string) {
	r.e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(r.logf); bytes.Contains(b, []byte(name+" ")) {
			return
		}
		if r.cmd.ProcessState != nil {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	r.e.t.Fatalf("failpoint %s not reached:\n%s", name, r.out)
}

func (e *crashEnv) runFP(spec string, args ...string) *fpRun {
	return e.startFP(spec, args...).wait()
}

func (e *crashEnv) mustRun(args ...string) string {
	e.t.Helper()
	code, out := e.run(args...)
	if code != 0 {
		e.t.Fatalf("%v: exit %d\n%s", args, code, out)
	}
	return out
}

func (e *crashEnv) setNew() {
	for _, q := range []apqn.ID{q1, q2} {
		if err := e.hsm.Set(context.Background(), q, mkvp.CCAAES); err != nil {
			e.t.Fatal(err)
		}
	}
}

// heldAt checks that a process stopped with SIGSTOP during its failpoint
// sleep was stopped there, after its first batch of 50: exactly wantReenc
// keys carry a REENC blob. Otherwise the test was too slow to stop it
// within the sleep and says so instead of failing obscurely later.
func (e *crashEnv) heldAt(wantReenc int) {
	e.t.Helper()
	if reenc, _ := e.count(); reenc != wantReenc {
		e.t.Fatalf("%d keys with REENC when the process was stopped, want %d: it went past the failpoint before SIGSTOP (machine overloaded?)", reenc, wantReenc)
	}
}

func noPanic(t *testing.T, what, out string) {
	t.Helper()
	if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
		t.Fatalf("%s panicked:\n%s", what, out)
	}
}

// Finding 1: a cancel killed during its first pass recorded nothing; list
// said the new master keys could be activated. Before the fix the state
// after the kill was REENCIPHERED with no step.
func TestFinding1KilledCancelIsRecordedAndCompleted(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	r := e.runFP(pageSpec+",cli.pass.cancel.after-batch-commit=kill@2", "cancel", "-i", string(id))
	if !r.killed {
		t.Fatalf("cancel was not killed: exit %d\n%s", r.code, r.out)
	}
	if reenc, _ := e.count(); reenc != findKeys-100 {
		t.Fatalf("%d keys keep REENC after two batches of 50, want %d", reenc, findKeys-100)
	}
	op := e.op()
	if op.State != state.Canceling || op.Step != "first-pass" {
		t.Fatalf("after the kill: %s step %q; want CANCELING, first-pass", op.State, op.Step)
	}
	out := e.mustRun("list")
	for _, want := range []string{
		"State:       Canceling",
		"Step:        first pass over the token objects",
		"Next:        run 'pkcshsm_mk_change cancel --id " + string(id) + "' to complete the interrupted cancel",
		"DO NOT SET/ACTIVATE THE NEW MASTER KEYS",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "finalize") || strings.Contains(out, "can now be set") {
		t.Errorf("list advises finalize or activation:\n%s", out)
	}
	// Only cancel completes it: finalize is refused and names cancel.
	code, fout := e.run("finalize", "-i", string(id))
	if code != 4 || !strings.Contains(fout, "complete it with 'pkcshsm_mk_change cancel --id "+string(id)+"'") {
		t.Fatalf("finalize of a half-canceled operation: exit %d\n%s", code, fout)
	}
	if out := e.mustRun("cancel", "-i", string(id)); !strings.Contains(out, "successfully canceled") {
		t.Fatal(out)
	}
	if reenc, old := e.count(); reenc != 0 || old != 0 {
		t.Fatalf("after cancel: %d keys with REENC, %d with OLD", reenc, old)
	}
	// No operation is left; with the NEW register still loaded, list
	// warns that a set would lose every key (issue 16).
	if out := e.mustRun("list"); strings.Contains(out, "Operation:") ||
		!strings.Contains(out, fmt.Sprintf("%d KEY OBJECTS HAVE NO BLOB UNDER IT.", findKeys)) {
		t.Fatalf("list after cancel: %q", out)
	}
}

// Finding 1, finalize's side: a finalize killed in its first pass is
// FINALIZING (before the fix: REENCIPHERED), list names finalize only, and
// cancel is refused.
func TestFinding1KilledFinalizeIsRecordedAndCompleted(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	e.setNew()
	r := e.runFP(pageSpec+",cli.pass.finalize.after-batch-commit=kill@3", "finalize", "-i", string(id))
	if !r.killed {
		t.Fatalf("finalize was not killed: exit %d\n%s", r.code, r.out)
	}
	if _, old := e.count(); old != 150 {
		t.Fatalf("%d keys finalized after three batches of 50, want 150", old)
	}
	if op := e.op(); op.State != state.Finalizing || op.Step != "first-pass" {
		t.Fatalf("after the kill: %s step %q; want FINALIZING, first-pass", op.State, op.Step)
	}
	out := e.mustRun("list")
	if !strings.Contains(out, "Next:        run 'pkcshsm_mk_change finalize --id "+string(id)+"' to complete the interrupted finalize") ||
		strings.Contains(out, "cancel") || strings.Contains(out, "WARNING") {
		t.Fatalf("list after a killed finalize:\n%s", out)
	}
	if code, cout := e.run("cancel", "-i", string(id)); code != 4 || !strings.Contains(cout, "can not be canceled") {
		t.Fatalf("cancel of a half-finalized operation: exit %d\n%s", code, cout)
	}
	e.mustRun("finalize", "-i", string(id))
	if reenc, old := e.count(); reenc != 0 || old != findKeys {
		t.Fatalf("after finalize: %d REENC, %d of %d OLD", reenc, old, findKeys)
	}
}

// Finding 2: a damaged operation file made finalize and cancel fail with
// exit 8 and list only warn. Now one damaged file is recovered from its
// copy; with both damaged, every command names the operation and says how
// to repair it, and restoring a copy is enough.
func TestFinding2DamagedOperationFile(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	dir := e.layout.MKChangeDir()
	main, cp := filepath.Join(dir, string(id)), filepath.Join(dir, string(id)+".copy")
	good, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Clone(good)
	damaged[len(damaged)/2] ^= 0x01
	os.WriteFile(main, damaged, 0o640)

	out := e.mustRun("list")
	if !strings.Contains(out, "Operation:       "+string(id)) || !strings.Contains(out, "recovered from the other copy") {
		t.Fatalf("list with a damaged file:\n%s", out)
	}
	if b, _ := os.ReadFile(main); !bytes.Equal(b, good) {
		t.Fatal("list did not restore the damaged file")
	}
	q, _ := filepath.Glob(filepath.Join(dir, ".broken", string(id)+".*"))
	if len(q) != 1 {
		t.Fatalf("damaged file not kept in .broken/: %v", q)
	}

	// Both damaged: list prints the others, names this one, exits 8.
	os.WriteFile(main, damaged, 0o640)
	os.WriteFile(cp, good[:len(good)/2], 0o640)
	code, out := e.run("list")
	if code != 8 || !strings.Contains(out, "master key change operation '"+string(id)+"' is unreadable") ||
		!strings.Contains(out, "hint: restore "+main) {
		t.Fatalf("list with both copies damaged: exit %d\n%s", code, out)
	}
	e.setNew()
	for _, cmd := range []string{"finalize", "cancel"} {
		code, out := e.run(cmd, "-i", string(id))
		if code != 8 || !strings.Contains(out, "is unreadable") || !strings.Contains(out, "hint: restore") {
			t.Fatalf("%s with both copies damaged: exit %d\n%s", cmd, code, out)
		}
	}
	if _, old := e.count(); old != 0 {
		t.Fatal("a refused finalize changed keys")
	}
	// Restoring either file is enough; finalize then completes.
	os.WriteFile(cp, good, 0o640)
	if out := e.mustRun("finalize", "-i", string(id)); !strings.Contains(out, "successfully finalized") {
		t.Fatal(out)
	}
	if reenc, old := e.count(); reenc != 0 || old != findKeys {
		t.Fatalf("after finalize: %d REENC, %d of %d OLD", reenc, old, findKeys)
	}
}

// Finding 3: a FIFO named like an operation hung list (and every reader)
// while it held the directory lock. Before the fix this test timed out.
func TestFinding3FIFOInTheOperationDirectory(t *testing.T) {
	e := newCrashEnvKeys(t, 20)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	fifo := filepath.Join(e.layout.MKChangeDir(), "Ff1234")
	if err := syscall.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, tool(t), args...)
		cmd.Env = append(os.Environ(), paths.EnvRoot+"="+e.layout.Root)
		cmd.Stdin = strings.NewReader(userPIN + "\n")
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("%v hung on the FIFO:\n%s", args, out)
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		return 0, string(out)
	}
	code, out := run("list")
	if code != 8 || !strings.Contains(out, "Operation:       "+string(id)) || !strings.Contains(out, fifo+" is a FIFO, not an operation file") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	if code, out := run("list", "-i", "Ff1234"); code != 8 || !strings.Contains(out, "a FIFO") {
		t.Fatalf("list -i of the FIFO: exit %d\n%s", code, out)
	}
	// The operation next to it is still completed.
	if code, out := run("cancel", "-i", string(id)); code != 0 {
		t.Fatalf("cancel next to a FIFO: exit %d\n%s", code, out)
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatal("the FIFO was touched")
	}
}

// Finding 4: a cancel during reencipher's pass removed the operation under
// it; reencipher then panicked in session.save and left REENC blobs.
// Now the cancel (and a finalize) is refused naming reencipher's pid, and
// the reencipher completes.
func TestFinding4ConcurrentCancelRefused(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	re := e.startFP(pageSpec+",cli.pass.reencipher.after-batch-commit=sleep:8s@1", "reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	re.reached("cli.pass.reencipher.after-batch-commit")
	re.cmd.Process.Signal(syscall.SIGSTOP) // held in its pass for as long as the test needs
	e.heldAt(50)
	id := e.op().ID
	pid := fmt.Sprintf("pid %d", re.cmd.Process.Pid)
	for _, cmd := range []string{"cancel", "finalize"} {
		code, out := e.run(cmd, "-i", string(id))
		if code != 5 || !strings.Contains(out, "is in use by 'reencipher' ("+pid) || !strings.Contains(out, "hint: wait until process") {
			t.Fatalf("%s during reencipher: exit %d\n%s", cmd, code, out)
		}
	}
	out := e.mustRun("list")
	if !strings.Contains(out, "Running:     'reencipher' ("+pid) || !strings.Contains(out, "wait until the running command is done") {
		t.Fatalf("list during reencipher:\n%s", out)
	}
	re.cmd.Process.Signal(syscall.SIGCONT)
	if re.wait(); re.code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", re.code, re.out)
	}
	noPanic(t, "reencipher", re.out.String())
	if op := e.op(); op.State != state.Reenciphered {
		t.Fatalf("state %s", op.State)
	}
	if reenc, _ := e.count(); reenc != findKeys {
		t.Fatalf("%d of %d keys re-enciphered", reenc, findKeys)
	}
}

// Finding 4's other half: the operation file vanishing under a running
// reencipher is a clear error, not a panic (before the fix: nil operation
// in session.save, from the rollback).
func TestFinding4VanishedFileDuringReencipher(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()
	re := e.startFP(pageSpec+",cli.pass.reencipher.after-batch-commit=sleep:8s@1", "reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	re.reached("cli.pass.reencipher.after-batch-commit")
	re.cmd.Process.Signal(syscall.SIGSTOP)
	e.heldAt(50)
	id := e.op().ID
	dir := e.layout.MKChangeDir()
	os.Remove(filepath.Join(dir, string(id)+".copy"))
	os.Remove(filepath.Join(dir, string(id)))
	re.cmd.Process.Signal(syscall.SIGCONT)
	re.wait()
	out := re.out.String()
	noPanic(t, "reencipher", out)
	if re.code != 3 || !strings.Contains(out, "the file of master key change operation '"+string(id)+"' vanished while this command was running") ||
		!strings.Contains(out, "hint: ") {
		t.Fatalf("reencipher after its file vanished: exit %d\n%s", re.code, out)
	}
}

// Finding 5: re-running a killed cancel failed and then panicked (nil
// operation in session.save from runComplete's failure path), hiding the
// cause. A cancel killed at any batch of its first pass is completed by
// cancel; a cancel whose file vanishes reports that, without a panic.
func TestFinding5CancelAgainAfterKilledCancel(t *testing.T) {
	e := newCrashEnvKeys(t, findKeys)
	p := e.loadNewAES()

	// The failure path itself: the file vanishes during a cancel's pass,
	// so the next save fails and so does the recording of the error.
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	c := e.startFP(pageSpec+",cli.pass.cancel.after-batch-commit=sleep:8s@1", "cancel", "-i", string(id))
	c.reached("cli.pass.cancel.after-batch-commit")
	c.cmd.Process.Signal(syscall.SIGSTOP)
	e.heldAt(findKeys - 50)
	dir := e.layout.MKChangeDir()
	os.Remove(filepath.Join(dir, string(id)+".copy"))
	os.Remove(filepath.Join(dir, string(id)))
	c.cmd.Process.Signal(syscall.SIGCONT)
	c.wait()
	out := c.out.String()
	noPanic(t, "cancel", out)
	if c.code != 3 || !strings.Contains(out, "At least one token failed to cancel") ||
		!strings.Contains(out, "vanished while this command was running") {
		t.Fatalf("cancel after its file vanished: exit %d\n%s", c.code, out)
	}

	// Killed three times, each time later in the (resumed) first pass,
	// then completed by cancel.
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id = e.op().ID
	for _, nth := range []int{1, 2, 6} {
		r := e.runFP(fmt.Sprintf("%s,cli.pass.cancel.after-batch-commit=kill@%d", pageSpec, nth), "cancel", "-i", string(id))
		if !r.killed {
			t.Fatalf("cancel not killed at batch %d: exit %d\n%s", nth, r.code, r.out)
		}
		if op := e.op(); op.State != state.Canceling {
			t.Fatalf("after the kill at batch %d: %s", nth, op.State)
		}
	}
	out = e.mustRun("cancel", "-i", string(id))
	noPanic(t, "cancel", out)
	if reenc, _ := e.count(); reenc != 0 {
		t.Fatalf("%d keys keep REENC", reenc)
	}
}

// Intent before action, at the level of the write path: a cancel killed
// just before the rename of its first save has changed nothing (the file
// is REENCIPHERED and every key keeps its REENC blob); killed just after
// it, the file says CANCELING before any key was touched.
func TestIntentIsDurableBeforeAnyKeyChanges(t *testing.T) {
	e := newCrashEnvKeys(t, 50)
	p := e.loadNewAES()
	e.mustRun("reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	id := e.op().ID
	for _, tc := range []struct {
		point string
		want  state.State
	}{
		{"cli.state.write-before-rename", state.Reenciphered},
		{"cli.state.write-before-dirsync", state.Canceling},
	} {
		r := e.runFP(tc.point+"=kill@1", "cancel", "-i", string(id))
		if !r.killed {
			t.Fatalf("%s: cancel not killed: exit %d\n%s", tc.point, r.code, r.out)
		}
		if op := e.op(); op.State != tc.want {
			t.Fatalf("%s: state %s, want %s", tc.point, op.State, tc.want)
		}
		if reenc, _ := e.count(); reenc != 50 {
			t.Fatalf("%s: %d of 50 keys keep REENC: a key changed before the intent was durable", tc.point, reenc)
		}
	}
	e.mustRun("cancel", "-i", string(id))
	if reenc, _ := e.count(); reenc != 0 {
		t.Fatalf("%d keys keep REENC", reenc)
	}
}
