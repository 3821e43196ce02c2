package pinentry

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestPIN(t *testing.T) {
	var out bytes.Buffer
	r := New(strings.NewReader("\n1234\r\n"), &out)
	if r.Interactive() {
		t.Fatal("a string reader is not a terminal")
	}
	pin, err := r.PIN("Enter the USER PIN for slot 4: ")
	if err != nil || string(pin) != "1234" {
		t.Fatalf("PIN = %q, %v", pin, err)
	}
	if got := out.String(); got != "Enter the USER PIN for slot 4: Empty pin entered, try again.\nEnter the USER PIN for slot 4: " {
		t.Fatalf("prompts = %q", got)
	}
	if strings.Contains(out.String(), "1234") {
		t.Fatal("PIN echoed")
	}
	if _, err := r.PIN("again: "); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("EOF: %v", err)
	}
	if _, err := New(strings.NewReader("\n\n\n"), &out).PIN("p: "); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("three empty PINs: %v", err)
	}
	// The last line need not end in a newline.
	if pin, err := New(strings.NewReader("99"), &out).PIN("p: "); err != nil || string(pin) != "99" {
		t.Fatalf("unterminated line: %q %v", pin, err)
	}
}

func TestConfirm(t *testing.T) {
	cases := map[string]bool{"y\n": true, "yes\n": true, "Y\n": true, "n\n": false, "\n": false, "sure\n": false}
	for in, want := range cases {
		got, err := New(strings.NewReader(in), &bytes.Buffer{}).Confirm("Continue [y/N]? ")
		if err != nil || got != want {
			t.Errorf("Confirm(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := New(strings.NewReader(""), &bytes.Buffer{}).Confirm("?"); errclass.Of(err) != errclass.Aborted {
		t.Fatalf("EOF: %v", err)
	}
}
