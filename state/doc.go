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
//	<id>.copy      its copy, written right after it by every write
//	.claim-<id>    the operation's claim file (flock; pid of the command)
//	.lock          the directory lock file (flock)
//	history.jsonl  append-only record of ended operations
//	.broken/       damaged files, moved aside with a timestamp
//	.tmp-*         a write in progress (or interrupted by a crash)
//
// An operation file is a header line "pkcshsm-mk-change-op <version>", the
// operation as JSON and a trailer with the SHA-256 of what precedes it.
// Version 2 (written now) adds the generation [Op.Gen] and records each
// step before it begins; version 1 files are still read. Only regular
// files are opened: every entry is checked with lstat, opened with
// O_NOFOLLOW|O_NONBLOCK and checked again with fstat before a byte is
// read, so a FIFO, socket, device or symlink named like an operation is
// reported, never waited on.
//
// # Damaged files
//
// Every write replaces the file, then its copy, so both hold the same
// generation except between those two renames, when the file is one
// generation ahead. A reader takes the valid one with the higher
// generation. This keeps the previous generation beside the current one
// only for the instant it is needed (as bbolt's two meta pages do) and
// otherwise keeps two copies of the current one: a damaged file never
// rolls an operation back past an intent it recorded.
//
// If one of the two is damaged (checksum, truncation, wrong type), the
// operation is read from the other; a writable [Dir.List] or the next
// write moves the damaged file to .broken/ and rewrites it, and the
// [Broken] entry says Recovered. If both are unusable, the operation is
// NOT absent: every call that reads it returns a *[DamagedError] (class
// DataLoss) carrying its [ID], [Dir.List] reports it in a [Broken] entry
// whose Err is that error, it is never quarantined, and [Dir.Create]
// refuses to start next to it. Processes that knew the operation keep
// acting on the last state they read until it is repaired:
//
//	var de *state.DamagedError
//	if errors.As(b.Err, &de) { keep the last known state of de.ID }
//
// A [Broken] entry's ID names the operation and its Name the file ("<id>"
// or "<id>.copy"); an entry with Recovered set is only a report: the
// operation is in the list, read from its other file.
//
// # Locking and crash safety
//
// Every write takes an exclusive flock on the separate lock file (flock
// follows the inode, and renames replace the data files, so the data files
// themselves cannot carry the lock); readers take a shared one. Every wait
// is bounded by [Options.LockTimeout]; the timeout error names the lock
// file and the processes holding it (from /proc/locks). Nothing done under
// the lock can block: only regular files are read.
//
// A write goes to a temp file which is fsynced, renamed over the old file,
// and the directory is fsynced; then the same for the copy. After a kill
// -9 before the first rename, both files hold exactly the old content;
// after it, the new content is read. The lock is released by the kernel,
// and the leftover temp file is removed by the next write. Creating the
// directory fsyncs its parent; moving a file to .broken/ fsyncs both
// directories.
//
// [Dir.Create] runs the conflict check (same APQN and same master key type
// as an existing operation) and the creation under one exclusive lock, so
// two concurrent reencipher runs cannot both pass. [Dir.Update] is a
// read-modify-write under the lock that enforces the state machine.
//
// # One command per operation
//
// A reencipher, finalize or cancel holds the operation's [Claim] (an
// exclusive flock on .claim-<id>, taken without waiting, released by the
// kernel when the process dies) for as long as it runs; a second command on
// the same operation gets a *[ClaimedError] naming the holder's pid.
// [Dir.CreateClaimed] takes the claim before the new operation is visible.
//
// # State machine
//
//	INITIAL ──▶ REENCIPHERING ──▶ REENCIPHERED ──▶ FINALIZING ──▶ (removed: finalized)
//	   │              │                 │               │
//	   └──────────────┴─────────────────┴──▶ CANCELING ─┴──▶ (removed: canceled)
//	                  FINALIZING, CANCELING ──▶ ERROR ──▶ back to the state it failed in
//
// Intent before action: a command records the state and [Op.Step] it is
// about to take before it changes a key object (finalize and cancel move to
// FINALIZING/CANCELING before their first pass), so after a kill at any
// instant the file names the one command that completes it
// ([Op.Completes]) and whether activating the new master keys would lose
// keys ([Op.SetLosesKeys]). Every state has a way out: cancel completes
// INITIAL, REENCIPHERING and CANCELING, finalize FINALIZING, finalize or
// cancel REENCIPHERED, and an ERROR is completed by the command that
// failed.
package state
