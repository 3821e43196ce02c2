package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

const (
	soPIN   = testenv.SOPIN
	userPIN = testenv.UserPIN
)

// newRoot makes a temporary PKCSHSM_ROOT (internal/testenv: the simulated
// CCA and EP11 APQNs) with a CCA token in slot 0 and an EP11 token in slot
// 1, and points PKCSHSM_ROOT at it.
func newRoot(t *testing.T) paths.Layout {
	t.Helper()
	return testenv.NewRoot(t, testenv.Slot{ID: 0, Type: "cca", Label: "ccatok"}, testenv.Slot{ID: 1, Type: "ep11", Label: "ep11tok"}).Layout
}

// result is one in-process run of the command.
type result struct {
	code           int
	stdout, stderr string
}

// pkcshsm runs the command in process with stdin lines.
func pkcshsm(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb, nil)
	return result{code, out.String(), errb.String()}
}

// ok runs the command and fails the test unless it succeeds.
func ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := pkcshsm(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("pkcshsm %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

// setupTokens initializes both tokens and sets their USER PINs.
func setupTokens(t *testing.T) {
	t.Helper()
	for _, slot := range []string{"0", "1"} {
		ok(t, lines(soPIN, soPIN), "token", "init", "--slot", slot, "--label", "tok"+slot)
		ok(t, lines(soPIN, userPIN, userPIN), "pin", "set", "--slot", slot)
	}
}

// userStore opens the object store of the CCA token of slot 0 (closed at
// cleanup) and logs in as the user: the test reads what the commands
// stored.
func userStore(t *testing.T, layout paths.Layout) (*store.Store, *store.DataKey) {
	t.Helper()
	st, err := store.Open(layout.TokenDir("ccatok"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dk, err := st.Login(context.Background(), store.User, []byte(userPIN))
	if err != nil {
		t.Fatal(err)
	}
	return st, dk
}
