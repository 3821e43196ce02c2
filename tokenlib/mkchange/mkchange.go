// Package mkchange is the token side of a concurrent master key change:
// which tokens an operation affects, the checks against the adapters
// before each step, and what each step does to a key object.
//
// # Key objects
//
// A key object holds its secure key in CKA_IBM_OPAQUE. During a change it
// also holds CKA_IBM_OPAQUE_REENC, the same key under the new master key;
// finalize moves CKA_IBM_OPAQUE to CKA_IBM_OPAQUE_OLD and the REENC blob to
// CKA_IBM_OPAQUE; cancel drops the REENC blob. Each transform is idempotent
// and decides by the patterns the blobs carry (hsm.Inspect), never by
// remembered progress, so a pass interrupted at any point is simply run
// again. The transforms work on attribute maps, so the token-object pass
// here and the engine's session-object pass share them.
//
// A CCA token is affected by the SYM, AES and APKA master keys (never by
// ASYM alone), and only its keys under a changing type are touched. An EP11
// token is affected by the wrapping key, and all its keys are touched.
//
// # The token-object pass
//
// [Token.Pass] runs one step over every key object of a token's store:
// page by page ([BatchSize] objects by handle), each page committed in one
// durable transaction, with the next page read and transformed on a second
// goroutine while the previous one commits. Applications keep using the
// token meanwhile: the store never blocks their reads, and an object they
// change during the pass is simply read again and transformed anew. On the
// simulator a pass handles some 60,000–90,000 objects per second on two
// cores; measure it with
//
//	go test -run '^$' -bench 'BenchmarkPass$' -benchtime=1x ./tokenlib/mkchange/
package mkchange

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
)

// Token is what the master key change needs to know about one token.
type Token struct {
	Slot uint
	Type config.TokenType
	// APQNs are the APQNs the token uses: its allowlist, or for APQN_ANY
	// every APQN of its mode the backend has.
	APQNs []apqn.ID
	// APQNAny is set for EP11 tokens configured with APQN_ANY: they are
	// affected by every EP11 change, whatever its APQNs.
	APQNAny bool
	// Expected are the expected current patterns the token runs with
	// (configured, or learned from the adapters at start).
	Expected map[mkvp.Type]mkvp.Pattern
	// Configured re-reads the EXPECTED_MKVPS / EXPECTED_WKVP of the
	// token's configuration file; finalize and cancel check that the
	// operator updated (or kept) them. It returns the file name too.
	Configured func() (map[mkvp.Type]mkvp.Pattern, string, error)
}

// TypesFor lists the master key types a token of type t uses.
func TypesFor(t config.TokenType) []mkvp.Type {
	if t == config.TypeEP11 {
		return []mkvp.Type{mkvp.EP11WK}
	}
	return []mkvp.Type{mkvp.CCASYM, mkvp.CCAAES, mkvp.CCAAPKA}
}

// Types returns the operation's types the token uses.
func (t Token) Types(op *state.Op) []mkvp.Type {
	var out []mkvp.Type
	for _, typ := range TypesFor(t.Type) {
		if _, ok := op.New[typ]; ok {
			out = append(out, typ)
		}
	}
	return out
}

// Affected reports whether op concerns the token: it changes a master key
// type the token uses on an APQN the token uses.
func (t Token) Affected(op *state.Op) bool {
	if len(t.Types(op)) == 0 {
		return false
	}
	if t.Type == config.TypeEP11 && t.APQNAny {
		return true
	}
	for _, q := range t.APQNs {
		if op.APQNs.Contains(q) {
			return true
		}
	}
	return false
}

// Query checks, before action a, that the token and its adapters are ready
// for it. It returns the token's current patterns for the operation's types
// (what cancel must find again). It changes nothing.
//
//   - reencipher: every APQN of the token is in the operation, online, with
//     CURRENT valid and as the token expects it, and NEW full (CCA) or
//     committed (EP11) holding exactly the operation's new pattern;
//   - finalize: every APQN has the new key as CURRENT and (CCA) an empty
//     NEW register, and a configured expected pattern names the new key;
//   - cancel: no APQN has activated the new key: CURRENT is still the
//     recorded one, and a configured expected pattern names it.
func (t Token) Query(ctx context.Context, be hsm.Backend, op *state.Op, a state.Action, recorded map[mkvp.Type]mkvp.Pattern) (map[mkvp.Type]mkvp.Pattern, error) {
	types := t.Types(op)
	if len(types) == 0 {
		return nil, errclass.New(errclass.FailedPrecondition, "slot %d: not affected by operation %s", t.Slot, op.ID)
	}
	fail := func(class errclass.Class, hint, format string, args ...any) error {
		return errclass.Newh(class, hint, "slot %d: "+format, append([]any{t.Slot}, args...)...)
	}
	if len(t.APQNs) == 0 {
		return nil, fail(errclass.FailedPrecondition, "check the token's APQN configuration and that the adapters are online",
			"the token uses no APQN")
	}
	current := map[mkvp.Type]mkvp.Pattern{}
	for _, q := range t.APQNs {
		if !op.APQNs.Contains(q) {
			return nil, fail(errclass.FailedPrecondition,
				"add every APQN the token uses to --apqns, or remove the APQN from the token's configuration",
				"APQN %s must be included in this operation", q)
		}
		info, err := be.Queue(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("slot %d: failed to query APQN %s: %w", t.Slot, q, err)
		}
		if !info.Online {
			return nil, fail(errclass.Unavailable, "bring the APQN online (or remove it from the token's configuration) and try again",
				"APQN %s is offline", q)
		}
		for _, typ := range types {
			regs, ok := info.MK[typ]
			if !ok {
				return nil, fail(errclass.FailedPrecondition, "", "APQN %s has no %s master key registers", q, typ)
			}
			cur := regs.Current
			if cur.State != apqn.StateValid {
				return nil, fail(errclass.FailedPrecondition, "", "no CURRENT %s master key is set on APQN %s", typ, q)
			}
			switch a {
			case state.ActReencipher:
				want := t.Expected[typ]
				if prev, ok := current[typ]; ok && want.IsZero() {
					want = prev // all APQNs must agree
				}
				if !want.IsZero() && cur.Pattern != want {
					return nil, fail(errclass.FailedPrecondition, "all APQNs of a token must have the same master key",
						"the CURRENT %s master key on APQN %s (%s) does not match the expected one (%s)", typ, q, cur.Pattern, want)
				}
				ready := apqn.StateFull
				if typ == mkvp.EP11WK {
					ready = apqn.StateCommitted
				}
				if regs.New.State != ready {
					return nil, fail(errclass.FailedPrecondition,
						"the security officer must load (and, for EP11, commit) the new master key on every APQN first",
						"no NEW %s master key is %s on APQN %s (NEW is %s)", typ, map[bool]string{true: "committed", false: "loaded"}[typ == mkvp.EP11WK], q, regs.New.State)
				}
				if regs.New.Pattern != op.New[typ] {
					return nil, fail(errclass.FailedPrecondition, "compare the pattern with the mkvps file of the APQN or the TKE",
						"the NEW %s master key on APQN %s (%s) does not match the specified pattern %s", typ, q, regs.New.Pattern, op.New[typ])
				}
				current[typ] = cur.Pattern
			case state.ActFinalize:
				if cur.Pattern != op.New[typ] {
					return nil, fail(errclass.FailedPrecondition,
						"finalize after the security officer has set the new master key on every APQN of the operation",
						"the CURRENT %s master key on APQN %s (%s) is not the operation's new one (%s)", typ, q, cur.Pattern, op.New[typ])
				}
				if typ != mkvp.EP11WK && regs.New.State != apqn.StateEmpty {
					return nil, fail(errclass.FailedPrecondition, "finalize after the new master key has been set",
						"the NEW %s master key register must be empty on APQN %s (it is %s)", typ, q, regs.New.State)
				}
				current[typ] = cur.Pattern
			case state.ActCancel:
				old := recorded[typ]
				if old.IsZero() {
					old = t.Expected[typ]
				}
				if cur.Pattern == op.New[typ] || (!old.IsZero() && cur.Pattern != old) {
					return nil, fail(errclass.FailedPrecondition,
						"an APQN already activated the new master key: the change can only be completed, run finalize once every APQN has it",
						"the CURRENT %s master key on APQN %s (%s) is no longer the one the operation started from", typ, q, cur.Pattern)
				}
				current[typ] = cur.Pattern
			default:
				return nil, errclass.New(errclass.InvalidArgument, "unknown action %v", a)
			}
		}
	}
	if a != state.ActReencipher && t.Configured != nil {
		conf, file, err := t.Configured()
		if err != nil {
			return nil, fmt.Errorf("slot %d: failed to re-read the token configuration: %w", t.Slot, err)
		}
		for _, typ := range types {
			want := current[typ]
			if p, ok := conf[typ]; ok && p != want {
				what := map[state.Action]string{state.ActFinalize: "new", state.ActCancel: "current"}[a]
				return nil, fail(errclass.FailedPrecondition,
					fmt.Sprintf("edit %s: set the expected %s pattern to %s", file, typ, want),
					"the expected %s pattern in %s (%s) does not specify the %s master key (%s)", typ, file, p, what, want)
			}
		}
	}
	return current, nil
}

// blobAttrs are the attributes that hold secure keys.
var (
	attrOpaque = uint32(ck.CKA_IBM_OPAQUE)
	attrReenc  = uint32(ck.CKA_IBM_OPAQUE_REENC)
	attrOld    = uint32(ck.CKA_IBM_OPAQUE_OLD)
)

// concerns reports whether the key in attrs is under a master key type the
// operation changes, and returns its type.
func concerns(attrs map[uint32][]byte, op *state.Op) (hsm.BlobInfo, bool, error) {
	blob, ok := attrs[attrOpaque]
	if !ok || len(blob) == 0 {
		return hsm.BlobInfo{}, false, nil // public keys and data objects
	}
	info, err := hsm.Inspect(blob)
	if err != nil {
		return hsm.BlobInfo{}, false, err
	}
	_, changing := op.New[info.MKType]
	return info, changing, nil
}

// Reencipher adds CKA_IBM_OPAQUE_REENC to a key object: its key under the
// new master key, made on APQN q. It reports whether attrs changed.
func Reencipher(ctx context.Context, be hsm.Backend, q apqn.ID, attrs map[uint32][]byte, op *state.Op) (bool, error) {
	info, changing, err := concerns(attrs, op)
	if err != nil || !changing {
		return false, err
	}
	want := op.New[info.MKType]
	if r, ok := attrs[attrReenc]; ok {
		if ri, err := hsm.Inspect(r); err == nil && ri.Pattern == want {
			return false, nil // done before
		}
	}
	var out []byte
	if info.Pattern == want {
		out = bytes.Clone(attrs[attrOpaque]) // made under the new key already
	} else {
		out, err = be.Reencipher(ctx, q, attrs[attrOpaque], hsm.ToNew)
		if err != nil {
			return false, fmt.Errorf("failed to re-encipher on APQN %s: %w", q, err)
		}
		ri, err := hsm.Inspect(out)
		if err != nil {
			return false, err
		}
		if ri.Pattern != want {
			return false, errclass.New(errclass.FailedPrecondition,
				"re-enciphered key carries %s pattern %s, not the new %s", info.MKType, ri.Pattern, want)
		}
	}
	attrs[attrReenc] = out
	return true, nil
}

// ErrNoReenc is returned by Finalize for a key under the old master key
// without a re-enciphered blob: finalizing it would leave a key no APQN can
// use any more.
var ErrNoReenc = errclass.New(errclass.FailedPrecondition, "key has no blob under the new master key")

// Finalize makes the REENC blob current and keeps the previous blob in
// CKA_IBM_OPAQUE_OLD. A key already under the new master key only loses
// its REENC blob. It reports whether attrs changed.
func Finalize(attrs map[uint32][]byte, op *state.Op) (bool, error) {
	info, changing, err := concerns(attrs, op)
	if err != nil || !changing {
		return false, err
	}
	want := op.New[info.MKType]
	reenc, has := attrs[attrReenc]
	switch {
	case info.Pattern == want:
		if !has {
			return false, nil // finalized before, or made under the new key
		}
		delete(attrs, attrReenc)
		return true, nil
	case !has:
		return false, ErrNoReenc
	}
	ri, err := hsm.Inspect(reenc)
	if err != nil {
		return false, err
	}
	if ri.Pattern != want {
		return false, errclass.New(errclass.FailedPrecondition,
			"the key's re-enciphered blob carries pattern %s, not the new %s", ri.Pattern, want)
	}
	attrs[attrOld] = attrs[attrOpaque]
	attrs[attrOpaque] = reenc
	delete(attrs, attrReenc)
	return true, nil
}

// Cancel drops the REENC blob. CKA_IBM_OPAQUE_OLD, the backup from an
// earlier finalize, is kept. It reports whether attrs changed.
func Cancel(attrs map[uint32][]byte, op *state.Op) (bool, error) {
	if _, has := attrs[attrReenc]; !has {
		return false, nil
	}
	info, changing, err := concerns(attrs, op)
	if err != nil {
		return false, err
	}
	if !changing {
		return false, nil // another operation's REENC blob
	}
	if info.Pattern == op.New[info.MKType] {
		return false, errclass.New(errclass.FailedPrecondition,
			"the key is already current under the new %s master key; the change cannot be canceled", info.MKType)
	}
	delete(attrs, attrReenc)
	return true, nil
}

// APQNsFor returns the token's APQNs that take part in the operation, for
// re-enciphering; their order is the token's.
func (t Token) APQNsFor(op *state.Op) []apqn.ID {
	var out []apqn.ID
	for _, q := range t.APQNs {
		if op.APQNs.Contains(q) && !slices.Contains(out, q) {
			out = append(out, q)
		}
	}
	return out
}
