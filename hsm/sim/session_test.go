package sim

import (
	"errors"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

func TestSessionLimitAndSharing(t *testing.T) {
	dir := t.TempDir()
	topo := testTopology()
	topo.MaxSessions = 2
	if err := Init(dir, topo); err != nil {
		t.Fatal(err)
	}
	a, b := openSim(t, dir), openSim(t, dir)
	q := ep11IDs[0]
	pin := []byte("12345678")
	pb1, err := a.Login(bg, q, pin, []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(bg, q, pin, []byte("two")); err != nil {
		t.Fatal(err)
	}
	// The other handle (as another process would) sees both sessions and
	// is refused a third.
	_, err = b.Login(bg, q, pin, []byte("three"))
	if !errors.Is(err, hsm.ErrSessionLimit) || !strings.Contains(err.Error(), q.String()) ||
		!strings.Contains(errclass.Hint(err), "ep11-session logout") {
		t.Fatalf("third login: %v (hint %q), want ErrSessionLimit naming %s with a hint", err, errclass.Hint(err), q)
	}
	// Logging in an existing session needs no room.
	if _, err := b.Login(bg, q, pin, []byte("one")); err != nil {
		t.Fatalf("re-login at the limit: %v", err)
	}
	list, st, err := b.SessionList(q)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || st != (hsm.SessionStatus{Max: 2, Used: 2}) || list[0].Field != [32]byte(pb1[:32]) {
		t.Fatalf("SessionList = %d sessions, %+v; want 2 of 2 with the first one's field", len(list), st)
	}
	// The other APQN has its own limit.
	if _, err := b.Login(bg, ep11IDs[1], pin, []byte("three")); err != nil {
		t.Fatal(err)
	}
	if err := b.Logout(bg, q, pb1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(bg, q, pin, []byte("three")); err != nil {
		t.Fatalf("login after a logout freed room: %v", err)
	}
	if err := a.Do(bg, func(tx *Tx) error { return tx.SetMaxSessions(ccaIDs[0], 5) }); !errors.Is(err, hsm.ErrWrongMode) {
		t.Fatalf("session limit on a CCA APQN: %v", err)
	}
	if err := a.Do(bg, func(tx *Tx) error { return tx.SetMaxSessions(q, MaxSessionLimit+1) }); errclass.Of(err) != errclass.InvalidArgument {
		t.Fatalf("limit out of range: %v", err)
	}
	if err := a.Do(bg, func(tx *Tx) error { return tx.SetMaxSessions(q, 3) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Login(bg, q, pin, []byte("four")); err != nil {
		t.Fatalf("login after raising the limit: %v", err)
	}
}

func TestSessionStateValidation(t *testing.T) {
	h, _ := newSim(t)
	if _, err := h.Login(bg, ep11IDs[0], []byte("12345678"), []byte("n")); err != nil {
		t.Fatal(err)
	}
	st, err := readState(h.dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, breakIt := range map[string]func(s *stateFile){
		"short secret":   func(s *stateFile) { s.queue(ep11IDs[0]).Sessions[0].Secret = []byte{1} },
		"duplicate":      func(s *stateFile) { q := s.queue(ep11IDs[0]); q.Sessions = append(q.Sessions, q.Sessions[0]) },
		"no pin blob":    func(s *stateFile) { s.queue(ep11IDs[0]).Sessions[0].Issued = nil },
		"short pin blob": func(s *stateFile) { s.queue(ep11IDs[0]).Sessions[0].Issued[0] = []byte{1, 2} },
		"on CCA":         func(s *stateFile) { s.queue(ccaIDs[0]).Sessions = s.queue(ep11IDs[0]).Sessions },
		"bad limit":      func(s *stateFile) { s.queue(ep11IDs[0]).MaxSessions = -1 },
	} {
		c := st.clone()
		breakIt(c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: state validates", name)
		}
	}
	if err := st.validate(); err != nil {
		t.Fatalf("the state itself: %v", err)
	}
}
