package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// withMigrations replaces the migration list for one test.
func withMigrations(t *testing.T, extra ...string) {
	orig := migrations
	migrations = append(append([]string{}, orig...), extra...)
	t.Cleanup(func() { migrations = orig })
}

// withMigrationsUpTo makes the store write schema version v for one test.
func withMigrationsUpTo(t *testing.T, v int) {
	orig := migrations
	migrations = orig[:v:v]
	t.Cleanup(func() { migrations = orig })
}

func schemaVersion(t *testing.T, dir string) int {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMigrationUpgradesInPlace opens a version-1 token with a program that
// knows a second migration: the schema moves on and the data stays.
func TestMigrationUpgradesInPlace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, dk := newTokenIn(t, dir, testOptions(t))
	o := keyObject("survivor", true)
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cur := SchemaVersion()
	if v := schemaVersion(t, dir); v != cur {
		t.Fatalf("schema version %d, want %d", v, cur)
	}
	withMigrations(t, `CREATE TABLE audit (at TEXT NOT NULL)`)
	s2 := openTest(t, dir)
	if v := schemaVersion(t, dir); v != cur+1 {
		t.Fatalf("schema version after upgrade %d, want %d", v, cur+1)
	}
	if _, err := s2.wdb.Exec(`INSERT INTO audit VALUES ('x')`); err != nil {
		t.Fatalf("migrated table missing: %v", err)
	}
	dk2, err := s2.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get(ctx, dk2, o.Handle); err != nil || string(got.Attrs[ckaLabel]) != "survivor" {
		t.Fatalf("object after upgrade: %v", err)
	}
}

// TestFailedMigrationChangesNothing: a migration that fails part-way
// leaves the database at its old version with none of the new schema.
func TestFailedMigrationChangesNothing(t *testing.T) {
	dir := t.TempDir()
	full := migrations
	withMigrationsUpTo(t, len(full)-1)
	s := openTest(t, dir)
	s.Close()
	withMigrations(t, full[len(full)-1]+`; CREATE TABLE half (a); THIS IS NOT SQL`)
	_, err := Open(dir, testOptions(t))
	if err == nil {
		t.Fatal("Open with a broken migration succeeded")
	}
	if errclass.Of(err) == errclass.Unknown {
		t.Errorf("error %q has no class", err)
	}
	if v := schemaVersion(t, dir); v != SchemaVersion()-1 {
		t.Fatalf("schema version after failed migration %d, want %d", v, SchemaVersion()-1)
	}
	db, _ := sql.Open("sqlite", filepath.Join(dir, DBName))
	defer db.Close()
	var n int
	db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'half'`).Scan(&n)
	if n != 0 {
		t.Fatal("the failed migration's first statement was kept")
	}
}
