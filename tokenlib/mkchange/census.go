package mkchange

import (
	"context"
	"fmt"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// # Readiness from the keys themselves
//
// Whether the officer may activate a new master key is decided from the
// key objects, never from an operation file: [Token.Census] counts, for
// given new patterns, the keys that have no blob under them. The store
// keeps each object's master key summary ([Summarize]) next to it, written
// in the same statement as the blobs, so the census needs no PIN.

// summaryVersion is the first byte of a summary: 2 records the
// CKA_IBM_OPAQUE, _REENC and _OLD blobs; 1 (older releases) the first
// two.
const summaryVersion = 2

// Blob states in a summary.
const (
	blobAbsent     = 0
	blobReadable   = 1
	blobUnreadable = 2 // present, but hsm.Inspect refuses it
)

// SummaryAttrs are the attributes [Summarize] reads (store.Options.SummaryAttrs).
var SummaryAttrs = []uint32{attrOpaque, attrReenc, attrOld}

// BlobMK is what a summary says of one blob attribute.
type BlobMK struct {
	Present  bool
	Readable bool // false: present but not a blob hsm.Inspect accepts
	Type     mkvp.Type
	Pattern  mkvp.Pattern
}

// KeySummary is the master key summary of a key object: its current blob
// (CKA_IBM_OPAQUE), its blob under a new master key
// (CKA_IBM_OPAQUE_REENC) and the backup of its blob under the previous
// master key (CKA_IBM_OPAQUE_OLD, left by finalize). OldRecorded is false
// for a summary written by an older release, which did not record Old.
type KeySummary struct {
	Cur, Reenc, Old BlobMK
	OldRecorded     bool
}

// Summarize computes the master key summary of an object's attributes:
// for CKA_IBM_OPAQUE, CKA_IBM_OPAQUE_REENC and CKA_IBM_OPAQUE_OLD,
// absent, unreadable, or the master key type and pattern the blob
// carries. It is the store's
// Options.Summary.
func Summarize(attrs map[uint32][]byte) []byte {
	out := []byte{summaryVersion}
	for _, at := range SummaryAttrs {
		out = appendBlobMK(out, attrs[at])
	}
	return out
}

func appendBlobMK(out, blob []byte) []byte {
	if len(blob) == 0 {
		return append(out, blobAbsent)
	}
	info, err := hsm.Inspect(blob)
	if err != nil || info.Pattern.Len() > 255 {
		return append(out, blobUnreadable)
	}
	p := info.Pattern.Bytes()
	out = append(out, blobReadable, byte(info.MKType), byte(len(p)))
	return append(out, p...)
}

// ParseSummary decodes a summary written by [Summarize].
func ParseSummary(b []byte) (KeySummary, error) {
	bad := func(format string, args ...any) (KeySummary, error) {
		return KeySummary{}, errclass.New(errclass.DataLoss, "master key summary: "+format, args...)
	}
	if len(b) < 1 || (b[0] != 1 && b[0] != summaryVersion) {
		return bad("unknown version")
	}
	n := 2
	if b[0] == 2 {
		n = 3
	}
	b = b[1:]
	var out [3]BlobMK
	for i := range n {
		if len(b) < 1 {
			return bad("cut short")
		}
		state := b[0]
		b = b[1:]
		switch state {
		case blobAbsent:
		case blobUnreadable:
			out[i].Present = true
		case blobReadable:
			if len(b) < 2 || len(b) < 2+int(b[1]) {
				return bad("cut short")
			}
			t := mkvp.Type(b[0])
			if !t.Valid() || int(b[1]) != t.Size() {
				return bad("pattern of %d bytes for type %d", b[1], b[0])
			}
			p, err := mkvp.ForType(t, b[2:2+int(b[1])])
			if err != nil {
				return bad("%v", err)
			}
			out[i] = BlobMK{Present: true, Readable: true, Type: t, Pattern: p}
			b = b[2+int(b[1]):]
		default:
			return bad("unknown blob state %d", state)
		}
	}
	if len(b) != 0 {
		return bad("%d trailing bytes", len(b))
	}
	return KeySummary{Cur: out[0], Reenc: out[1], Old: out[2], OldRecorded: n == 3}, nil
}

// CensusResult is what activating new patterns would do to a token's keys.
type CensusResult struct {
	// Keys counts the key objects under a master key type being changed.
	Keys int
	// MissingNew counts those with no blob under the new pattern: they
	// are lost when the new master key becomes current and the old one
	// leaves the adapters.
	MissingNew int
	// Unrecorded counts, among MissingNew, keys whose summary was never
	// recorded (written by an older release) and that carry no REENC blob.
	Unrecorded int
	// Unreadable counts, among MissingNew, keys whose blob is not a secure
	// key this release can read.
	Unreadable int
	// Lost counts key objects (of any type the token uses) whose blobs
	// are all under master keys no APQN of the token has in any register:
	// no adapter can use them any more.
	Lost int
}

// Census counts, without a PIN, the token's key objects that have no blob
// under the patterns in newp (by master key type; types the token does not
// use are ignored). known reports whether a pattern of a type is in some
// register (CURRENT, NEW or OLD) of an APQN the token uses; nil skips the
// count of lost keys.
func (t Token) Census(ctx context.Context, st *store.Store, newp map[mkvp.Type]mkvp.Pattern, known func(mkvp.Type, mkvp.Pattern) bool) (CensusResult, error) {
	var r CensusResult
	uses := TypesFor(t.Type)
	err := st.Census(ctx, keyClasses, func(row store.CensusRow) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		var ks KeySummary
		switch {
		case row.Summary != nil:
			var err error
			if ks, err = ParseSummary(row.Summary); err != nil {
				return fmt.Errorf("slot %d: object %d: %w", t.Slot, row.Handle, err)
			}
		case row.Clear != nil:
			ks, _ = ParseSummary(Summarize(row.Clear))
		default:
			// Private, written before summaries: only the attribute types
			// are readable without the PIN.
			if !slices.Contains(row.Types, attrOpaque) {
				return nil
			}
			if len(newp) > 0 && !slices.Contains(row.Types, attrReenc) {
				r.Keys++
				r.MissingNew++
				r.Unrecorded++
			}
			return nil
		}
		if !ks.Cur.Present {
			return nil // no secure key: public keys of some kinds, data
		}
		if !ks.Cur.Readable {
			r.Keys++
			r.MissingNew++
			r.Unreadable++
			return nil
		}
		if known != nil && slices.Contains(uses, ks.Cur.Type) && !known(ks.Cur.Type, ks.Cur.Pattern) &&
			!(ks.Reenc.Readable && known(ks.Reenc.Type, ks.Reenc.Pattern)) {
			r.Lost++
		}
		want, changing := newp[ks.Cur.Type]
		if !changing || !slices.Contains(uses, ks.Cur.Type) {
			return nil
		}
		r.Keys++
		switch {
		case ks.Cur.Pattern == want:
		case ks.Reenc.Readable && ks.Reenc.Type == ks.Cur.Type && ks.Reenc.Pattern == want:
		default:
			r.MissingNew++
		}
		return nil
	})
	if err != nil {
		return CensusResult{}, err
	}
	return r, nil
}

// SessionCensus is [Token.Census] for one session key's blob attributes
// (the engine's session objects). It reports whether the key concerns
// newp, and whether it lacks a blob under the new pattern.
func (t Token) SessionCensus(attrs map[uint32][]byte, newp map[mkvp.Type]mkvp.Pattern) (concerned, missing bool) {
	if len(attrs[attrOpaque]) == 0 {
		return false, false
	}
	ks, _ := ParseSummary(Summarize(attrs))
	if !ks.Cur.Readable {
		return true, true
	}
	want, changing := newp[ks.Cur.Type]
	if !changing || !slices.Contains(TypesFor(t.Type), ks.Cur.Type) {
		return false, false
	}
	if ks.Cur.Pattern == want || (ks.Reenc.Readable && ks.Reenc.Type == ks.Cur.Type && ks.Reenc.Pattern == want) {
		return true, false
	}
	return true, true
}
