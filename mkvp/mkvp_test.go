package mkvp

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestTypes(t *testing.T) {
	want := map[Type][4]string{
		EP11WK:  {"EP11", "EP11 WK", "WK", "16"},
		CCASYM:  {"CCA SYM", "CCA SYM", "SYM", "8"},
		CCAASYM: {"CCA ASYM", "CCA ASYM", "ASYM", "8"},
		CCAAES:  {"CCA AES", "CCA AES", "AES", "8"},
		CCAAPKA: {"CCA APKA", "CCA APKA", "APKA", "8"},
	}
	for _, typ := range Types() {
		w := want[typ]
		if typ.String() != w[0] || typ.LongName() != w[1] || typ.Keyword() != w[2] || itoa(typ.Size()) != w[3] {
			t.Errorf("%d: %q %q %q %d", typ, typ, typ.LongName(), typ.Keyword(), typ.Size())
		}
		for _, in := range []string{w[0], w[1], w[2], strings.ToLower(w[2]), strings.ReplaceAll(strings.ToLower(w[1]), " ", "-")} {
			got, err := ParseType(in)
			if err != nil || got != typ {
				t.Errorf("ParseType(%q) = %v, %v", in, got, err)
			}
		}
		b, _ := typ.MarshalText()
		var back Type
		if err := back.UnmarshalText(b); err != nil || back != typ {
			t.Errorf("text round trip %v", typ)
		}
	}
	if !CCAAES.IsCCA() || EP11WK.IsCCA() || len(CCATypes()) != 4 {
		t.Error("IsCCA/CCATypes")
	}
	if _, err := ParseType("DES"); err == nil || errclass.Hint(err) == "" {
		t.Error("unknown type accepted or without hint")
	}
	if Type(0).Valid() || Type(0).String() != "mktype(0)" {
		t.Error("zero type")
	}
	if _, err := Type(9).MarshalText(); err == nil {
		t.Error("invalid type marshalled")
	}
}

func itoa(n int) string {
	if n == 16 {
		return "16"
	}
	return string(rune('0' + n))
}

func TestParse(t *testing.T) {
	good := []struct {
		typ     Type
		in      string
		want    string
		ignored int
	}{
		{CCAAES, "7D10D17BC8A409C4", "7D10D17BC8A409C4", 0},
		{CCAAES, "0x7d10d17bc8a409c4", "7D10D17BC8A409C4", 0},
		{CCASYM, "0X130E2053F18E5F4C", "130E2053F18E5F4C", 0},
		{EP11WK, "ef92899ebe57291ec8e8716d850ee2f7", "EF92899EBE57291EC8E8716D850EE2F7", 0},
		{EP11WK, "0xef92899ebe57291ec8e8716d850ee2f700112233445566778899aabbccddeeff", "EF92899EBE57291EC8E8716D850EE2F7", 16},
		// The 16-byte ASYM value of the sysfs mkvps file.
		{CCAASYM, "0xf8ae2acf8bfc57f00011223344556677", "F8AE2ACF8BFC57F0", 8},
	}
	for _, tt := range good {
		p, ign, err := Parse(tt.typ, tt.in)
		if err != nil || p.String() != tt.want || ign != tt.ignored || p.Len() != tt.typ.Size() {
			t.Errorf("Parse(%v, %q) = %v %d %v", tt.typ, tt.in, p, ign, err)
		}
	}
	bad := []struct {
		typ Type
		in  string
		msg string
	}{
		{CCAAES, "", "too short"},
		{CCAAES, "0x", "too short"},
		{CCAAES, "7D10D17BC8A409", "too short"},
		{CCAAES, "7D10D17BC8A409C4AA", "too long"},
		{CCAAES, "7D10D17BC8A409C", "too short"},
		{CCAAES, "7D10D17BC8A409C4A", "odd number"},
		{CCAAES, "1g10D17BC8A409C4", "not hexadecimal"},
		{CCAAES, "7D10 D17BC8A409C4", "not hexadecimal"},
		{CCAAES, "-7D10D17BC8A409C4", "not hexadecimal"},
		{EP11WK, "ef92899ebe57291ec8e8716d850ee2", "too short"},
		{EP11WK, "ef92899ebe57291ec8e8716d850ee2f700", "too long"},
		{Type(0), "7D10D17BC8A409C4", "invalid master key type"},
		{CCASYM, "130E2053F18E5F4C0011223344556677", "too long"},
		{CCAAPKA, "82A5E2CD5030D5EC0011223344556677", "too long"},
		{CCAASYM, "f8ae2acf8bfc57f000112233445566", "too long"},
	}
	for _, tt := range bad {
		p, _, err := Parse(tt.typ, tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.msg) || errclass.Of(err) != errclass.InvalidArgument || !p.IsZero() {
			t.Errorf("Parse(%v, %q) = %v, want %q", tt.typ, tt.in, err, tt.msg)
		}
	}
}

func TestPatternValue(t *testing.T) {
	a, _, _ := Parse(CCAAES, "7d10d17bc8a409c4")
	b, _ := New([]byte{0x7d, 0x10, 0xd1, 0x7b, 0xc8, 0xa4, 0x09, 0xc4})
	if a != b {
		t.Fatal("equal patterns compare unequal")
	}
	m := map[Pattern]int{a: 1}
	if m[b] != 1 {
		t.Fatal("pattern as map key")
	}
	raw := a.Bytes()
	raw[0] = 0
	if a.Bytes()[0] != 0x7d {
		t.Fatal("Bytes aliases the pattern")
	}
	js, err := json.Marshal(struct{ P Pattern }{a})
	if err != nil || string(js) != `{"P":"7D10D17BC8A409C4"}` {
		t.Fatalf("json = %s %v", js, err)
	}
	var back struct{ P Pattern }
	if err := json.Unmarshal(js, &back); err != nil || back.P != a {
		t.Fatalf("json back = %v %v", back.P, err)
	}
	var zero Pattern
	if err := zero.UnmarshalText(nil); err != nil || !zero.IsZero() || zero.String() != "" {
		t.Fatal("zero pattern")
	}
	for _, in := range []string{"zz", "0011"} {
		if err := zero.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) accepted", in)
		}
	}
	if _, err := New(make([]byte, 9)); err == nil {
		t.Error("New accepted 9 bytes")
	}
	wk, err := ForType(EP11WK, make([]byte, 32))
	if err != nil || wk.Len() != 16 {
		t.Errorf("ForType EP11 32 bytes: %v %v", wk, err)
	}
	if _, err := ForType(CCAAES, make([]byte, 4)); err == nil {
		t.Error("ForType short")
	}
	if _, err := ForType(Type(0), make([]byte, 8)); err == nil {
		t.Error("ForType invalid type")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"7D10D17BC8A409C4", "0x7d10d17bc8a409c4", "ef92899ebe57291ec8e8716d850ee2f7", "1g", "0x", ""} {
		f.Add(uint8(CCAAES), s)
		f.Add(uint8(EP11WK), s)
	}
	f.Fuzz(func(t *testing.T, typ uint8, s string) {
		p, ignored, err := Parse(Type(typ), s)
		if err != nil {
			if !p.IsZero() || ignored != 0 {
				t.Fatal("value returned with an error")
			}
			return
		}
		if p.Len() != Type(typ).Size() {
			t.Fatalf("length %d for %v", p.Len(), Type(typ))
		}
		again, ign2, err := Parse(Type(typ), p.String())
		if err != nil || again != p || ign2 != 0 {
			t.Fatalf("round trip %q: %v %v", p, again, err)
		}
	})
}

// TestSourceHints checks that each type's hint names where its pattern
// really is: SYM never points to sysfs, the others do.
func TestSourceHints(t *testing.T) {
	for _, typ := range Types() {
		_, _, err := Parse(typ, "00")
		h := errclass.Hint(err)
		inSysfs := strings.Contains(h, "/sys/bus/ap/devices/<card>.<domain>/mkvps")
		if want := typ != CCASYM; inSysfs != want {
			t.Errorf("%v hint mentions sysfs: %v, want %v: %s", typ, inSysfs, want, h)
		}
		if !strings.Contains(h, "hsmsim show") {
			t.Errorf("%v hint lacks the simulator's source: %s", typ, h)
		}
	}
	if h := Source(CCASYM); !strings.Contains(h, "--mktype=SYM") || !strings.Contains(h, "not in sysfs") {
		t.Errorf("SYM source: %s", h)
	}
	if h := Source(CCAAES); !strings.Contains(h, "'AES NEW' line") || !strings.Contains(h, "--mktype=AES") || !strings.Contains(h, "[VER]") {
		t.Errorf("AES source: %s", h)
	}
}
