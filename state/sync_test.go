package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// syncRecorder stands in for the directory fsync and records its calls.
type syncRecorder struct {
	mu    sync.Mutex
	paths []string
}

func (r *syncRecorder) sync(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paths = append(r.paths, filepath.Clean(path))
	return fsyncDir(path)
}

func (r *syncRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.paths
	r.paths = nil
	return p
}

func TestCreatingTheDirectorySyncsItsParent(t *testing.T) {
	parent := filepath.Join(t.TempDir(), "var", "lib", "pkcshsm")
	path := filepath.Join(parent, "HSM_MK_CHANGE")
	rec := &syncRecorder{}
	d, err := Open(path, Options{fsyncDir: rec.sync})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if got := rec.take(); !slices.Contains(got, parent) {
		t.Fatalf("synced %v; want the parent %s", got, parent)
	}
	// Opening an existing directory creates nothing and syncs nothing.
	if _, err := Open(path, Options{fsyncDir: rec.sync}); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("re-open synced %v", got)
	}
}

func TestQuarantineSyncsBothDirectories(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	rec := &syncRecorder{}
	d, err := Open(path, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)), fsyncDir: rec.sync})
	if err != nil {
		t.Fatal(err)
	}
	op := advance(t, d)
	good := read(t, d.mainPath(op.ID))
	os.WriteFile(d.mainPath(op.ID), flip(good, 30), 0o640)
	var afterRename []string
	d.opts.hook = func(p string) {
		if p == "quarantine-before-dirsync" {
			afterRename = rec.take()
		}
	}
	rec.take()
	if _, broken, err := d.List(ctx); err != nil || len(broken) != 1 || broken[0].Quarantined == "" {
		t.Fatalf("list: %+v %v", broken, err)
	}
	got := rec.take()
	q := filepath.Join(path, brokenDir)
	// .broken/ was created (sync of path) before the rename; after the
	// rename both directories are synced, the target first, before the
	// file is rewritten.
	if len(got) < 2 || got[0] != q || got[1] != path {
		t.Fatalf("syncs after the quarantine rename: %v (before it: %v); want %s then %s first", got, afterRename, q, path)
	}
	if !slices.Contains(afterRename, path) {
		t.Fatalf("creating %s did not sync %s: %v", q, path, afterRename)
	}
}

// A lock wait is bounded, and its error names the lock file and the
// process holding it.
func TestLockTimeoutNamesTheHolder(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path)
	holder := openDir(t, path) // a second handle: its own open file, its own flock
	holder.opts.LockTimeout = time.Minute
	locked := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- holder.withLock(context.Background(), true, func() error {
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked
	d.opts.LockTimeout = 100 * time.Millisecond
	start := time.Now()
	_, err := d.Create(context.Background(), sampleOp(t, "01.0001", mkvp.CCAAES))
	if errclass.Of(err) != errclass.DeadlineExceeded || errclass.Hint(err) == "" {
		t.Fatalf("create while locked: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the wait took %s", time.Since(start))
	}
	for _, want := range []string{d.lockPath(), fmt.Sprintf("pid %d", os.Getpid()), "exclusive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %q", err, want)
		}
	}
	// A wait longer than a second is reported once, naming the holder.
	var waits []string
	d.opts.LockTimeout = 1500 * time.Millisecond
	d.opts.Waiting = func(msg string) { waits = append(waits, msg) }
	if _, err := d.Load(context.Background(), "abcdef"); errclass.Of(err) != errclass.DeadlineExceeded {
		t.Fatalf("load while locked: %v", err)
	}
	if len(waits) != 1 || !strings.Contains(waits[0], fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(waits[0], "shared lock") {
		t.Fatalf("wait reports: %q", waits)
	}
	d.opts.Waiting = nil
	d.opts.LockTimeout = 100 * time.Millisecond
	// Readers wait for a writer too, bounded the same way.
	if _, err := d.Load(context.Background(), "abcdef"); errclass.Of(err) != errclass.DeadlineExceeded {
		t.Fatalf("load while locked: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := d.Create(context.Background(), sampleOp(t, "01.0001", mkvp.CCAAES)); err != nil {
		t.Fatalf("create after release: %v", err)
	}
}

func TestParseLocks(t *testing.T) {
	raw := []byte(`1: POSIX  ADVISORY  WRITE 900 fd:01:77 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF
2: -> FLOCK  ADVISORY  WRITE 1235 fd:01:5678 0 EOF
3: FLOCK  ADVISORY  READ 1300 fd:01:5678 0 EOF
4: FLOCK  ADVISORY  READ 1400 fd:02:5678 0 EOF
`)
	dev := uint64(0xfd<<8 | 0x01)
	got := parseLocks(raw, dev, 5678)
	if len(got) != 2 || got[0].PID != 1234 || !got[0].Write || got[1].PID != 1300 || got[1].Write {
		t.Fatalf("parseLocks = %+v", got)
	}
	if got := parseLocks(raw, anyDev, 5678); len(got) != 3 {
		t.Fatalf("parseLocks by inode alone = %+v", got)
	}
	if got := parseLocks(raw, anyDev, 678); len(got) != 0 {
		t.Fatalf("inode 678 matched %+v", got)
	}
}
