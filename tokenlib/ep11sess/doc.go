// Package ep11sess implements the EP11 session modes of an EP11 token:
// STRICT_MODE and VHSM_MODE (openCryptoki's ep11_session.c), and what the
// session tool (`pkcshsm ep11-session`) does with the sessions they leave.
//
// An EP11 session is state on the adapters (see hsm.Sessions), logged in
// with a PIN and a nonce on every APQN of the token. Keys made while the
// token passes a session's pin blob are bound to it: the adapter accepts
// them only while that session is logged in, and the token accepts them
// only from the PKCS#11 session (STRICT_MODE) or the token (VHSM_MODE)
// that made them.
//
// Which key is bound to what (the seed's table):
//
//	STRICT  VHSM   private session objects        private token objects
//	off     off    not bound                      not bound
//	on      off    the PKCS#11 session             not bound
//	off     on     the token (card PIN)           the token (card PIN)
//	on      on     the PKCS#11 session and card PIN the token (card PIN)
//
// Public objects, and everything in public and SO sessions, are never
// bound.
//
// # Sessions and hidden objects
//
// For every PKCS#11 user session (R/O or R/W) the Manager logs in on all
// of the token's APQNs and stores a hidden private token object
// (CKO_HW_FEATURE, CKH_IBM_EP11_SESSION) holding the session's [Record]:
// public id, pid, creation time, APQNs and pin blobs. The object is sealed
// like every private attribute and outlives a crash, so `pkcshsm
// ep11-session logout` can log out what a killed program left behind. At
// session end the session is logged out on every APQN and the object
// removed.
//
// STRICT_MODE logs in a session of its own per PKCS#11 session: PIN eight
// blanks (the card PIN with VHSM_MODE), nonce a fresh 32-byte session id.
// VHSM_MODE logs in one session per slot, shared by every process: PIN the
// card PIN (CKH_IBM_EP11_VHSMPIN object, 8 to 16 characters, set with
// `pkcshsm ep11-session vhsmpin`), nonce the slot number and
// "VHSM-session". It is logged out when the last record that uses it goes.
// Session starts and ends of all processes on a token are serialised by an
// flock on ep11-sessions.lock in the token directory, so that count is
// exact.
//
// The pin blobs that APQNs with the same wrapping key return must be
// equal; a mismatch is logged and refused (CKR_DEVICE_ERROR). An APQN that
// comes online after the session started is logged in at its first use.
package ep11sess
