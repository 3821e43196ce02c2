package store

import (
	"context"
	"slices"
	"testing"
)

const ckaReenc = 0x80000002 // CKA_IBM_OPAQUE_REENC

// summaryOf is a test summary: the current and the re-enciphered blob.
func summaryOf(attrs map[uint32][]byte) []byte {
	return []byte(string(attrs[ckaOpaque]) + "|" + string(attrs[ckaReenc]))
}

func census(t *testing.T, s *Store) map[uint64]CensusRow {
	t.Helper()
	out := map[uint64]CensusRow{}
	if err := s.Census(context.Background(), nil, func(r CensusRow) error { out[r.Handle] = r; return nil }); err != nil {
		t.Fatalf("Census: %v", err)
	}
	return out
}

// The summary follows the blobs through every kind of write, a partial
// Update that did not load the blobs keeps it, and a store without a
// summary function clears it rather than leave a stale one.
func TestCensusSummaryFollowsTheBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := testOptions(t)
	opts.Summary, opts.SummaryAttrs = summaryOf, []uint32{ckaOpaque, ckaReenc}
	s, dk := newTokenIn(t, dir, opts)
	priv := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaOpaque: []byte("cur"), ckaLabel: []byte("k")}}
	pub := &Object{Class: ckoSecret, Attrs: map[uint32][]byte{ckaOpaque: []byte("pub"), ckaLabel: []byte("p")}}
	for _, o := range []*Object{priv, pub} {
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
	}
	want := func(step string, h uint64, summary string) {
		t.Helper()
		if got := census(t, s)[h].Summary; string(got) != summary {
			t.Fatalf("%s: summary of %d = %q, want %q", step, h, got, summary)
		}
	}
	want("create", priv.Handle, "cur|")
	want("create public", pub.Handle, "pub|")

	// A pass reads the blobs only and adds REENC.
	objs, err := s.List(ctx, dk, Filter{Only: []uint32{ckaOpaque, ckaReenc}})
	if err != nil {
		t.Fatal(err)
	}
	objs[0].Attrs[ckaReenc] = []byte("new")
	if err := s.Update(ctx, dk, objs[0]); err != nil {
		t.Fatal(err)
	}
	want("partial update with the blobs", priv.Handle, "cur|new")

	// A partial read without the blobs cannot change them: kept.
	objs, err = s.List(ctx, dk, Filter{Only: []uint32{ckaLabel}})
	if err != nil {
		t.Fatal(err)
	}
	objs[0].Attrs[ckaLabel] = []byte("renamed")
	if err := s.Update(ctx, dk, objs[0]); err != nil {
		t.Fatal(err)
	}
	want("partial update without the blobs", priv.Handle, "cur|new")

	// A full update that drops REENC (a cancel).
	o, err := s.Get(ctx, dk, priv.Handle)
	if err != nil {
		t.Fatal(err)
	}
	delete(o.Attrs, ckaReenc)
	if err := s.Update(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	want("full update", priv.Handle, "cur|")

	// Another writer without a summary function: not recorded, and the
	// census falls back to what is readable without the data key.
	s.Close()
	plain, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	udk, err := plain.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []uint64{priv.Handle, pub.Handle} {
		o, err := plain.Get(ctx, udk, h)
		if err != nil {
			t.Fatal(err)
		}
		o.Attrs[ckaReenc] = []byte("x")
		if err := plain.Update(ctx, udk, o); err != nil {
			t.Fatal(err)
		}
	}
	rows := census(t, plain)
	if r := rows[priv.Handle]; r.Summary != nil || r.Clear != nil || !slices.Contains(r.Types, ckaReenc) || !slices.Contains(r.Types, ckaOpaque) {
		t.Fatalf("private object written without a summary: %+v", r)
	}
	if r := rows[pub.Handle]; r.Summary != nil || string(r.Clear[ckaOpaque]) != "pub" || string(r.Clear[ckaReenc]) != "x" {
		t.Fatalf("public object written without a summary: %+v", r)
	}
	// Census filters by class.
	n := 0
	if err := plain.Census(ctx, []uint{ckoCert}, func(CensusRow) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("census of certificates: %d rows, %v", n, err)
	}
}

// Objects written without a summary get one from RecordSummaries, with
// their version unchanged; private ones need the data key.
func TestRecordSummaries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, dk := newTokenIn(t, dir, testOptions(t))
	priv := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaOpaque: []byte("cur")}}
	pub := &Object{Class: ckoSecret, Attrs: map[uint32][]byte{ckaOpaque: []byte("pub"), ckaReenc: []byte("new")}}
	for _, o := range []*Object{priv, pub} {
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	opts := testOptions(t)
	opts.Summary, opts.SummaryAttrs = summaryOf, []uint32{ckaOpaque, ckaReenc}
	s2, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, err := s2.RecordSummaries(ctx, nil); err != nil || n != 1 {
		t.Fatalf("without the data key: %d recorded, %v; want the public one", n, err)
	}
	udk, err := s2.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s2.RecordSummaries(ctx, udk); err != nil || n != 1 {
		t.Fatalf("with the data key: %d recorded, %v; want the private one", n, err)
	}
	rows := census(t, s2)
	if string(rows[priv.Handle].Summary) != "cur|" || string(rows[pub.Handle].Summary) != "pub|new" {
		t.Fatalf("summaries %q %q", rows[priv.Handle].Summary, rows[pub.Handle].Summary)
	}
	if v, err := s2.Version(ctx, priv.Handle); err != nil || v != 1 {
		t.Fatalf("version after recording: %d %v", v, err)
	}
	if n, err := s2.RecordSummaries(ctx, udk); err != nil || n != 0 {
		t.Fatalf("second run: %d %v", n, err)
	}
}
