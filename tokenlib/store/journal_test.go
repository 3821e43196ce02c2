package store

import (
	"context"
	"errors"
	"testing"
)

// The journal moves with the pages of a pass, in their transaction: a
// batch that fails leaves it as it was.
func TestJournal(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	if _, ok, err := s.LastPass(ctx); ok || err != nil {
		t.Fatalf("journal of a new token: ok %v, %v", ok, err)
	}
	page := func(op, action string, fail bool) error {
		return s.Batch(ctx, dk, func(tx *Tx) error {
			if err := tx.Journal(op, action); err != nil {
				return err
			}
			if fail {
				return errors.New("the page failed")
			}
			return tx.Create(&Object{Class: ckoSecret, Attrs: map[uint32][]byte{ckaLabel: []byte("k")}})
		})
	}
	want := func(step string, j Journal) {
		t.Helper()
		got, ok, err := s.LastPass(ctx)
		if err != nil || !ok || got.Op != j.Op || got.Action != j.Action || got.Done != j.Done || got.Pages != j.Pages {
			t.Fatalf("%s: journal %+v ok %v %v, want %+v", step, got, ok, err, j)
		}
	}
	for range 2 {
		if err := page("Op0001", "reencipher", false); err != nil {
			t.Fatal(err)
		}
	}
	want("two pages", Journal{Op: "Op0001", Action: "reencipher", Pages: 2})
	if err := s.JournalDone(ctx, "Op0001", "reencipher"); err != nil {
		t.Fatal(err)
	}
	want("done", Journal{Op: "Op0001", Action: "reencipher", Pages: 2, Done: true})
	if err := page("Op0001", "cancel", true); err == nil {
		t.Fatal("the failing page committed")
	}
	want("a failed page", Journal{Op: "Op0001", Action: "reencipher", Pages: 2, Done: true})
	if err := page("Op0001", "cancel", false); err != nil {
		t.Fatal(err)
	}
	want("a cancel page", Journal{Op: "Op0001", Action: "cancel", Pages: 1})
}
