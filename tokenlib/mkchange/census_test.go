package mkchange

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// summarized reopens the fixture's token with the summary the engine
// uses, so that the census reads patterns without the data key.
func summarized(t *testing.T, f *fixture) {
	t.Helper()
	dir := filepath.Dir(f.st.Path())
	f.st.Close()
	cheap := store.KDF{Algorithm: store.KDFArgon2id, Time: 1, MemoryKiB: 64, Threads: 1}
	st, err := store.Open(dir, store.Options{KDF: cheap, Logger: zerolog.Nop(), Summary: Summarize, SummaryAttrs: SummaryAttrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dk, err := st.Login(f.ctx, store.User, []byte("12345678"))
	if err != nil {
		t.Fatal(err)
	}
	f.st, f.dk = st, dk
}

// The census counts, without a data key, the keys of the changing types
// that have no blob under the new pattern — before the pass, after it,
// after a cancel — and leaves other types alone.
func TestCensusFromTheKeys(t *testing.T) {
	f := newFixture(t)
	// A key of an older release: no summary recorded, private, and under
	// a type this change leaves alone (SYM). Until the reencipher pass
	// records its summary it counts as missing.
	f.key(cca1, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, "old des", true)
	summarized(t, f)
	for i := range 3 {
		f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, "aes", i != 0)
	}
	f.key(cca1, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, "des", true) // SYM: not changing
	d := &store.Object{Class: uint(ck.CKO_DATA), Attrs: map[uint32][]byte{uint32(ck.CKA_VALUE): []byte("x")}}
	if err := f.st.Create(f.ctx, f.dk, d); err != nil {
		t.Fatal(err)
	}
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Cens01", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	tok := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}}
	check := func(step string, keys, missing int) {
		t.Helper()
		r, err := tok.Census(f.ctx, f.st, op.New, nil)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if r.Keys != keys || r.MissingNew != missing || r.Lost != 0 {
			t.Fatalf("%s: census %+v, want %d keys, %d missing", step, r, keys, missing)
		}
	}
	check("before the pass", 4, 4)
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil {
		t.Fatal(err)
	}
	check("after the reencipher pass", 3, 0)
	// A pattern nobody re-enciphered to: every key misses it.
	other := map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: mustPattern(mkvp.CCAAES, "0102030405060708")}
	if r, err := tok.Census(f.ctx, f.st, other, nil); err != nil || r.MissingNew != 3 {
		t.Fatalf("census for another pattern: %+v, %v", r, err)
	}
	// No register holds the keys' patterns any more: all lost.
	r, err := tok.Census(f.ctx, f.st, op.New, func(mkvp.Type, mkvp.Pattern) bool { return false })
	if err != nil || r.Lost != 5 {
		t.Fatalf("census with no known pattern: %+v, %v; want 5 lost (AES and DES)", r, err)
	}
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActCancel, nil); err != nil {
		t.Fatal(err)
	}
	check("after the cancel pass", 3, 3)
}

func TestSummaryRoundTrip(t *testing.T) {
	f := newFixture(t)
	o := f.key(ep1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, "k", true)
	info, err := hsm.Inspect(o.Attrs[attrOpaque])
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ParseSummary(Summarize(map[uint32][]byte{attrOpaque: o.Attrs[attrOpaque], attrReenc: []byte("junk")}))
	if err != nil {
		t.Fatal(err)
	}
	if !ks.Cur.Readable || ks.Cur.Type != info.MKType || ks.Cur.Pattern != info.Pattern || !ks.Reenc.Present || ks.Reenc.Readable {
		t.Fatalf("summary %+v of a key under %s %s with an unreadable REENC", ks, info.MKType, info.Pattern)
	}
	if ks, err := ParseSummary(Summarize(nil)); err != nil || ks.Cur.Present || ks.Reenc.Present || ks.Old.Present || !ks.OldRecorded {
		t.Fatalf("summary of no blobs: %+v, %v", ks, err)
	}
}

// FuzzParseSummary: a summary read from a token store is untrusted bytes.
func FuzzParseSummary(f *testing.F) {
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{1, 2, 1, 4, 8, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{1, 1, 1, 16, 1, 2, 3})
	f.Add([]byte{2})
	f.Add([]byte{2, 0, 0, 0})
	f.Add([]byte{2, 1, 1, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 2})
	f.Add([]byte{3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := ParseSummary(b)
		if err != nil {
			return
		}
		// What parses re-encodes to itself (for readable blobs).
		out := []byte{1}
		blobs := []BlobMK{ks.Cur, ks.Reenc}
		if ks.OldRecorded {
			out[0] = summaryVersion
			blobs = append(blobs, ks.Old)
		}
		for _, m := range blobs {
			switch {
			case !m.Present:
				out = append(out, blobAbsent)
			case !m.Readable:
				out = append(out, blobUnreadable)
			default:
				p := m.Pattern.Bytes()
				out = append(append(out, blobReadable, byte(m.Type), byte(len(p))), p...)
			}
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("ParseSummary(%x) = %+v, re-encodes to %x", b, ks, out)
		}
	})
}

// TestSummaryRecordsOld: the blob table's master key summary, read
// without the PIN, carries the pattern of each of the three blobs as the
// passes leave them: after reencipher CKA_IBM_OPAQUE under the current
// key and _REENC under the new one; after finalize CKA_IBM_OPAQUE under
// the new key and _OLD, the backup, under the previous one. A summary of
// an older release (version 1, no OLD) still parses, Old not recorded.
func TestSummaryRecordsOld(t *testing.T) {
	f := newFixture(t)
	summarized(t, f)
	k := f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, "aes", true)
	info, err := hsm.Inspect(k.Attrs[attrOpaque])
	if err != nil {
		t.Fatal(err)
	}
	oldAES := info.Pattern
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Summ01", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	tok := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}}
	summary := func() KeySummary {
		t.Helper()
		var got []KeySummary
		err := f.st.Census(f.ctx, keyClasses, func(row store.CensusRow) error {
			ks, err := ParseSummary(row.Summary)
			got = append(got, ks)
			return err
		})
		if err != nil || len(got) != 1 || !got[0].OldRecorded {
			t.Fatalf("census: %+v, %v", got, err)
		}
		return got[0]
	}
	is := func(m BlobMK, p mkvp.Pattern) bool { return m.Readable && m.Type == mkvp.CCAAES && m.Pattern == p }
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil {
		t.Fatal(err)
	}
	if ks := summary(); !is(ks.Cur, oldAES) || !is(ks.Reenc, newAES) || ks.Old.Present {
		t.Fatalf("after reencipher: %+v; want CUR %s, REENC %s, no OLD", ks, oldAES, newAES)
	}
	f.set(mkvp.CCAAES, cca1, cca2)
	if _, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, nil); err != nil {
		t.Fatal(err)
	}
	if ks := summary(); !is(ks.Cur, newAES) || ks.Reenc.Present || !is(ks.Old, oldAES) {
		t.Fatalf("after finalize: %+v; want CUR %s, no REENC, OLD %s", ks, newAES, oldAES)
	}
	v1 := append([]byte{1, blobReadable, byte(mkvp.CCAAES), byte(len(oldAES.Bytes()))}, oldAES.Bytes()...)
	if ks, err := ParseSummary(append(v1, blobAbsent)); err != nil || ks.OldRecorded || !is(ks.Cur, oldAES) {
		t.Fatalf("version 1 summary: %+v, %v", ks, err)
	}
}
