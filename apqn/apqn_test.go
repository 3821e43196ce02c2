package apqn

import (
	"errors"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		want ID
		list string
		sys  string
	}{
		{"0a.0024", ID{0x0a, 0x24}, "0A.0024", "0a.0024"},
		{"a.24", ID{0x0a, 0x24}, "0A.0024", "0a.0024"},
		{"FF.FFFF", ID{0xff, 0xffff}, "FF.FFFF", "ff.ffff"},
		{"0.0", ID{}, "00.0000", "00.0000"},
		{"1c.0033", ID{0x1c, 0x33}, "1C.0033", "1c.0033"},
	}
	for _, tt := range good {
		got, err := Parse(tt.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.in, err)
		}
		if got != tt.want || got.String() != tt.list || got.SysfsName() != tt.sys {
			t.Errorf("Parse(%q) = %v (%s, %s), want %v (%s, %s)", tt.in, got, got.String(), got.SysfsName(), tt.want, tt.list, tt.sys)
		}
	}
	bad := []struct{ in, msg string }{
		{"", "want card.domain"},
		{"0a", "want card.domain"},
		{".0024", "want card.domain"},
		{"0a.", "want card.domain"},
		{"100.0001", "longer than 2 hex digits"},
		{"0a.10000", "longer than 4 hex digits"},
		{"0g.0001", "not hexadecimal"},
		{"0a.00x1", "not hexadecimal"},
		{"-1.0001", "not hexadecimal"},
		{"0a.0024.1", "not hexadecimal"},
		{" 0a.0024", "not hexadecimal"},
		{"0x0a.0024", "not hexadecimal"},
	}
	for _, tt := range bad {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", tt.in)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) || errclass.Of(err) != errclass.InvalidArgument || errclass.Hint(err) == "" {
			t.Errorf("Parse(%q) = %v (class %v, hint %q), want %q", tt.in, err, errclass.Of(err), errclass.Hint(err), tt.msg)
		}
	}
}

func TestParseList(t *testing.T) {
	l, err := ParseList("06.0033,0e.0033 1c.0033\t02.0001 , 03.0001")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "06.0033,0E.0033,1C.0033,02.0001,03.0001" {
		t.Fatalf("list = %s", got)
	}
	if !l.Contains(MustParse("1c.33")) || l.Contains(MustParse("1c.34")) {
		t.Fatal("Contains")
	}
	for _, in := range []string{"", "  ", "01.0001,,02.0001", "01.0001,", ",01.0001", "01.0001,01.0001", "01.0001 1.1", "01.0001,zz"} {
		if _, err := ParseList(in); err == nil || errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("ParseList(%q) = %v, want invalid argument", in, err)
		}
	}
}

func TestListFlagAddsUp(t *testing.T) {
	var l List
	if err := l.Set("01.0001,02.0001"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("03.0001"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("02.0001"); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Fatalf("duplicate across options: %v", err)
	}
	if len(l) != 3 || l.Type() != "apqns" {
		t.Fatalf("list after failed Set = %v", l)
	}
	var nilList *List
	if nilList.String() != "" {
		t.Fatal("nil list String")
	}
}

func TestTextRoundTrip(t *testing.T) {
	id := MustParse("0a.0024")
	b, _ := id.MarshalText()
	var back ID
	if err := back.UnmarshalText(b); err != nil || back != id {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if err := back.UnmarshalText([]byte("nope")); err == nil {
		t.Fatal("bad text accepted")
	}
	if id.CardName() != "card0a" || id.Compare(MustParse("0a.0025")) >= 0 || MustParse("0b.0").Compare(id) <= 0 {
		t.Fatal("CardName/Compare")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("MustParse did not panic")
		}
	}()
	MustParse("bad")
}

func FuzzParseList(f *testing.F) {
	for _, s := range []string{"0a.0024", "01.0001,02.0002 03.0003", ",", "ff.ffff", "1.1,,2.2", "0g.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseList(s)
		if err != nil {
			if l != nil {
				t.Fatal("non-nil list with error")
			}
			if !errors.Is(err, errclass.InvalidArgument) {
				t.Fatalf("error of class %v", errclass.Of(err))
			}
			return
		}
		// The canonical form parses to the same list.
		again, err := ParseList(l.String())
		if err != nil || again.String() != l.String() {
			t.Fatalf("round trip of %q: %q %v", s, again.String(), err)
		}
	})
}
