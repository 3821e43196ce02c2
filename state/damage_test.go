package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// advance creates an operation and moves it to REENCIPHERING, so the files
// hold generation 2 of a known content.
func advance(t *testing.T, d *Dir) *Op {
	t.Helper()
	ctx := context.Background()
	op, err := d.Create(ctx, sampleOp(t, "01.0033", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	op, err = d.Update(ctx, op.ID, func(o *Op) error { o.Step = StepBroadcast; return o.Move(Reenciphering, time.Now()) })
	if err != nil {
		t.Fatal(err)
	}
	return op
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFileAndCopyAgree(t *testing.T) {
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	main, cp := read(t, d.mainPath(op.ID)), read(t, d.copyPath(op.ID))
	if !bytes.Equal(main, cp) {
		t.Fatalf("file and copy differ after a write:\n%s\n%s", main, cp)
	}
	back, err := Decode(main)
	if err != nil || back.Gen != 2 || back.State != Reenciphering || back.Step != StepBroadcast {
		t.Fatalf("stored %+v %v; want generation 2, REENCIPHERING, broadcast", back, err)
	}
}

// Every way one of the two files can be unusable: the operation is read
// from the other, exactly as last written, and a writable List moves the
// bad file to .broken/ and rewrites it.
func TestDamagedFileRecoveredFromCopy(t *testing.T) {
	damages := map[string]func(t *testing.T, name string, good []byte){
		"flipped bit": func(t *testing.T, name string, good []byte) { os.WriteFile(name, flip(good, len(good)/2), 0o640) },
		"torn write (half the bytes)": func(t *testing.T, name string, good []byte) {
			os.WriteFile(name, good[:len(good)/2], 0o640)
		},
		"empty":   func(t *testing.T, name string, good []byte) { os.WriteFile(name, nil, 0o640) },
		"deleted": func(t *testing.T, name string, good []byte) { os.Remove(name) },
		"fifo": func(t *testing.T, name string, good []byte) {
			os.Remove(name)
			if err := syscall.Mkfifo(name, 0o640); err != nil {
				t.Fatal(err)
			}
		},
		"symlink": func(t *testing.T, name string, good []byte) {
			other := name + "-elsewhere"
			os.WriteFile(filepath.Join(t.TempDir(), "x"), good, 0o640)
			os.Remove(name)
			os.Symlink(other, name)
		},
	}
	for dname, damage := range damages {
		for _, which := range []string{"file", "copy"} {
			t.Run(dname+"/"+which, func(t *testing.T) {
				ctx := context.Background()
				path := t.TempDir()
				d := openDir(t, path)
				op := advance(t, d)
				good := read(t, d.mainPath(op.ID))
				bad := d.mainPath(op.ID)
				if which == "copy" {
					bad = d.copyPath(op.ID)
				}
				damage(t, bad, good)
				// A reader gets exactly the last write and changes nothing.
				ro, err := Open(path, Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				before := snapshotNames(t, path)
				got, err := ro.Load(ctx, op.ID)
				if err != nil || got.Gen != 2 || got.State != Reenciphering || got.Step != StepBroadcast {
					t.Fatalf("load: %+v %v", got, err)
				}
				ops, broken, err := ro.List(ctx)
				if err != nil || len(ops) != 1 || ops[0].Gen != 2 {
					t.Fatalf("read-only list: %v %v", ops, err)
				}
				// A missing copy is what a crash during creation leaves,
				// and is not reported; everything else is.
				wantReport := !(dname == "deleted" && which == "copy")
				if wantReport && (len(broken) != 1 || !broken[0].Recovered || broken[0].ID != op.ID || broken[0].Quarantined != "") {
					t.Fatalf("read-only list reported %+v", broken)
				}
				if !wantReport && len(broken) != 0 {
					t.Fatalf("read-only list reported %+v", broken)
				}
				if after := snapshotNames(t, path); !equalStrings(before, after) {
					t.Fatalf("read-only list changed the directory: %v -> %v", before, after)
				}
				// A writable List repairs: both files hold the good bytes,
				// the bad one is kept in .broken/.
				ops, broken, err = d.List(ctx)
				if err != nil || len(ops) != 1 || ops[0].Gen != 2 {
					t.Fatalf("list: %v %v", ops, err)
				}
				if !bytes.Equal(read(t, d.mainPath(op.ID)), good) || !bytes.Equal(read(t, d.copyPath(op.ID)), good) {
					t.Fatal("file and copy not restored to the last write")
				}
				if wantReport && dname == "deleted" && (len(broken) != 1 || !broken[0].Recovered) {
					t.Fatalf("list reported %+v", broken)
				}
				if dname != "deleted" {
					if len(broken) != 1 || !broken[0].Recovered || broken[0].Quarantined == "" {
						t.Fatalf("list reported %+v", broken)
					}
					if _, err := os.Lstat(broken[0].Quarantined); err != nil {
						t.Fatalf("damaged file not kept: %v", err)
					}
				}
				if _, broken, _ := d.List(ctx); len(broken) != 0 {
					t.Fatalf("still broken after the repair: %+v", broken)
				}
			})
		}
	}
}

// An update after a damage repairs too, and builds on the good generation.
func TestUpdateAfterDamage(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	good := read(t, d.mainPath(op.ID))
	os.WriteFile(d.mainPath(op.ID), good[:len(good)/2], 0o640)
	up, err := d.Update(ctx, op.ID, func(o *Op) error { o.Step = StepPass; return nil })
	if err != nil || up.Gen != 3 || up.State != Reenciphering {
		t.Fatalf("update: %+v %v", up, err)
	}
	q, _ := filepath.Glob(filepath.Join(path, brokenDir, string(op.ID)+".*"))
	if len(q) != 1 || !bytes.Equal(read(t, q[0]), good[:len(good)/2]) {
		t.Fatalf("torn file not quarantined: %v", q)
	}
	if !bytes.Equal(read(t, d.mainPath(op.ID)), read(t, d.copyPath(op.ID))) {
		t.Fatal("file and copy differ")
	}
}

// A file torn half way through a write (in place, not by rename) while the
// copy still holds the previous generation: the previous generation is
// read, not the torn one, and nothing else.
func TestTornWriteReadsPreviousGeneration(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	prev := read(t, d.mainPath(op.ID))
	next := op.Clone()
	next.Gen, next.Step = 3, StepPass
	raw, err := Encode(next)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d.mainPath(op.ID), raw[:len(raw)/2], 0o640)
	got, err := d.Load(ctx, op.ID)
	if err != nil || got.Gen != 2 || got.Step != StepBroadcast {
		t.Fatalf("load after a torn write: %+v %v; want generation 2", got, err)
	}
	if _, _, err := d.List(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t, d.mainPath(op.ID)), prev) {
		t.Fatal("file not restored to the previous generation")
	}
}

// Both files unusable: every call names the operation with a
// *DamagedError, nothing treats it as absent, nothing moves it away, and
// the other operations are unaffected.
func TestBothCopiesDamaged(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	other, err := d.Create(ctx, sampleOp(t, "05.0033", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	good := read(t, d.mainPath(op.ID))
	os.WriteFile(d.mainPath(op.ID), flip(good, 40), 0o640)
	os.WriteFile(d.copyPath(op.ID), good[:len(good)/2], 0o640)
	before := snapshot(t, path)
	isDamaged := func(what string, err error) {
		t.Helper()
		var de *DamagedError
		if !errors.As(err, &de) || de.ID != op.ID || errclass.Of(err) != errclass.DataLoss || len(de.Problems) != 2 {
			t.Fatalf("%s: %v; want a DamagedError for %s", what, err, op.ID)
		}
		if h := errclass.Hint(err); !strings.Contains(h, "restore") || !strings.Contains(h, copySuffix) {
			t.Fatalf("%s: hint %q does not say how to repair", what, h)
		}
	}
	_, err = d.Load(ctx, op.ID)
	isDamaged("load", err)
	_, err = d.Update(ctx, op.ID, func(o *Op) error { return nil })
	isDamaged("update", err)
	isDamaged("remove", d.Remove(ctx, op.ID, Canceled))
	ops, broken, err := d.List(ctx)
	if err != nil || len(ops) != 1 || ops[0].ID != other.ID {
		t.Fatalf("list: %v %v", ops, err)
	}
	if len(broken) != 1 || broken[0].Recovered || broken[0].Quarantined != "" {
		t.Fatalf("broken = %+v", broken)
	}
	isDamaged("list", broken[0].Err)
	_, err = d.Create(ctx, sampleOp(t, "09.0033", mkvp.CCAAES))
	if errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), string(op.ID)) {
		t.Fatalf("create next to a damaged operation: %v", err)
	}
	if after := snapshot(t, path); !equalMaps(before, after) {
		t.Fatal("the damaged operation's files were changed or moved")
	}
	// Restoring either file from a backup is enough.
	os.WriteFile(d.copyPath(op.ID), good, 0o640)
	if got, err := d.Load(ctx, op.ID); err != nil || got.Gen != 2 {
		t.Fatalf("after restoring the copy: %v %v", got, err)
	}
}

// Entries that are not regular files, named like an operation: never
// opened in a way that blocks, reported, never taken for operations.
func TestNotRegularEntries(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	good, err := d.Create(ctx, sampleOp(t, "01.0001", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(path, "Ff1111"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(path, "Dd2222"), 0o750)
	os.Symlink("/etc/passwd", filepath.Join(path, "Ll3333"))
	if err := syscall.Mknod(filepath.Join(path, "Nn4444"), syscall.S_IFSOCK|0o640, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var ops []*Op
	var broken []Broken
	go func() {
		defer close(done)
		ops, broken, err = d.List(ctx)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("List blocked on a FIFO")
	}
	if err != nil || len(ops) != 1 || ops[0].ID != good.ID {
		t.Fatalf("list: %v %v", ops, err)
	}
	want := map[string]string{"Ff1111": "a FIFO", "Dd2222": "a directory", "Ll3333": "a symlink", "Nn4444": "a socket"}
	if len(broken) != len(want) {
		t.Fatalf("broken = %+v", broken)
	}
	for _, b := range broken {
		if b.Recovered || !strings.Contains(b.Err.Error(), want[b.Name]) {
			t.Errorf("%s: %v; want %q", b.Name, b.Err, want[b.Name])
		}
	}
	if _, err := d.Load(ctx, "Ff1111"); !strings.Contains(fmt.Sprint(err), "a FIFO") {
		t.Fatalf("load of a FIFO: %v", err)
	}
	// A stray file with another name is not an operation and is left alone.
	os.WriteFile(filepath.Join(path, "notes.txt"), []byte("x"), 0o640)
	if _, broken, _ := d.List(ctx); len(broken) != len(want) {
		t.Fatalf("stray file reported: %+v", broken)
	}
}

func TestHoldsOperationUnderAnotherName(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	good, _ := d.Create(ctx, sampleOp(t, "01.0001", mkvp.CCAAES))
	raw := read(t, d.mainPath(good.ID))
	os.WriteFile(filepath.Join(path, "Xx7777"), raw, 0o640)
	if _, broken, _ := d.List(ctx); len(broken) != 1 || !strings.Contains(broken[0].Err.Error(), "under another name") {
		t.Fatalf("renamed copy: %+v", broken)
	}
}

// A version 1 file (no copy, no generation) is read, and the first write
// keeps it as generation 1 history and stores version 2 with a copy.
func TestVersion1FileStillRead(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := sampleOp(t, "01.0033", mkvp.CCAAES)
	op.ID, op.State, op.Step = "Vv1abc", Reenciphered, "token-pass"
	op.Transitions = []Transition{{Initial, time.Unix(1700000000, 0).UTC()}, {Reenciphered, time.Unix(1700000100, 0).UTC()}}
	raw, err := Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	v1 := resum(bytes.Replace(raw, []byte(magic+" 2"), []byte(magic+" 1"), 1))
	os.WriteFile(d.mainPath(op.ID), v1, 0o640)
	got, err := d.Load(ctx, op.ID)
	if err != nil || got.State != Reenciphered || got.Gen != 0 {
		t.Fatalf("load v1: %+v %v", got, err)
	}
	up, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Finalizing, time.Now()) })
	if err != nil || up.Gen != 1 {
		t.Fatalf("update v1: %+v %v", up, err)
	}
	main := read(t, d.mainPath(op.ID))
	if !bytes.HasPrefix(main, []byte(magic+" 2\n")) || !bytes.Equal(main, read(t, d.copyPath(op.ID))) {
		t.Fatalf("not rewritten as version 2 with a copy:\n%s", main)
	}
}

func snapshotNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		out = append(out, p)
		return nil
	})
	return out
}

func equalStrings(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Of two valid files the newer generation wins, whichever of the two it
// is (a file restored from an old backup does not roll the operation back).
func TestNewerGenerationWins(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op, err := d.Create(ctx, sampleOp(t, "01.0033", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	gen1 := read(t, d.mainPath(op.ID))
	advanced, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Reenciphering, time.Now()) })
	if err != nil || advanced.Gen != 2 {
		t.Fatal(advanced, err)
	}
	gen2 := read(t, d.mainPath(op.ID))
	for _, tc := range []struct{ main, copy []byte }{{gen1, gen2}, {gen2, gen1}} {
		os.WriteFile(d.mainPath(op.ID), tc.main, 0o640)
		os.WriteFile(d.copyPath(op.ID), tc.copy, 0o640)
		got, err := d.Load(ctx, op.ID)
		if err != nil || got.Gen != 2 || got.State != Reenciphering {
			t.Fatalf("load: %+v %v; want generation 2", got, err)
		}
		if _, _, err := d.List(ctx); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read(t, d.mainPath(op.ID)), gen2) || !bytes.Equal(read(t, d.copyPath(op.ID)), gen2) {
			t.Fatal("the older generation was not rewritten")
		}
	}
}

// An operation file swapped for a FIFO between the lstat and the open:
// the open does not wait for a writer and fstat refuses it.
func TestFIFOSwappedInAfterLstat(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	op := advance(t, d)
	main := d.mainPath(op.ID)
	swapped := false
	afterLstat = func(name string) {
		if name == main && !swapped {
			swapped = true
			os.Remove(name)
			if err := syscall.Mkfifo(name, 0o640); err != nil {
				t.Error(err)
			}
		}
	}
	defer func() { afterLstat = func(string) {} }()
	done := make(chan opRead, 1)
	go func() { done <- d.read(op.ID) }() // alone in the directory: no lock needed
	select {
	case r := <-done:
		if r.op == nil || r.op.Gen != 2 || !swapped {
			t.Fatalf("read: %+v %v (swapped %v); want the copy's generation 2", r.op, r.err, swapped)
		}
		if r.main.err == nil || !strings.Contains(r.main.err.Error(), "a FIFO") {
			t.Fatalf("the swapped-in FIFO was not refused by fstat: %v", r.main.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Load blocked opening a FIFO swapped in after the lstat")
	}
	if _, broken, _ := d.List(ctx); len(broken) != 1 || !strings.Contains(broken[0].Err.Error(), "a FIFO") {
		t.Fatalf("broken = %+v", broken)
	}
}

// Quarantined files never overwrite each other, even within one instant.
func TestQuarantineKeepsEveryFile(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	fixed := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	d, err := Open(path, Options{Now: func() time.Time { return fixed }})
	if err != nil {
		t.Fatal(err)
	}
	op := advance(t, d)
	good := read(t, d.mainPath(op.ID))
	for i := range 3 {
		os.WriteFile(d.mainPath(op.ID), []byte(fmt.Sprint("damage ", i)), 0o640)
		if _, _, err := d.List(ctx); err != nil {
			t.Fatal(err)
		}
	}
	q, _ := filepath.Glob(filepath.Join(path, brokenDir, string(op.ID)+".*"))
	if len(q) != 3 {
		t.Fatalf("quarantined %v; want all three damaged versions", q)
	}
	seen := map[string]bool{}
	for _, f := range q {
		seen[string(read(t, f))] = true
	}
	if len(seen) != 3 || !bytes.Equal(read(t, d.mainPath(op.ID)), good) {
		t.Fatalf("quarantined contents %v", seen)
	}
}

// A claim file without an operation and without a holder is removed by the
// next write; a held one stays.
func TestOrphanClaimRemoved(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir()
	d := openDir(t, path)
	orphan := d.claimPath("Oo1234")
	os.WriteFile(orphan, []byte("pid=1\ncommand=cancel\n"), 0o640)
	held, err := d.Claim(ctx, "Hh5678", "cancel")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	op := advance(t, d)
	if _, err := os.Lstat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan claim file left: %v", err)
	}
	if _, err := os.Lstat(d.claimPath("Hh5678")); err != nil {
		t.Fatalf("held claim file removed: %v", err)
	}
	// A claim of an existing operation, even unheld, stays.
	c, err := d.Claim(ctx, op.ID, "finalize")
	if err != nil {
		t.Fatal(err)
	}
	c.f.Close() // drop the flock, keep the file (a killed holder)
	if _, err := d.Update(ctx, op.ID, func(o *Op) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(d.claimPath(op.ID)); err != nil {
		t.Fatalf("claim file of a live operation removed: %v", err)
	}
}
