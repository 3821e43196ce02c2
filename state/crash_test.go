package state

import (
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
	d, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	switch {
	case hasPoint && point == "remove-after-history":
		err = d.Remove(ctx, ID(arg), Finalized)
	case hasPoint:
		_, err = d.Update(ctx, ID(arg), func(o *Op) error {
			o.Step = "token-pass"
			return o.Move(Reenciphered, time.Now())
		})
	case role == "create":
		l, _ := apqn.ParseList(arg)
		p, _ := mkvp.New([]byte("12345678"))
		_, err = d.Create(ctx, &Op{APQNs: l, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: p}})
		if errclass.Of(err) == errclass.Conflict {
			return 3
		}
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 0
}

func runChild(t *testing.T, role, dir, arg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", dir, arg)
	cmd.Env = append(os.Environ(), "STATE_TEST_CHILD="+role)
	cmd.Stderr = &testWriter{t}
	return cmd
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("child: %s", strings.TrimSpace(string(b)))
	return len(b), nil
}

func TestCrashAtEveryWritePoint(t *testing.T) {
	points := []string{"write-before-fsync", "write-before-rename", "write-before-dirsync", "remove-after-history"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			ctx := context.Background()
			path := t.TempDir()
			d := openDir(t, path)
			op, err := d.Create(ctx, sampleOp(t, "01.0033", mkvp.CCAAES))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Reenciphering, time.Now()) }); err != nil {
				t.Fatal(err)
			}
			cmd := runChild(t, "crash:"+point, path, string(op.ID))
			err = cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v", point, err)
			}
			// Old or new, never torn; nothing broken; the lock is free.
			got, err := d.Load(ctx, op.ID)
			if err != nil {
				t.Fatalf("load after crash: %v", err)
			}
			switch {
			case got.State == Reenciphering && got.Step == "":
			case got.State == Reenciphered && got.Step == "token-pass":
			default:
				t.Fatalf("torn state after crash at %s: %s %q", point, got.State, got.Step)
			}
			if _, broken, err := d.List(ctx); err != nil || len(broken) != 0 {
				t.Fatalf("list after crash: %v %v", broken, err)
			}
			// The step can be completed: the update (or removal) succeeds
			// and leaves no temp file behind.
			if point == "remove-after-history" {
				if err := d.Remove(ctx, op.ID, Finalized); err != nil {
					t.Fatalf("repeat remove: %v", err)
				}
				hist, _, _ := d.History(ctx)
				if len(hist) != 2 || hist[0].Op.ID != op.ID {
					t.Fatalf("history after repeated remove: %d entries", len(hist))
				}
				return
			}
			if _, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Reenciphered, time.Now()) }); err != nil {
				t.Fatalf("complete after crash: %v", err)
			}
			tmps, _ := filepath.Glob(filepath.Join(path, tmpPrefix+"*"))
			if len(tmps) != 0 {
				t.Fatalf("temp files left: %v", tmps)
			}
		})
	}
}

func TestConcurrentCreatorsInProcesses(t *testing.T) {
	path := t.TempDir()
	openDir(t, path)
	const n = 6
	cmds := make([]*exec.Cmd, n)
	for i := range cmds {
		// Every request shares 01.0033 with every other, in another order.
		cmds[i] = runChild(t, "create", path, fmt.Sprintf("0%d.0033,01.0033", i+2))
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
}
