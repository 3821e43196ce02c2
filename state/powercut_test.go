package state

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The power-cut layer. A kill -9 leaves everything the process wrote in
// the page cache, so it never shows a missing fsync; a power cut keeps
// only what was synced. pcFS stands in for the write path's file system
// (in the spirit of ALICE, CrashMonkey and LazyFS): it does every call on
// the real files and keeps, beside them, a model of what is durable:
//
//   - a file's content becomes durable when the file is fsynced;
//   - an entry of a directory (a creation, a rename, a removal) becomes
//     durable when that directory is fsynced.
//
// After every call it records the durable image, so a test can rebuild,
// in a fresh directory, exactly what a power cut right after that call
// would leave, open it as the next boot would and check what survived.
type pcFS struct {
	mu      sync.Mutex
	root    string
	nextIno int
	vol     map[string]int // path → inode, as the running system sees it
	dur     map[string]int // path → inode, as the disk has it
	data    map[int][]byte // inode → content in the page cache
	durData map[int][]byte // inode → content on the disk
	dirs    map[int]bool   // inodes that are directories
	points  []pcPoint
}

// pcPoint is the disk after one call: what a power cut there leaves.
type pcPoint struct {
	after string            // the call, e.g. "rename .tmp-x → ID"
	files map[string][]byte // path relative to the root → content
	dirs  []string          // directories (relative) that exist
}

// newPCFS starts the model from the directory as it is: everything in it
// counts as durable.
func newPCFS(t *testing.T, root string) *pcFS {
	t.Helper()
	p := &pcFS{root: root, vol: map[string]int{}, dur: map[string]int{}, data: map[int][]byte{}, durData: map[int][]byte{}, dirs: map[int]bool{}}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		ino := p.newIno()
		if e.IsDir() {
			p.dirs[ino] = true
		} else {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			p.data[ino], p.durData[ino] = b, clone(b)
		}
		p.vol[path], p.dur[path] = ino, ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p.record("start")
	return p
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func (p *pcFS) newIno() int { p.nextIno++; return p.nextIno }

// record notes the durable image after a call. The caller holds p.mu (or
// is the constructor).
func (p *pcFS) record(call string) {
	pt := pcPoint{after: call, files: map[string][]byte{}}
	for path, ino := range p.dur {
		rel, err := filepath.Rel(p.root, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if p.dirs[ino] {
			pt.dirs = append(pt.dirs, rel)
			continue
		}
		pt.files[rel] = clone(p.durData[ino])
	}
	p.points = append(p.points, pt)
}

func (p *pcFS) CreateTemp(dir, pattern string) (writableFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ino := p.newIno()
	p.vol[f.Name()] = ino
	p.data[ino] = nil
	p.record("create " + filepath.Base(f.Name()))
	return &pcFile{File: f, p: p, ino: ino}, nil
}

func (p *pcFS) OpenAppend(name string, perm fs.FileMode) (writableFile, error) {
	f, err := osFS{}.OpenAppend(name, perm)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ino, ok := p.vol[name]
	if !ok {
		ino = p.newIno()
		p.vol[name] = ino
		p.data[ino] = nil
		p.record("create " + filepath.Base(name))
	}
	return &pcFile{File: f.(*os.File), p: p, ino: ino}, nil
}

func (p *pcFS) Rename(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vol[to] = p.vol[from]
	delete(p.vol, from)
	p.record(fmt.Sprintf("rename %s → %s", filepath.Base(from), filepath.Base(to)))
	return nil
}

func (p *pcFS) Remove(name string) error {
	if err := os.Remove(name); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.vol, name)
	p.record("remove " + filepath.Base(name))
	return nil
}

func (p *pcFS) Mkdir(name string, perm fs.FileMode) error {
	if err := os.Mkdir(name, perm); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ino := p.newIno()
	p.dirs[ino] = true
	p.vol[name] = ino
	p.record("mkdir " + filepath.Base(name))
	return nil
}

// SyncDir makes the directory's entries as the system sees them durable.
func (p *pcFS) SyncDir(path string) error {
	if err := fsyncDir(path); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	path = filepath.Clean(path)
	for name := range p.dur {
		if filepath.Dir(name) == path {
			if _, ok := p.vol[name]; !ok {
				delete(p.dur, name)
			}
		}
	}
	for name, ino := range p.vol {
		if filepath.Dir(name) == path {
			p.dur[name] = ino
		}
	}
	p.record("fsync dir " + filepath.Base(path))
	return nil
}

// pcFile is a file of the write path: writes reach the page cache, Sync
// the disk.
type pcFile struct {
	*os.File
	p   *pcFS
	ino int
}

func (f *pcFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	f.p.data[f.ino] = append(f.p.data[f.ino], b[:n]...)
	f.p.record(fmt.Sprintf("write %d bytes to %s", n, filepath.Base(f.Name())))
	return n, err
}

func (f *pcFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	f.p.durData[f.ino] = clone(f.p.data[f.ino])
	f.p.record("fsync " + filepath.Base(f.Name()))
	return nil
}

// boot rebuilds the disk of point pt in a fresh directory and opens it as
// the next boot would (a writable Dir: reading repairs and cleans).
func (pt pcPoint) boot(t *testing.T) *Dir {
	t.Helper()
	root := t.TempDir()
	sort.Strings(pt.dirs)
	for _, d := range pt.dirs {
		if err := os.MkdirAll(filepath.Join(root, d), dirMode); err != nil {
			t.Fatal(err)
		}
	}
	for rel, b := range pt.files {
		dir := filepath.Dir(rel)
		if dir != "." {
			if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
				continue // its directory never reached the disk
			}
		}
		if err := os.WriteFile(filepath.Join(root, rel), b, fileMode); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Open(root, Options{Logger: zerolog.Nop(), LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// survivor is what a boot finds of one operation: absent (gen 0), or
// its generation and state; broken reports an unrecovered file.
func survivor(t *testing.T, d *Dir, id ID) (gen uint64, st State, broken []string) {
	t.Helper()
	ops, br, err := d.List(context.Background())
	if err != nil {
		t.Fatalf("list after the power cut: %v", err)
	}
	for _, b := range br {
		if !b.Recovered {
			broken = append(broken, fmt.Sprintf("%s: %v", b.Name, b.Err))
		}
	}
	for _, op := range ops {
		if op.ID == id {
			return op.Gen, op.State, broken
		}
	}
	return 0, 0, broken
}

// recordDir opens path with the recording file system.
func recordDir(t *testing.T, path string) (*Dir, *pcFS) {
	t.Helper()
	p := newPCFS(t, path)
	d, err := Open(path, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)), LockTimeout: 2 * time.Second, fs: p})
	if err != nil {
		t.Fatal(err)
	}
	return d, p
}

// checkPoints walks every point of a recorded call: the generation found
// after a power cut there is one of want (old, then new), never goes back
// once the new one was seen, and after the call returned it is the new one.
// Generation 0 stands for "no operation".
func checkPoints(t *testing.T, p *pcFS, id ID, old, new uint64, extra func(t *testing.T, d *Dir, gen uint64)) {
	t.Helper()
	seenNew := false
	for i, pt := range p.points {
		d := pt.boot(t)
		gen, _, broken := survivor(t, d, id)
		where := fmt.Sprintf("power cut at point %d (after %s)", i, pt.after)
		if len(broken) > 0 {
			t.Errorf("%s: unreadable operation files %v", where, broken)
		}
		switch gen {
		case new:
			seenNew = true
		case old:
			if seenNew {
				t.Errorf("%s: generation %d came back after %d had reached the disk", where, old, new)
			}
		default:
			t.Errorf("%s: found generation %d, want %d or %d", where, gen, old, new)
		}
		if extra != nil {
			extra(t, d, gen)
		}
	}
	last := p.points[len(p.points)-1]
	if gen, _, _ := survivor(t, last.boot(t), id); gen != new {
		t.Errorf("the call returned, then a power cut (after %s) left generation %d, want %d: the change was not durable", last.after, gen, new)
	}
	t.Logf("%d points replayed", len(p.points))
}

func TestPowerCutCreate(t *testing.T) {
	path := t.TempDir()
	openDir(t, path) // the directory exists, as after installation
	d, p := recordDir(t, path)
	op, err := d.Create(context.Background(), sampleOp(t, "01.0033", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	checkPoints(t, p, op.ID, 0, op.Gen, nil)
}

func TestPowerCutUpdate(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	op := advance(t, openDir(t, path)) // generation 2, REENCIPHERING
	for _, step := range []struct {
		name string
		fn   func(*Op) error
	}{
		{"reenciphered", func(o *Op) error { return o.Move(Reenciphered, time.Now()) }},
		{"finalizing", func(o *Op) error { return o.Move(Finalizing, time.Now()) }},
		{"page", func(o *Op) error { o.Step = StepSecondPass; return nil }},
	} {
		t.Run(step.name, func(t *testing.T) {
			d, p := recordDir(t, path)
			next, err := d.Update(ctx, op.ID, step.fn)
			if err != nil {
				t.Fatal(err)
			}
			checkPoints(t, p, op.ID, op.Gen, next.Gen, nil)
			op = next
		})
	}
}

func TestPowerCutRemove(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	op := advance(t, openDir(t, path))
	d, p := recordDir(t, path)
	if err := d.Remove(ctx, op.ID, Canceled); err != nil {
		t.Fatal(err)
	}
	// An operation that is gone after a power cut must be in the history:
	// its ending is recorded before it disappears.
	checkPoints(t, p, op.ID, op.Gen, 0, func(t *testing.T, d *Dir, gen uint64) {
		if gen != 0 {
			return
		}
		h, _, err := d.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range h {
			if e.Op.ID == op.ID && e.Outcome == Canceled {
				return
			}
		}
		t.Errorf("operation %s vanished without a history entry", op.ID)
	})
}

// An Update that finds the operation file damaged quarantines it into
// .broken/ (a rename across directories, both synced) before it writes
// the new generation: a power cut at any point of that still finds the
// operation, from the copy or from the new files.
func TestPowerCutUpdateAfterQuarantine(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	op := advance(t, openDir(t, path))
	d, p := recordDir(t, path)
	good := read(t, d.mainPath(op.ID))
	if err := os.WriteFile(d.mainPath(op.ID), flip(good, 30), fileMode); err != nil {
		t.Fatal(err)
	}
	p.vol[d.mainPath(op.ID)] = p.newIno() // as if written and synced before the recording
	p.dur[d.mainPath(op.ID)] = p.vol[d.mainPath(op.ID)]
	p.durData[p.vol[d.mainPath(op.ID)]] = flip(good, 30)
	p.points = p.points[:0]
	p.record("damaged main file")
	next, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Reenciphered, time.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	quarantined := false
	for _, pt := range p.points {
		quarantined = quarantined || strings.HasPrefix(pt.after, "rename "+string(op.ID)+" →")
	}
	if !quarantined {
		t.Fatalf("the damaged file was not quarantined: %v", p.points)
	}
	checkPoints(t, p, op.ID, op.Gen, next.Gen, nil)
}
