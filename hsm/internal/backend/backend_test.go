package backend

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
)

func TestSteady(t *testing.T) {
	bus := apqn.Bus{Root: t.TempDir()}
	q := apqn.MustParse("01.0033")
	dir := bus.QueueDir(q)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(pattern string) {
		t.Helper()
		text := "AES NEW: empty 0x0000000000000000\nAES CUR: valid 0x" + pattern + "\nAES OLD: invalid 0x0000000000000000\n"
		if err := os.WriteFile(filepath.Join(dir, "mkvps"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	current := func(sys apqn.MKVPs) string {
		l, _ := sys.Lookup("AES", "CUR")
		return string(l.Pattern)
	}
	write("0101010101010101")
	// The officer changes the register while the library answers: the
	// first round is read again, not compared.
	reads, checks := 0, 0
	err := Steady(bus, q, func() error {
		reads++
		if reads == 1 {
			write("0202020202020202")
		}
		return nil
	}, func(sys apqn.MKVPs) error {
		checks++
		if current(sys) != "\x02\x02\x02\x02\x02\x02\x02\x02" {
			return errors.New("compared the view from before the change")
		}
		return nil
	})
	if err != nil || reads != 2 || checks != 1 {
		t.Fatalf("err %v after %d reads and %d checks, want nil after 2 and 1", err, reads, checks)
	}
	// A lasting disagreement is the check's error; a passing one is not.
	lasting := errors.New("the library says otherwise")
	reads = 0
	if err := Steady(bus, q, func() error { reads++; return nil }, func(apqn.MKVPs) error { return lasting }); err != lasting || reads != 20 {
		t.Fatalf("lasting disagreement: %v after %d reads", err, reads)
	}
	reads = 0
	if err := Steady(bus, q, func() error { reads++; return nil }, func(apqn.MKVPs) error {
		if reads < 3 {
			return lasting
		}
		return nil
	}); err != nil || reads != 3 {
		t.Fatalf("passing disagreement: %v after %d reads", err, reads)
	}
}
