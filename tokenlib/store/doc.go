// Package store keeps one PKCS#11 token's persistent state — the token
// record, the PINs and the token objects — in one SQLite database per token,
// shared safely by every process that uses the token.
//
// # Files
//
// [Open] creates or opens <dir>/token.db. The directory gets mode 0770 and
// the database 0660 so that the token group shares them (SQLite gives its
// -wal and -shm files the database's mode); symlinks are refused for both.
// The database runs in WAL mode with synchronous=FULL: a write returns only
// when it is durable, readers never block writers, and a process killed in
// the middle of a write leaves the old state or the new one, never a mix.
// The driver is modernc.org/sqlite (pure Go), so CGO_ENABLED=0 builds work.
//
// The schema carries a version (PRAGMA user_version) and is migrated
// forward on Open in one transaction. A database written by a newer release
// is refused with an errclass.FailedPrecondition error and left alone.
//
// # Token, PINs and the data key
//
// [Store.InitToken] draws a fresh 32-byte token data key and wraps it with
// AES-256-GCM under a key derived from the SO PIN; [Store.InitUserPIN] wraps
// the same data key under the USER PIN. PIN-derived keys come from Argon2id
// with a random salt and parameters stored with each wrap ([KDF],
// [DefaultKDF]), so the cost can be raised later: a PIN set after the raise
// uses the new cost, old wraps keep theirs. No PIN, no PIN hash and no
// clear data key is ever stored; a wrong PIN is simply a wrap that does not
// open.
//
// [Store.Login] derives the key, unwraps the data key and returns it as a
// [DataKey] — holding one is what "logged in" means to the store. Wrong PINs
// are counted in the database in a write transaction, so every process sees
// the same count; a success resets it; MaxPINAttempts (default 10) wrong
// PINs in a row lock the PIN, and a locked PIN is refused even when right.
// [TokenInfo.Flags] reports the CKF_*_PIN_* flags derived from this state.
// PINs are never logged and never appear in errors.
//
// Test errors with errors.Is against the sentinels ([ErrPINIncorrect],
// [ErrPINLocked], ...) or against the errclass classes.
//
// # Objects
//
// An [Object] is one row: handle (row id, never reused), unique id
// (CKA_UNIQUE_ID, random, assigned by the store), class (indexed), private
// flag, version, and the attribute list as one encoded BLOB. Public objects'
// attributes are stored in clear — they hold no secrets, key material is
// always an HSM-enciphered blob. Private objects' attributes are sealed one
// by one with AES-256-GCM under the data key; the associated data binds each
// value to the token, the object's unique id and the attribute type, and a
// tag over the set of attribute types binds the list itself, so values
// cannot be moved, swapped, dropped or added without [Store.Get] reporting
// errclass.DataLoss.
//
// [Store.Update] is optimistic: it succeeds only if the object still has the
// version the caller read, otherwise errclass.Conflict. [Store.Batch] runs
// many Create/Get/List/Update/Delete calls in one transaction (an MK change
// rewrites thousands of objects per batch); Update re-seals only the values
// that changed since the object was read. Large tokens are read page by
// page ([Filter.After], [Filter.Limit]); [Store.Count] says how many objects
// there are without reading them, for progress reports.
//
// # Searching a large token
//
// [Store.Find] returns matching handles without decoding any object: a
// filter on the class, the private flag, the unique id or handles is
// answered from columns, and a filter on CKA_LABEL or CKA_ID goes through
// an index of keyed digests (HMAC under a key derived from the token id
// for public objects, from the data key for private ones, so the index
// reveals no private label; see index.go). Each index branch is read in
// handle order and merged, so paging never sorts. [Filter.Only] reads just
// some attributes of each match (a master key change pass needs the blobs
// of a key, not its two dozen other attributes), and an Update of such an
// object writes the others back unchanged. [Store.Version] (one indexed
// read) tells an engine whether its cached copy of an object is current.
//
// # Several processes
//
// Every read sees the latest committed state of every process: the store
// caches nothing. To cache decoded objects, an engine calls
// [Store.Generation] (one indexed read, no decryption) before each use of
// its cache: the value changes with every committed write of any process and
// never otherwise. When it moved, [Store.Version] or a fresh [Store.List]
// tells what changed. Writers of different processes queue on SQLite's lock
// (up to [Options.BusyTimeout]); readers never wait.
//
// Writers of all processes pass the writers' gate (<dir>/token.db-gate,
// see gate.go) before their transaction: ordinary writers share it, a
// bulk writer ([Store.BatchLow], a master key change pass) takes it alone
// and yields after each transaction, so an application's write waits for
// at most one short bulk transaction, never a series of them.
//
// Opening a token (once its schema is current), reading, and a login that
// has no failure count to reset never wait for another process's write
// transaction; only writers queue behind each other.
//
// Each write transaction is atomic and durable: InitToken destroys all
// objects and clears the USER PIN in the same transaction that installs the
// new data key; a Batch commits all of its changes or none.
package store
