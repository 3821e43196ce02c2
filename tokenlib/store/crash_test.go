package store

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

const crashObjects = 1500

// crashToken creates a token with crashObjects private objects whose
// CKA_VALUE is "0", and closes it.
func crashToken(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	opts := testOptions(t)
	opts.MaxPINAttempts = helperMaxAttempts
	s, dk := newTokenIn(t, dir, opts)
	err := s.Batch(ctx, dk, func(tx *Tx) error {
		for i := range crashObjects {
			o := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{
				ckaLabel: []byte(strconv.Itoa(i)), ckaValue: []byte("0"), ckaOpaque: bytes.Repeat([]byte{1}, 100)}}
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir
}

// valuesAfterCrash reopens the token as a new process would and returns
// the set of CKA_VALUEs, after checking the database's integrity and that
// the object count is unchanged.
func valuesAfterCrash(t *testing.T, dir string) map[string]int {
	t.Helper()
	ctx := context.Background()
	s, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	var ic string
	if err := s.rdb.QueryRow(`PRAGMA integrity_check`).Scan(&ic); err != nil || ic != "ok" {
		t.Fatalf("integrity_check after kill: %q %v", ic, err)
	}
	dk, err := s.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(ctx, dk, Filter{})
	if err != nil {
		t.Fatalf("List after kill: %v", err)
	}
	if len(objs) != crashObjects {
		t.Fatalf("%d objects after kill, want %d", len(objs), crashObjects)
	}
	vals := map[string]int{}
	for _, o := range objs {
		vals[string(o.Attrs[ckaValue])]++
	}
	// The store stays writable: the dead writer's lock is gone.
	if err := s.Create(ctx, dk, &Object{Class: ckoSecret, Private: true}); err != nil {
		t.Fatalf("write after kill: %v", err)
	}
	return vals
}

// TestKillMidBatch kills (SIGKILL) a writer inside a batch that has
// rewritten half the objects: none of its changes may survive.
func TestKillMidBatch(t *testing.T) {
	dir := crashToken(t)
	h := startHelper(t, dir)
	if line := h.raw("rewrite-pause 9"); line != "mid" {
		t.Fatalf("helper: %s", line)
	}
	// While the writer sits inside its transaction, another process reads
	// the committed state without waiting, and a writer gives up after its
	// busy timeout with Unavailable instead of hanging.
	ctx := context.Background()
	opts := testOptions(t)
	opts.BusyTimeout = 100 * time.Millisecond
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := s.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaValue: []byte("0")}})
	if err != nil || len(objs) != crashObjects {
		t.Fatalf("reader during the open batch: %d objects at \"0\", %v; want all %d", len(objs), err, crashObjects)
	}
	err = s.Create(ctx, dk, &Object{Class: ckoSecret, Private: true})
	wantClass(t, err, errclass.Unavailable, nil)
	if errclass.Hint(err) == "" {
		t.Error("busy error without a hint")
	}
	s.Close()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	vals := valuesAfterCrash(t, dir)
	if len(vals) != 1 || vals["0"] != crashObjects {
		t.Fatalf("values after killing mid-batch: %v, want all %d objects at \"0\"", vals, crashObjects)
	}
}

// TestKillDuringRewrites kills a writer that commits whole-token rewrites
// back to back, at whatever point it has reached: every object must carry
// the same iteration, and at least the last one reported committed.
func TestKillDuringRewrites(t *testing.T) {
	dir := crashToken(t)
	h := startHelper(t, dir)
	last, line := 0, h.raw("rewrite-loop")
	for {
		n, err := strconv.Atoi(strings.TrimPrefix(line, "committed "))
		if err != nil || n != last+1 {
			t.Fatalf("helper after commit %d: %s", last, line)
		}
		last = n
		if last == 3 {
			break
		}
		line = h.read()
	}
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	vals := valuesAfterCrash(t, dir)
	if len(vals) != 1 {
		t.Fatalf("objects carry different iterations after the kill: %v", vals)
	}
	for v := range vals {
		n, _ := strconv.Atoi(v)
		if n < last || n > last+1 {
			t.Fatalf("objects at iteration %d after the kill, last reported commit %d", n, last)
		}
	}
}
