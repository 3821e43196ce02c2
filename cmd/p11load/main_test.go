package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// TestPINPromptOnTerminal (issue 19.1): on a terminal p11load asks for the
// USER PIN and does not echo it; the run then works with that PIN.
func TestPINPromptOnTerminal(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	r.Token(2, 0)
	report := filepath.Join(t.TempDir(), "report.json")
	term := r.Terminal("p11load", "-slots", "2", "-duration", "300ms", "-report", report)
	term.WaitFor("Enter the USER PIN: ")
	if term.EchoOn() {
		t.Error("the echo is on while the PIN is asked")
	}
	term.Type(testenv.UserPIN + "\r")
	code, shown := term.Wait()
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, shown)
	}
	if strings.Contains(shown, testenv.UserPIN) {
		t.Errorf("the PIN was echoed:\n%q", shown)
	}
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"failed": 0`) {
		t.Errorf("report %v:\n%s", err, b)
	}
}

// TestPINFromPipeNoPrompt: from a pipe the PIN is the first line, without a
// prompt on any output; a wrong PIN is an error naming the slot.
func TestPINFromPipeNoPrompt(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	r.Token(2, 0)
	res := r.Run("p11load", testenv.PIN(testenv.UserPIN), "-slots", "2", "-duration", "100ms")
	if res.Code != 0 || strings.Contains(res.Out(), "Enter") {
		t.Fatalf("exit %d:\n%s", res.Code, res.Out())
	}
	res = r.Run("p11load", testenv.PIN("00000000"), "-slots", "2", "-duration", "100ms")
	if res.Code != 1 || !strings.Contains(res.Stderr, "slot 2") {
		t.Fatalf("wrong PIN: exit %d:\n%s", res.Code, res.Out())
	}
	res = r.Run("p11load", "", "-slots", "2")
	if res.Code != 2 || !strings.Contains(res.Stderr, "hint:") {
		t.Fatalf("no PIN: exit %d:\n%s", res.Code, res.Out())
	}
}

// TestHelpNamesThePIN: p11load -h says where the PIN comes from.
func TestHelpNamesThePIN(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2))
	res := r.Run("p11load", "", "-h")
	for _, want := range []string{"USER PIN", "standard input", "terminal", "-slots", "p11load(1)"} {
		if !strings.Contains(res.Out(), want) {
			t.Errorf("p11load -h does not mention %q:\n%s", want, res.Out())
		}
	}
}
