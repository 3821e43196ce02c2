package state

import "testing"

func TestActionEventTypes(t *testing.T) {
	for _, a := range []Action{ActReencipher, ActFinalize, ActCancel} {
		got, err := ParseEventType(a.EventType())
		if err != nil || got != a {
			t.Errorf("%v: %v %v", a, got, err)
		}
	}
	if _, err := ParseEventType("mkchange.bogus"); err == nil {
		t.Error("unknown type accepted")
	}
	if Action(9).String() != "action(9)" || ActFinalize.EventType() != "mkchange.finalize" {
		t.Error("names")
	}
}
