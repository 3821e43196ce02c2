package clierr

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestExitCodes(t *testing.T) {
	seen := map[int]errclass.Class{}
	for _, c := range errclass.Classes() {
		code := ExitCode(errclass.New(c, "x"))
		if c == errclass.Unknown || c == errclass.Internal {
			if code != 1 {
				t.Errorf("%v → %d, want 1", c, code)
			}
			continue
		}
		if prev, dup := seen[code]; dup || code < 2 {
			t.Errorf("%v → %d (also %v)", c, code, prev)
		}
		seen[code] = c
	}
	if ExitCode(nil) != 0 || ExitCode(errors.New("plain")) != 1 {
		t.Error("nil or plain error")
	}
	if ExitCode(fmt.Errorf("ctx: %w", errclass.New(errclass.Conflict, "x"))) != 5 {
		t.Error("wrapped conflict")
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	Print(&b, "tool", errclass.Newh(errclass.InvalidArgument, "use 0a.0024", "invalid APQN %q", "x"))
	want := "tool: error: invalid APQN \"x\"\ntool: hint: use 0a.0024\n"
	if b.String() != want {
		t.Fatalf("got %q, want %q", b.String(), want)
	}
	b.Reset()
	Print(&b, "tool", nil)
	Warn(&b, "tool", "%d left", 3)
	if b.String() != "tool: warning: 3 left\n" {
		t.Fatalf("got %q", b.String())
	}
}
