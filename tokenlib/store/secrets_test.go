package store

import (
	"bytes"
	"context"
	"os"
	"testing"
)

// TestNoSecretsOnDisk writes known PINs and private attribute values with
// marker bytes, then searches every database file (db, -wal, -shm) for
// them, while the store is open and after it is closed. A public value
// with its own marker is the positive control: the search must find it.
func TestNoSecretsOnDisk(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	so := []byte("SOPIN-marker-31337")
	user := []byte("USERPIN-marker-4242")
	user2 := []byte("NEWPIN-marker-9090")
	secret := []byte("SECRET-MARKER-7f3a9c")
	public := []byte("PUBLIC-MARKER-c0ffee")

	s, err := Open(dir, testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.InitToken(ctx, so, "secrets"); err != nil {
		t.Fatal(err)
	}
	sok, err := s.Login(ctx, 0, so)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InitUserPIN(ctx, sok, user); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPIN(ctx, User, user, user2); err != nil {
		t.Fatal(err)
	}
	dk, err := s.Login(ctx, User, user2)
	if err != nil {
		t.Fatal(err)
	}
	s.Login(ctx, User, []byte("WRONGPIN-marker-1111"))
	for i := range 50 {
		o := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{
			ckaLabel:  append([]byte("label-"), secret...),
			ckaValue:  secret,
			ckaOpaque: bytes.Repeat(secret, 1+i%3),
		}}
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		o.Attrs[ckaID] = secret
		if err := s.Update(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Create(ctx, nil, &Object{Class: ckoCert, Attrs: map[uint32][]byte{ckaValue: public}}); err != nil {
		t.Fatal(err)
	}
	markers := map[string][]byte{"SO PIN": so, "USER PIN": user, "new USER PIN": user2, "wrong PIN": []byte("WRONGPIN-marker-1111"), "private value": secret}

	search := func(when string) {
		t.Helper()
		foundPublic := false
		for _, name := range []string{s.Path(), s.Path() + "-wal", s.Path() + "-shm"} {
			b, err := os.ReadFile(name)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			for what, m := range markers {
				if bytes.Contains(b, m) {
					t.Errorf("%s: %s found in %s", when, what, name)
				}
			}
			foundPublic = foundPublic || bytes.Contains(b, public)
		}
		if !foundPublic {
			t.Errorf("%s: the public control value was not found; the search is broken", when)
		}
	}
	if _, err := os.Stat(s.Path() + "-wal"); err != nil {
		t.Fatalf("expected a WAL file while open: %v", err)
	}
	search("while open")
	s.Close()
	search("after close")
}
