package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// testKDF keeps tests fast; the KDF's cost is measured by BenchmarkLogin.
var testKDF = KDF{Algorithm: KDFArgon2id, Time: 1, MemoryKiB: 64, Threads: 1}

var (
	soPIN   = []byte("so-secret-8877")
	userPIN = []byte("user-secret-4455")
)

const (
	ckaClass    = 0x000
	ckaLabel    = 0x003
	ckaValue    = 0x011
	ckaID       = 0x102
	ckaOpaque   = 0x80000001 // CKA_IBM_OPAQUE
	ckoSecret   = 4
	ckoPrivate  = 3
	ckoCert     = 1
	ckaKeyType  = 0x100
	ckaSensitiv = 0x103
)

func testOptions(t testing.TB) Options {
	return Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), KDF: testKDF}
}

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newToken returns an initialized token with a USER PIN and a USER data key.
func newToken(t testing.TB) (*Store, *DataKey) {
	t.Helper()
	return newTokenIn(t, t.TempDir(), testOptions(t))
}

// newTokenIn is newToken in a given directory with given options.
func newTokenIn(t testing.TB, dir string, opts Options) (*Store, *DataKey) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.InitToken(ctx, soPIN, "test token"); err != nil {
		t.Fatalf("InitToken: %v", err)
	}
	so, err := s.Login(ctx, SO, soPIN)
	if err != nil {
		t.Fatalf("Login SO: %v", err)
	}
	if err := s.InitUserPIN(ctx, so, userPIN); err != nil {
		t.Fatalf("InitUserPIN: %v", err)
	}
	so.Destroy()
	dk, err := s.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatalf("Login USER: %v", err)
	}
	return s, dk
}

func wantClass(t *testing.T, err error, c errclass.Class, sentinel error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", c)
	}
	if got := errclass.Of(err); got != c {
		t.Fatalf("error %q has class %v, want %v", err, got, c)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Fatalf("error %q does not wrap %q", err, sentinel)
	}
}

func TestSmokeCreateGetList(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	pub := &Object{Class: ckoCert, Attrs: map[uint32][]byte{ckaLabel: []byte("cert")}}
	if err := s.Create(ctx, nil, pub); err != nil {
		t.Fatalf("Create public: %v", err)
	}
	priv := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaLabel: []byte("key"), ckaOpaque: []byte("blob")}}
	if err := s.Create(ctx, dk, priv); err != nil {
		t.Fatalf("Create private: %v", err)
	}
	got, err := s.Get(ctx, dk, priv.Handle)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if string(got.Attrs[ckaOpaque]) != "blob" || got.UniqueID != priv.UniqueID || got.Version != 1 {
		t.Fatalf("Get returned %+v", got)
	}
	objs, err := s.List(ctx, nil, Filter{})
	if err != nil || len(objs) != 1 || objs[0].Handle != pub.Handle {
		t.Fatalf("List without key = %v, %v; want only the public object", objs, err)
	}
}

// TestConnectionSettings checks the pragmas every connection of both pools
// runs with.
func TestConnectionSettings(t *testing.T) {
	s := openTest(t, t.TempDir())
	for name, db := range map[string]*sql.DB{"read pool": s.rdb, "write pool": s.wdb} {
		var mode string
		var syncMode, fk, busy int
		if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		db.QueryRow(`PRAGMA synchronous`).Scan(&syncMode)
		db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk)
		db.QueryRow(`PRAGMA busy_timeout`).Scan(&busy)
		if mode != "wal" || syncMode != 2 || fk != 1 || busy != int(DefaultBusyTimeout.Milliseconds()) {
			t.Errorf("%s: journal_mode=%s synchronous=%d foreign_keys=%d busy_timeout=%d; want wal 2 (FULL) 1 %d",
				name, mode, syncMode, fk, busy, DefaultBusyTimeout.Milliseconds())
		}
		var secDel, walLimit int
		db.QueryRow(`PRAGMA secure_delete`).Scan(&secDel)
		db.QueryRow(`PRAGMA journal_size_limit`).Scan(&walLimit)
		if secDel != 2 || walLimit != 64<<20 {
			t.Errorf("%s: secure_delete=%d journal_size_limit=%d; want 2 (FAST) and 64 MiB", name, secDel, walLimit)
		}
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.List(ctx, dk, Filter{})
	wantClass(t, err, errclass.FailedPrecondition, nil)
	err = s.Create(ctx, dk, &Object{})
	wantClass(t, err, errclass.FailedPrecondition, nil)
	_, err = s.Generation(ctx)
	wantClass(t, err, errclass.FailedPrecondition, nil)
}

// TestOpenOddDirectoryName: URI metacharacters in the path must not turn
// into SQLite URI parameters or escapes.
func TestOpenOddDirectoryName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "we?ird#dir%20 x&mode=ro")
	s := openTest(t, dir)
	if err := s.InitToken(context.Background(), soPIN, "odd"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, DBName)); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Fatalf("Open created %d entries next to the token directory, want 1", len(entries))
	}
}
