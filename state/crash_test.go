package state

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The test binary doubles as the child process of the multi-process tests:
// with STATE_TEST_CHILD set, TestMain runs the child role and exits.
func TestMain(m *testing.M) {
	if role := os.Getenv("STATE_TEST_CHILD"); role != "" {
		os.Exit(child(role, os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

func child(role, dir, arg string) int {
	ctx := context.Background()
	opts := Options{LockTimeout: 20 * time.Second}
	point, hasPoint := strings.CutPrefix(role, "crash:")
	if hasPoint {
		opts.hook = func(p string) {
			if p == point {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // wait for the signal
			}
		}
	}
	var err error
	switch {
	case role == "create" || role == "create-barrier":
		d, err := Open(dir, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if role == "create-barrier" {
			// Installed after Open, so only Create's lock waits count.
			b := &barrier{dir: os.Getenv("STATE_TEST_BARRIER"), me: os.Getpid()}
			b.n, _ = strconv.Atoi(os.Getenv("STATE_TEST_N"))
			b.mark("arrived")
			d.opts.hook = b.hook
		}
		l, _ := apqn.ParseList(arg)
		p, _ := mkvp.New([]byte("12345678"))
		_, err = d.Create(ctx, &Op{APQNs: l, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: p}})
		if errclass.Of(err) == errclass.Conflict {
			return 3
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		return 0
	case role == "claim":
		d, err := Open(dir, opts)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		c, err := d.Claim(ctx, ID(arg), "cancel")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("claimed")
		io.Copy(io.Discard, os.Stdin) // hold it until the parent closes stdin
		c.Release()
		return 0
	}
	d, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch {
	case hasPoint && strings.HasPrefix(point, "remove-"):
		err = d.Remove(ctx, ID(arg), Finalized)
	case hasPoint:
		_, err = d.Update(ctx, ID(arg), func(o *Op) error {
			o.Step = ""
			return o.Move(Reenciphered, time.Now())
		})
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

func runChild(t *testing.T, role, dir, arg string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir, arg)
	cmd.Env = append(append(os.Environ(), "STATE_TEST_CHILD="+role), env...)
	cmd.Stderr = &testWriter{t}
	return cmd
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("child: %s", strings.TrimSpace(string(b)))
	return len(b), nil
}

// At every point of the write path a real process is killed with SIGKILL.
// Before the first rename both files must hold exactly the old bytes;
// from the rename on, exactly the new version is read. An in-place write
// (O_TRUNC on the operation file) fails this test at write-before-rename.
func TestCrashAtEveryWritePoint(t *testing.T) {
	type want int
	const (
		old want = iota
		new
		stillThere // a removal interrupted: the operation is still readable
	)
	points := []struct {
		name string
		want want
	}{
		{"write-before-fsync", old},
		{"write-before-rename", old},
		{"write-before-dirsync", new},
		{"copy-before-fsync", new},
		{"copy-before-rename", new},
		{"copy-before-dirsync", new},
		{"remove-after-history", stillThere},
		{"remove-after-copy", stillThere},
	}
	for _, pt := range points {
		t.Run(pt.name, func(t *testing.T) {
			ctx := context.Background()
			path := t.TempDir()
			d := openDir(t, path)
			op := advance(t, d)
			oldMain, oldCopy := read(t, d.mainPath(op.ID)), read(t, d.copyPath(op.ID))
			cmd := runChild(t, "crash:"+pt.name, path, string(op.ID))
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v", pt.name, err)
			}
			got, err := d.Load(ctx, op.ID)
			if err != nil {
				t.Fatalf("load after crash: %v", err)
			}
			switch pt.want {
			case old:
				if !bytes.Equal(read(t, d.mainPath(op.ID)), oldMain) || !bytes.Equal(read(t, d.copyPath(op.ID)), oldCopy) {
					t.Fatal("the files changed before the rename")
				}
				if got.Gen != 2 || got.State != Reenciphering || got.Step != StepBroadcast {
					t.Fatalf("read %s gen %d step %q; want exactly the old version", got.State, got.Gen, got.Step)
				}
			case new:
				if got.Gen != 3 || got.State != Reenciphered || got.Step != "" {
					t.Fatalf("read %s gen %d step %q; want exactly the new version", got.State, got.Gen, got.Step)
				}
			case stillThere:
				if got.Gen != 2 || got.State != Reenciphering {
					t.Fatalf("read %s gen %d after an interrupted removal", got.State, got.Gen)
				}
				// The copy goes first: a copy left alone would bring the
				// ended operation back if the file were then lost.
				_, cerr := os.Lstat(d.copyPath(op.ID))
				if pt.name == "remove-after-copy" && !errors.Is(cerr, os.ErrNotExist) {
					t.Fatalf("copy still there after its removal point: %v", cerr)
				}
				if !bytes.Equal(read(t, d.mainPath(op.ID)), oldMain) {
					t.Fatal("the operation file changed during the removal")
				}
			}
			if _, broken, err := d.List(ctx); err != nil || len(broken) != 0 {
				t.Fatalf("list after crash: %v %v", broken, err)
			}
			if pt.want == stillThere {
				if err := d.Remove(ctx, op.ID, Finalized); err != nil {
					t.Fatalf("repeat remove: %v", err)
				}
				hist, _, _ := d.History(ctx)
				if len(hist) != 2 || hist[0].Op.ID != op.ID {
					t.Fatalf("history after repeated remove: %d entries", len(hist))
				}
				if _, err := d.Load(ctx, op.ID); errclass.Of(err) != errclass.NotFound {
					t.Fatalf("load after remove: %v", err)
				}
				return
			}
			// The step can be completed, and file and copy agree after it.
			up, err := d.Update(ctx, op.ID, func(o *Op) error { o.Step = ""; return o.Move(Reenciphered, time.Now()) })
			if err != nil {
				t.Fatalf("complete after crash: %v", err)
			}
			if !bytes.Equal(read(t, d.mainPath(op.ID)), read(t, d.copyPath(op.ID))) || up.Gen != got.Gen+1 {
				t.Fatalf("file and copy differ after completing (gen %d)", up.Gen)
			}
			tmps, _ := filepath.Glob(filepath.Join(path, tmpPrefix+"*"))
			if len(tmps) != 0 {
				t.Fatalf("temp files left: %v", tmps)
			}
		})
	}
}

// barrier holds every creator inside Create's critical section, after the
// conflict check and before the write, until all n are there at once (the lock is broken: they all pass the conflict
// check, and the test fails on the count of winners), or until every
// other creator has either finished or been refused the lock at least
// once while this one held it (the lock works).
type barrier struct {
	dir string
	n   int
	me  int
}

func (b *barrier) mark(what string) {
	os.WriteFile(filepath.Join(b.dir, fmt.Sprintf("%s-%d", what, b.me)), nil, 0o644)
}

func (b *barrier) pids(what string) map[int]bool {
	out := map[int]bool{}
	names, _ := filepath.Glob(filepath.Join(b.dir, what+"-*"))
	for _, n := range names {
		if pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(n), what+"-")); err == nil {
			out[pid] = true
		}
	}
	return out
}

func (b *barrier) hook(point string) {
	switch point {
	case "lock-busy":
		b.mark("busy")
	case "create-checked":
		// Busy marks from before this creator got in do not count.
		for pid := range b.pids("busy") {
			os.Remove(filepath.Join(b.dir, fmt.Sprintf("busy-%d", pid)))
		}
		b.mark("inside")
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			inside, busy, done, arrived := b.pids("inside"), b.pids("busy"), b.pids("done"), b.pids("arrived")
			if len(inside)-len(done) >= b.n {
				return // all inside at once: the lock is broken
			}
			kept := 0
			for pid := range arrived {
				if pid != b.me && (done[pid] || busy[pid]) {
					kept++
				}
			}
			if len(arrived) == b.n && kept == b.n-1 {
				b.mark("done")
				return
			}
			time.Sleep(time.Millisecond) // polling a condition, not timing
		}
		fmt.Fprintln(os.Stderr, "barrier: timed out")
		os.Exit(4)
	}
}

// Six real processes create intersecting operations at once. Each is held
// inside the critical section until the others have proven they are kept
// out (or are all inside: then the lock is broken and several win).
func TestConcurrentCreatorsInProcesses(t *testing.T) {
	path := t.TempDir()
	bar := t.TempDir()
	openDir(t, path)
	const n = 6
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		// Every request shares 01.0033 with every other, in another order.
		cmds[i] = runChild(t, "create-barrier", path, fmt.Sprintf("0%d.0033,01.0033", i+2),
			"STATE_TEST_BARRIER="+bar, fmt.Sprintf("STATE_TEST_N=%d", n))
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	won, lost := 0, 0
	for _, c := range cmds {
		err := c.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
			won++
		case errors.As(err, &ee) && ee.ExitCode() == 3:
			lost++
		default:
			t.Fatalf("child failed: %v", err)
		}
	}
	if won != 1 || lost != n-1 {
		t.Fatalf("won %d, lost %d: want exactly one creator to win", won, lost)
	}
	ops, _, _ := openDir(t, path).List(context.Background())
	if len(ops) != 1 {
		t.Fatalf("%d operations stored", len(ops))
	}
	// Exactly the winner passed the conflict check and was held there
	// while the others were kept out.
	if in := len((&barrier{dir: bar}).pids("inside")); in != 1 {
		t.Fatalf("%d creators passed the conflict check, want 1", in)
	}
}

// A claim held by a live process refuses a second one with its pid; the
// kernel drops it when the process is killed.
func TestClaimAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	cmd := runChild(t, "claim", path, string(op.ID))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "claimed\n" {
		cmd.Process.Kill()
		t.Fatalf("child did not claim: %q", line)
	}
	_, err := d.Claim(ctx, op.ID, "finalize")
	var ce *ClaimedError
	if !errors.As(err, &ce) || ce.Holder.PID != cmd.Process.Pid || ce.Holder.Command != "cancel" || errclass.Of(err) != errclass.Conflict {
		t.Fatalf("second claim: %v; want refused naming pid %d", err, cmd.Process.Pid)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) || !strings.Contains(errclass.Hint(err), "kill") {
		t.Fatalf("message %q / hint %q", err, errclass.Hint(err))
	}
	if ci, ok := d.Claimant(op.ID); !ok || ci.PID != cmd.Process.Pid {
		t.Fatalf("claimant = %+v %v", ci, ok)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, ok := d.Claimant(op.ID); ok {
		t.Fatal("a killed process still holds the claim")
	}
	c, err := d.Claim(ctx, op.ID, "finalize")
	if err != nil {
		t.Fatalf("claim after the holder died: %v", err)
	}
	// The same process cannot take it twice either (another open file).
	if _, err := d.Claim(ctx, op.ID, "cancel"); errclass.Of(err) != errclass.Conflict {
		t.Fatalf("double claim: %v", err)
	}
	c.Release()
	if _, err := os.Lstat(d.claimPath(op.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("claim file left after release: %v", err)
	}
}
