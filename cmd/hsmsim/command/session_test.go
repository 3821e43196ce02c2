package command

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
)

// TestShowSessionsAndLimit: show lists the EP11 sessions logged in (by
// another process, here another handle) with the field bound keys carry;
// --max-sessions sets the limit at init and with fault.
func TestShowSessionsAndLimit(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033", "--ep11", "06.0033,0e.0033", "--max-sessions", "3")
	h, err := sim.Open(dir, sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pb, err := h.Login(context.Background(), apqn.MustParse("0e.0033"), []byte("12345678"), []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	field := hex.EncodeToString(pb[:8])
	out := mustRun(t, dir, "show")
	if !strings.Contains(out, "06.0033   0 of 3") || !strings.Contains(out, "0E.0033   1 of 3") || !strings.Contains(out, field) {
		t.Fatalf("show lacks the session %s or the limits:\n%s", field, out)
	}
	var qs []showQueue
	if err := json.Unmarshal([]byte(mustRun(t, dir, "show", "--json")), &qs); err != nil {
		t.Fatal(err)
	}
	if len(qs) != 3 || qs[0].MaxSessions != nil || *qs[2].MaxSessions != 3 || len(qs[2].Sessions) != 1 || qs[2].Sessions[0].Field != field {
		t.Fatalf("show --json: %+v", qs)
	}
	mustRun(t, dir, "fault", "0e.0033", "--max-sessions", "1")
	if _, err := h.Login(context.Background(), apqn.MustParse("0e.0033"), []byte("12345678"), []byte("other")); err == nil ||
		!strings.Contains(err.Error(), "holds 1 EP11 sessions") {
		t.Fatalf("login beyond the lowered limit: %v", err)
	}
	for _, args := range [][]string{
		{"fault", "01.0033", "--max-sessions", "2"},
		{"fault", "06.0033", "--max-sessions", "5000"},
		{"init", "--force", "--ep11", "06.0033", "--max-sessions", "-1"},
	} {
		if r := run(t, dir, args...); r.code == 0 || !strings.Contains(r.stderr, "hint:") {
			t.Errorf("hsmsim %v: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	// The refused changes left the limit and the session alone.
	if out := mustRun(t, dir, "show"); !strings.Contains(out, "0E.0033   1 of 1") {
		t.Fatalf("after refused changes:\n%s", out)
	}
}
