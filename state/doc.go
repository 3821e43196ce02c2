// Package state keeps master key change operations on disk.
//
// An operation is the record of one master key change: which APQNs and
// master key types change, to which new patterns, which token slots are
// affected and what they held before, and where the change stands. The
// operation files are the source of truth for every process: the
// pkcshsm_mk_change tool writes them, the runtime agent in every
// application reads them (on start, on reconnect, and whenever they change)
// and the daemon's events are only the fast path.
//
// # Files
//
// The directory (<root>/var/lib/pkcshsm/HSM_MK_CHANGE) holds:
//
//	<id>           one operation; id = 6 characters [A-Za-z0-9]
//	.lock          the lock file (flock)
//	history.jsonl  append-only record of ended operations
//	.broken/       unreadable files, moved aside with a timestamp
//	.tmp-*         a write in progress (or interrupted by a crash)
//
// An operation file is a header line "pkcshsm-mk-change-op <version>", the
// operation as JSON and a trailer with the SHA-256 of what precedes it.
// Unknown versions, damaged or truncated files are errors of class DataLoss;
// [Dir.List] moves them to .broken/ and reports them, and they never hide or
// break other operations.
//
// # Locking and crash safety
//
// Every write takes an exclusive flock on the separate lock file (flock
// follows the inode, and renames replace the data files, so the data files
// themselves cannot carry the lock); readers take a shared one. A write goes
// to a temp file which is fsynced, renamed over the old file, and the
// directory is fsynced. After a kill -9 at any point the file holds the old
// or the new content, the lock is released by the kernel, and the leftover
// temp file is removed by the next write.
//
// [Dir.Create] runs the conflict check (same APQN and same master key type
// as an existing operation) and the creation under one exclusive lock, so
// two concurrent reencipher runs cannot both pass. [Dir.Update] is a
// read-modify-write under the lock that enforces the state machine.
//
// # State machine
//
//	INITIAL ──▶ REENCIPHERING ──▶ REENCIPHERED ──▶ FINALIZING ──▶ (removed: finalized)
//	   │              │                 │               │
//	   └──────────────┴─────────────────┴──▶ CANCELING ─┴──▶ (removed: canceled)
//	                  FINALIZING, CANCELING ──▶ ERROR ──▶ FINALIZING | CANCELING
//
// Every state has a way out, so a crash at any point can be completed:
// finalize resumes FINALIZING and ERROR, cancel resumes INITIAL,
// REENCIPHERING, CANCELING and ERROR.
package state
