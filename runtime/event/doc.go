// Package event is the wire protocol between pkcshsmd, the runtime agents
// inside every process that uses the token library, and the admin client
// that pkcshsm_mk_change uses.
//
// # Framing
//
// Every message is one frame: a 4-byte big-endian length, then that many
// bytes of JSON. A frame body is at most [MaxFrame] bytes; a longer length
// prefix is refused before anything is read, so a peer cannot make the
// other side allocate more than that. Every body is a [Message] envelope
// carrying the protocol [Version], a [Kind] and exactly the one body field
// that the kind names. [Decode] refuses unknown fields, unknown kinds, a
// wrong version, a missing or extra body and values out of range, with an
// error of class errclass.InvalidArgument (errclass.FailedPrecondition for a
// version mismatch) that names the problem.
//
// # Conversations
//
// An application process (its agent) connects to the app socket and sends
// [KindHello] with its pid, uid, program name and tokens. The daemon checks
// the pid against the kernel's peer credentials and answers [KindWelcome]
// or [KindError]. From then on the daemon sends [KindEvent] frames and the
// agent answers each with one [KindReply] carrying the event id and a result
// per token. An agent whose tokens change sends [KindTokens] with the new
// list.
//
// An admin client connects to the admin socket and sends requests, one at a
// time, each answered by exactly one frame: [KindBroadcast] is answered by
// [KindAccount] (one line per process: pid, program, tokens and outcome),
// [KindStatusRequest] by [KindStatus]; a refused or malformed request is
// answered by [KindError], whose class survives the trip (see
// [Error.Err]).
//
// # Deadlines
//
// Every event carries a [Timeout], a duration, never a time of day: the
// admin client sends how long the daemon may wait, the daemon turns it
// into a deadline on its monotonic clock when it reads the request, and
// sends each process what is left of it; the agent turns that into a
// deadline on its own monotonic clock when it reads the frame and hands it
// to its handler as the context deadline. The daemon stops waiting for a
// process at its deadline and reports it as [TimedOut]; the agent's
// deadline is later by the time the frame took to arrive, so a reply
// made in that gap is dropped by the daemon as late (the operation files
// still tell the process what the event asked). A step of the wall
// clock (NTP, date -s) during a broadcast changes neither. Version 1 sent
// an absolute wall-clock deadline; version 2 replaced it.
package event
