package store

import (
	"context"
	"testing"
)

// setFailpoint runs fn once at the named point.
func setFailpoint(t *testing.T, point string, fn func()) {
	done := false
	testFailpoint = func(name string) {
		if name == point && !done {
			done = true
			fn()
		}
	}
	t.Cleanup(func() { testFailpoint = nil })
}

// TestLoginRetriesWhenPINChangesMeanwhile: the SO sets a new USER PIN
// between our key derivation and our write transaction. The login with the
// new PIN must start over and succeed, and nothing may be counted.
func TestLoginRetriesWhenPINChangesMeanwhile(t *testing.T) {
	ctx := context.Background()
	s, _ := newToken(t)
	so, err := s.Login(ctx, SO, soPIN)
	if err != nil {
		t.Fatal(err)
	}
	newPIN := []byte("set-by-so-meanwhile")
	// A failure first, so that the login needs a write (reset) either way.
	s.Login(ctx, User, []byte("wrong-once"))
	setFailpoint(t, "pin-before-write", func() {
		if err := s.InitUserPIN(ctx, so, newPIN); err != nil {
			t.Error(err)
		}
	})
	if _, err := s.Login(ctx, User, newPIN); err != nil {
		t.Fatalf("login with the PIN set meanwhile: %v", err)
	}
	if ti, _ := s.Info(ctx); ti.UserFailures != 0 {
		t.Fatalf("failures = %d, want 0", ti.UserFailures)
	}
}

// TestConcurrentFirstInit: two InitTokens on a fresh token race; the loser
// finds the token initialized and is checked against the winner's SO PIN.
func TestConcurrentFirstInit(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		samePIN bool
	}{{"same SO PIN", true}, {"other SO PIN", false}} {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, t.TempDir())
			winnerPIN := []byte("winner-pin")
			loserPIN := winnerPIN
			if !tt.samePIN {
				loserPIN = []byte("loser-pin")
			}
			setFailpoint(t, "init-before-write", func() {
				testFailpoint = nil
				if err := s.InitToken(ctx, winnerPIN, "winner"); err != nil {
					t.Error(err)
				}
			})
			err := s.InitToken(ctx, loserPIN, "loser")
			ti, _ := s.Info(ctx)
			if tt.samePIN {
				if err != nil || ti.Label != "loser" {
					t.Fatalf("re-init with the winner's PIN: %v, label %q", err, ti.Label)
				}
				return
			}
			if err == nil || ti.Label != "winner" || ti.SOFailures != 1 {
				t.Fatalf("init with another PIN: err %v, label %q, SO failures %d; want refused, winner, 1", err, ti.Label, ti.SOFailures)
			}
		})
	}
}
