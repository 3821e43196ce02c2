package operator

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// reencipher runs a reencipher on the CCA APQNs to the new AES pattern and
// returns the operation's id.
func reencipher(t *testing.T, r *testenv.Root, aes string) string {
	t.Helper()
	res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	if res.Code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", res.Code, res.Out())
	}
	i := strings.Index(res.Stdout, "operation '")
	if i < 0 {
		t.Fatalf("no id:\n%s", res.Stdout)
	}
	return res.Stdout[i+len("operation '") : i+len("operation '")+6]
}

// TestListAfterOneAPQNIsSet (issue 19.5): once the officer has set the new
// master key on one APQN of a REENCIPHERED operation, list no longer
// offers cancel (which is then refused), only finalize, and says why.
func TestListAfterOneAPQNIsSet(t *testing.T) {
	t.Parallel()
	r, aes := cca(t, 5)
	id := reencipher(t, r, aes)
	if res := r.Run("pkcshsm_mk_change", "", "list"); !strings.Contains(res.Stdout, "cancel --id "+id) {
		t.Fatalf("before any APQN is set, list offers no cancel:\n%s", res.Out())
	}
	r.SetNew(mkvp.CCAAES, testenv.CCAAPQNs[0])
	res := r.Run("pkcshsm_mk_change", "", "list")
	if res.Code != 0 || strings.Contains(res.Stdout, "cancel --id") || !strings.Contains(res.Stdout, "set/activated on 01.0033: cancel is no longer") ||
		!strings.Contains(res.Stdout, "finalize --id "+id) {
		t.Errorf("list after 01.0033 was set: exit %d\n%s", res.Code, res.Out())
	}
	res = r.Run("pkcshsm_mk_change", "", "list", "--json")
	var ops []struct {
		Next []string `json:"next"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &ops); err != nil || len(ops) != 1 || strings.Join(ops[0].Next, ",") != "finalize" {
		t.Errorf("list --json next: %v %+v\n%s", err, ops, res.Stdout)
	}
	// What list no longer offers is indeed refused.
	if res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "cancel", "-i", id); res.Code == 0 {
		t.Errorf("cancel after a set: exit 0\n%s", res.Out())
	}
}
