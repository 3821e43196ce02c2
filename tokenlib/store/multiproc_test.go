package store

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The multi-process tests re-execute this test binary as a helper process
// (STORE_HELPER_DIR set) that opens the same token and obeys one command
// per line on stdin, answering one line on stdout. The parent waits for
// answers, never for time.

const helperEnv = "STORE_HELPER_DIR"

// helperMaxAttempts is shared by parent and helpers (the retry counter
// lives in the database, the limit in Options).
const helperMaxAttempts = 50

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runHelper(dir, os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

func helperOptions() Options {
	return Options{Logger: zerolog.Nop(), KDF: testKDF, MaxPINAttempts: helperMaxAttempts}
}

func runHelper(dir string, in io.Reader, out io.Writer) int {
	ctx := context.Background()
	s, err := Open(dir, helperOptions())
	if err != nil {
		fmt.Fprintln(out, "err", err)
		return 1
	}
	defer s.Close()
	dk, err := s.Login(ctx, User, userPIN)
	if err != nil {
		fmt.Fprintln(out, "err", err)
		return 1
	}
	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	reply := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	fail := func(err error) { reply("err %s: %v", errclass.Of(err), err) }
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		arg := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		switch f[0] {
		case "create":
			o := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaLabel: []byte(f[1])}}
			if err := s.Create(ctx, dk, o); err != nil {
				fail(err)
				continue
			}
			reply("ok %d", o.Handle)
		case "delete":
			if err := s.Delete(ctx, arg(1)); err != nil {
				fail(err)
				continue
			}
			reply("ok")
		case "list":
			objs, err := s.List(ctx, dk, Filter{})
			if err != nil {
				fail(err)
				continue
			}
			var labels []string
			for _, o := range objs {
				labels = append(labels, string(o.Attrs[ckaLabel]))
			}
			reply("ok %s", strings.Join(labels, ","))
		case "update":
			o, err := s.Get(ctx, dk, arg(1))
			if err == nil {
				o.Attrs[ckaLabel] = []byte(f[2])
				err = s.Update(ctx, dk, o)
			}
			if err != nil {
				fail(err)
				continue
			}
			reply("ok %d", o.Version)
		case "badlogin":
			for range arg(1) {
				if _, err := s.Login(ctx, User, []byte("wrong-pin-from-helper")); errclass.Of(err) != errclass.PermissionDenied {
					fail(fmt.Errorf("wrong PIN gave %v", err))
					break
				}
			}
			reply("ok")
		case "rewrite-loop":
			// Rewrite every object's CKA_VALUE with the iteration number,
			// one transaction per iteration, until killed.
			for i := 1; ; i++ {
				err := s.Batch(ctx, dk, func(tx *Tx) error {
					objs, err := tx.List(Filter{})
					if err != nil {
						return err
					}
					for _, o := range objs {
						o.Attrs[ckaValue] = []byte(strconv.Itoa(i))
						if err := tx.Update(o); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					fail(err)
					return 1
				}
				reply("committed %d", i)
			}
		case "rewrite-pause":
			// Rewrite half the objects, then wait inside the transaction
			// for a line that never comes: the parent kills us here.
			s.Batch(ctx, dk, func(tx *Tx) error {
				objs, err := tx.List(Filter{})
				if err != nil {
					return err
				}
				for _, o := range objs[:len(objs)/2] {
					o.Attrs[ckaValue] = []byte(f[1])
					if err := tx.Update(o); err != nil {
						return err
					}
				}
				reply("mid")
				sc.Scan()
				return fmt.Errorf("not killed")
			})
			reply("err not killed")
		case "quit":
			reply("ok")
			return 0
		default:
			reply("err unknown command %q", f[0])
		}
	}
	return 0
}

// helper is a running helper process.
type helper struct {
	t    *testing.T
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	done chan struct{}
}

func startHelper(t *testing.T, dir string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, in: in, out: bufio.NewScanner(outR), done: make(chan struct{})}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line := h.read(); line != "ready" {
		t.Fatalf("helper start: %s", line)
	}
	return h
}

func (h *helper) read() string {
	h.t.Helper()
	if !h.out.Scan() {
		h.t.Fatalf("helper output ended: %v", h.out.Err())
	}
	return h.out.Text()
}

// do sends one command and returns the text after "ok".
func (h *helper) do(format string, args ...any) string {
	h.t.Helper()
	cmd := fmt.Sprintf(format, args...)
	fmt.Fprintln(h.in, cmd)
	line := h.read()
	if line != "ok" && !strings.HasPrefix(line, "ok ") {
		h.t.Fatalf("helper %q: %s", cmd, line)
	}
	return strings.TrimPrefix(strings.TrimPrefix(line, "ok"), " ")
}

func labelsOf(t *testing.T, s *Store, dk *DataKey) string {
	t.Helper()
	objs, err := s.List(context.Background(), dk, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, o := range objs {
		l = append(l, string(o.Attrs[ckaLabel]))
	}
	return strings.Join(l, ",")
}

func TestMultiProcessCoherence(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := testOptions(t)
	opts.MaxPINAttempts = helperMaxAttempts
	s, dk := newTokenIn(t, dir, opts)
	b := startHelper(t, dir)

	a := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaLabel: []byte("A")}}
	if err := s.Create(ctx, dk, a); err != nil {
		t.Fatal(err)
	}
	if got := b.do("list"); got != "A" {
		t.Fatalf("process B lists %q after A's create, want A", got)
	}
	g0, _ := s.Generation(ctx)
	hb, _ := strconv.ParseUint(b.do("create B"), 10, 64)
	if g1, _ := s.Generation(ctx); g1 == g0 {
		t.Fatal("B's create did not move the generation A sees")
	}
	if got := labelsOf(t, s, dk); got != "A,B" {
		t.Fatalf("process A lists %q, want A,B", got)
	}
	ob, err := s.Get(ctx, dk, hb)
	if err != nil || string(ob.Attrs[ckaLabel]) != "B" {
		t.Fatalf("A reads B's object: %v", err)
	}

	if err := s.Delete(ctx, a.Handle); err != nil {
		t.Fatal(err)
	}
	if got := b.do("list"); got != "B" {
		t.Fatalf("process B lists %q after A's delete, want B", got)
	}
	if line := b.raw("delete %d", a.Handle); !strings.HasPrefix(line, "err not found") {
		t.Fatalf("B deleting A's deleted object: %q, want not found", line)
	}

	// Optimistic concurrency across processes.
	ob.Attrs[ckaLabel] = []byte("A's edit")
	if v := b.do("update %d B2", hb); v != "2" {
		t.Fatalf("B's update gave version %s, want 2", v)
	}
	err = s.Update(ctx, dk, ob)
	wantClass(t, err, errclass.Conflict, nil)
	if got := labelsOf(t, s, dk); got != "B2" {
		t.Fatalf("after the conflict A lists %q, want B2", got)
	}
}

// TestMultiProcessPINFailuresAreCounted runs wrong logins in two processes
// at once; every one must be counted exactly once.
func TestMultiProcessPINFailuresAreCounted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := testOptions(t)
	opts.MaxPINAttempts = helperMaxAttempts
	s, _ := newTokenIn(t, dir, opts)
	b, c := startHelper(t, dir), startHelper(t, dir)
	var wg sync.WaitGroup
	for _, h := range []*helper{b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fmt.Fprintln(h.in, "badlogin 8")
		}()
	}
	wg.Wait()
	for range 8 {
		_, err := s.Login(ctx, User, []byte("wrong-in-parent"))
		wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
	}
	for _, h := range []*helper{b, c} {
		if line := h.read(); line != "ok" {
			t.Fatalf("helper: %s", line)
		}
	}
	ti, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ti.UserFailures != 24 {
		t.Fatalf("user PIN failures = %d, want 24 (8 per process)", ti.UserFailures)
	}
	if _, err := s.Login(ctx, User, userPIN); err != nil {
		t.Fatal(err)
	}
	if ti, _ := s.Info(ctx); ti.UserFailures != 0 {
		t.Fatalf("failures after a good login = %d, want 0", ti.UserFailures)
	}
}

// raw sends one command and returns the whole answer line.
func (h *helper) raw(format string, args ...any) string {
	h.t.Helper()
	fmt.Fprintf(h.in, format+"\n", args...)
	return h.read()
}
