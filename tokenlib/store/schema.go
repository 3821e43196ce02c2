package store

import (
	"context"
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// migrations are applied in order; migrations[i] takes the schema from
// user_version i to i+1. Append only: a released migration never changes.
var migrations = []string{
	// 1: token record, PIN wraps, objects.
	`
CREATE TABLE token (
	id          INTEGER PRIMARY KEY CHECK (id = 1),
	token_id    BLOB    NOT NULL,           -- 16 random bytes, bound into every seal
	serial      TEXT    NOT NULL,           -- CK_TOKEN_INFO serialNumber
	label       TEXT    NOT NULL DEFAULT '',
	initialized INTEGER NOT NULL DEFAULT 0,
	dk_id       BLOB,                       -- id of the current data key; NULL before InitToken
	generation  INTEGER NOT NULL DEFAULT 0  -- bumped by every write transaction
);
CREATE TABLE pin (
	user          INTEGER PRIMARY KEY,      -- 0 SO, 1 USER
	kdf           TEXT    NOT NULL,         -- "argon2id"
	kdf_time      INTEGER NOT NULL,
	kdf_memory    INTEGER NOT NULL,         -- KiB
	kdf_threads   INTEGER NOT NULL,
	salt          BLOB    NOT NULL,
	wrapped       BLOB    NOT NULL,         -- AES-256-GCM(nonce||ct||tag) of the data key
	failures      INTEGER NOT NULL DEFAULT 0,
	to_be_changed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE object (
	handle    INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused, even after delete or re-init
	unique_id TEXT    NOT NULL UNIQUE,
	class     INTEGER NOT NULL,
	private   INTEGER NOT NULL,
	version   INTEGER NOT NULL,
	attrs     BLOB    NOT NULL               -- see codec.go
);
CREATE INDEX object_class ON object (class);
`,
	// 2: search index columns (see index.go); NULL until indexed.
	`
ALTER TABLE object ADD COLUMN label_ix BLOB;
ALTER TABLE object ADD COLUMN id_ix BLOB;
CREATE INDEX object_label ON object (label_ix);
CREATE INDEX object_id ON object (id_ix);
`,
	// 3 (readiness): the master key summary of each object (see census.go;
	// NULL: not recorded, e.g. written by an older release), and the
	// journal of master key change passes (see journal.go). Touches no
	// table another migration creates, so it commutes with them.
	`
ALTER TABLE object ADD COLUMN mk BLOB;
CREATE TABLE journal (
	id      INTEGER PRIMARY KEY CHECK (id = 1),
	op      TEXT    NOT NULL,           -- operation id
	action  TEXT    NOT NULL,           -- reencipher, finalize, cancel
	done    INTEGER NOT NULL DEFAULT 0, -- 1: the pass of this action completed
	pages   INTEGER NOT NULL DEFAULT 0, -- pages committed by this action's passes
	updated INTEGER NOT NULL            -- unix seconds
);
`,
	// 4 (issue 17): the narrow blob table (see blobs.go). Every object
	// gets its row, carrying its version from now on; blobs NULL marks a
	// row whose blob attributes are still inside object.attrs until its
	// next update. Takes over the master key summary of migration 3, so it comes after
	// it.
	`
CREATE TABLE blob (
	handle  INTEGER PRIMARY KEY,  -- object.handle
	version INTEGER NOT NULL,     -- the object's version (object.version is no longer written)
	blobs   BLOB,                 -- CKA_IBM_OPAQUE, _REENC, _OLD as an attribute list (codec.go); NULL: in object.attrs
	mk      BLOB                  -- the master key summary, written with the blobs (census.go); object.mk is no longer written
);
INSERT INTO blob (handle, version, mk) SELECT handle, version, mk FROM object;
CREATE TRIGGER object_blob_delete AFTER DELETE ON object BEGIN
	DELETE FROM blob WHERE handle = old.handle;
END;
`,
}

// SchemaVersion returns the schema version this package writes.
func SchemaVersion() int { return len(migrations) }

// migrate brings the schema to SchemaVersion() in one transaction and creates
// the token record. Concurrent openers serialise on the write lock; the
// second one finds the work done.
func (s *Store) migrate(ctx context.Context) error {
	// Fast path without the write lock, so that opening a token does not
	// wait for another process's long batch.
	var v, n int
	if err := s.rdb.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return classifyDB(fmt.Errorf("open token store %s: read schema version: %w", s.path, err))
	}
	if v > len(migrations) {
		return errNewerSchema(s.path, v)
	}
	if v == len(migrations) {
		if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM token WHERE id = 1`).Scan(&n); err != nil {
			return classifyDB(fmt.Errorf("open token store %s: read token record: %w", s.path, err))
		}
		if n == 1 {
			return nil
		}
	}
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return classifyDB(fmt.Errorf("open token store %s: begin migration: %w", s.path, err))
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return classifyDB(fmt.Errorf("open token store %s: read schema version: %w", s.path, err))
	}
	if v > len(migrations) {
		return errNewerSchema(s.path, v)
	}
	if v < 0 {
		return errclass.New(errclass.DataLoss, "open token store %s: invalid schema version %d", s.path, v)
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return classifyDB(fmt.Errorf("open token store %s: migrate schema %d -> %d: %w", s.path, i, i+1, err))
		}
	}
	if v != len(migrations) {
		// PRAGMA takes no bind parameters; the value is our own integer.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
			return classifyDB(fmt.Errorf("open token store %s: set schema version: %w", s.path, err))
		}
		s.log.Info().Str("path", s.path).Int("from", v).Int("to", len(migrations)).Msg("token store schema migrated")
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO token (id, token_id, serial) VALUES (1, ?, ?)`,
		randomBytes(tokenIDLen), newSerial()); err != nil {
		return classifyDB(fmt.Errorf("open token store %s: create token record: %w", s.path, err))
	}
	if err := tx.Commit(); err != nil {
		return classifyDB(fmt.Errorf("open token store %s: commit migration: %w", s.path, err))
	}
	return nil
}

func errNewerSchema(path string, v int) error {
	return errclass.Newh(errclass.FailedPrecondition, "use a pkcshsm release at least as new as the one that last wrote this token",
		"open token store %s: schema version %d is newer than this program knows (%d)", path, v, len(migrations))
}
