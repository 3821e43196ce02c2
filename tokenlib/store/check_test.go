package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// fillKeys creates n private key objects with distinct blobs.
func fillKeys(t *testing.T, s *Store, dk *DataKey, n int, tag string) {
	t.Helper()
	ctx := context.Background()
	err := s.Batch(ctx, dk, func(b *Tx) error {
		for i := range n {
			o := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{
				ckaLabel: []byte(fmt.Sprintf("%s-%d", tag, i)), ckaOpaque: []byte(strings.Repeat(tag, 200))}}
			if err := b.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A database cut to half its size opens (read-only, salvaged) but fails
// Check with DataLoss naming the file; a healthy one passes, with and
// without the data key.
func TestCheckFindsATruncatedDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, dk := newTokenIn(t, dir, testOptions(t))
	fillKeys(t, s, dk, 600, "k")
	if err := s.Check(ctx, nil); err != nil {
		t.Fatalf("healthy store: %v", err)
	}
	if err := s.Check(ctx, dk); err != nil {
		t.Fatalf("healthy store with the data key: %v", err)
	}
	s.Close() // checkpoints the WAL into token.db
	path := filepath.Join(dir, DBName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir, testOptions(t))
	if err != nil {
		// Refused outright is fine too: nothing could be recorded.
		if errclass.Of(err) != errclass.DataLoss {
			t.Fatalf("open of a truncated store: %v", err)
		}
		return
	}
	defer s2.Close()
	err = s2.Check(ctx, nil)
	if errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), path) || errclass.Hint(err) == "" {
		t.Fatalf("Check of a truncated store: %v (hint %q), want DataLoss naming %s", err, errclass.Hint(err), path)
	}
}

// A stale data key (the token was re-initialized) fails Check.
func TestCheckRefusesAStaleDataKey(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	if err := s.InitToken(ctx, soPIN, "again"); err != nil {
		t.Fatal(err)
	}
	so, err := s.Login(ctx, SO, soPIN)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InitUserPIN(ctx, so, userPIN); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, dk); errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("Check with the data key of the previous initialization: %v", err)
	}
}

// Backup copies the state of one moment: objects written after it are not
// in the copy, the copy opens as a token with the same PIN and objects,
// and an existing file is never overwritten.
func TestBackupIsAConsistentCopy(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	fillKeys(t, s, dk, 50, "a")
	dest := filepath.Join(t.TempDir(), "token.backup")
	if err := s.Backup(ctx, dest); err != nil {
		t.Fatal(err)
	}
	fillKeys(t, s, dk, 7, "b") // after the backup
	if err := s.Backup(ctx, dest); errclass.Of(err) != errclass.InvalidArgument {
		t.Fatalf("backup over an existing file: %v", err)
	}
	fi, err := os.Stat(dest)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600", fi, err)
	}
	if err := CheckFile(ctx, dest); err != nil {
		t.Fatalf("CheckFile: %v", err)
	}
	restored := t.TempDir()
	b, err := os.ReadFile(dest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, DBName), b, 0o660); err != nil {
		t.Fatal(err)
	}
	r := openTest(t, restored)
	rdk, err := r.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatalf("login on the copy: %v", err)
	}
	objs, err := r.List(ctx, rdk, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 50 {
		t.Fatalf("the copy has %d objects, want the 50 of the moment of the backup", len(objs))
	}
	for _, o := range objs {
		if string(o.Attrs[ckaOpaque]) != strings.Repeat("a", 200) {
			t.Fatalf("object %d of the copy has blob %.10q…", o.Handle, o.Attrs[ckaOpaque])
		}
	}
	// A file cut short is not a backup.
	if err := os.Truncate(dest, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	if err := CheckFile(ctx, dest); errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("CheckFile of a truncated backup: %v", err)
	}
}

// Restore puts the backup's state back: objects created after the backup
// are gone, those of the backup are there with their blobs, and a damaged
// backup changes nothing.
func TestRestoreBringsBackTheBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, dk := newTokenIn(t, dir, testOptions(t))
	fillKeys(t, s, dk, 20, "a")
	backup := filepath.Join(t.TempDir(), "b.db")
	if err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	fillKeys(t, s, dk, 5, "b")
	s.Close()
	bad := filepath.Join(t.TempDir(), "bad.db")
	if err := os.WriteFile(bad, []byte("SQLite format 3\x00 but not really"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Restore(ctx, dir, bad); errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("restore of a damaged backup: %v", err)
	}
	count := func() int {
		r := openTest(t, dir)
		defer r.Close()
		rdk, err := r.Login(ctx, User, userPIN)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := r.List(ctx, rdk, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(objs)
	}
	if n := count(); n != 25 {
		t.Fatalf("after the refused restore: %d objects, want 25", n)
	}
	if err := Restore(ctx, dir, backup); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 20 {
		t.Fatalf("after the restore: %d objects, want the 20 of the backup", n)
	}
}
