// Package slotd is the core of pkcshsmd, the token daemon: an event hub
// between the admin tool and every process that uses the token library. It
// holds no keys, no PINs and no master key state; the operation files are
// the truth, events are the fast path.
//
// # Sockets
//
// The daemon listens on two Unix stream sockets, normally in /run/pkcshsm:
//
//	app.sock    0660 root:pkcs11         runtime agents (one per process)
//	admin.sock  0660 root:pkcshsm-admin  pkcshsm_mk_change and pkcshsm
//
// [Server.Listen] refuses symlinks and files that are not sockets, refuses a
// socket on which another daemon still answers, and replaces a socket left
// behind by a dead one. Both sockets are removed on shutdown.
//
// # Who may do what
//
// Every connection's peer is read from the kernel (SO_PEERCRED,
// SO_PEERGROUPS) into an [Actor]; nothing the peer says about itself is
// trusted. [Policy] decides per request: root and the admin group may
// broadcast and read the status (the process list); the app group may
// connect as an application; everyone else is refused with a logged PermissionDenied error. An
// application's hello must name its own pid and uid, or it is refused. In
// sandbox mode (a temporary PKCSHSM_ROOT) the daemon's own uid counts as
// root.
//
// # Broadcasts
//
// A broadcast goes to every connected process its target addresses,
// including processes that connect while it is still pending. The daemon
// waits until each has replied or disconnected, or until the event's
// deadline (default 60 s, at most 1 h), and then answers the admin with one
// [event.Account]: for each process its pid, program, tokens and outcome
// (replied with per-token results, timed out, disconnected). No lock is held
// while waiting or writing to a socket, so a hung or dead process delays
// only the events addressed to it, and never beyond their deadlines.
//
// # Bad peers
//
// A malformed, truncated, oversized or wrong-version frame closes that one
// connection (after a best-effort error frame) and is logged; every other
// connection carries on. A process whose socket stops draining is dropped.
package slotd
