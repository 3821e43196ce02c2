package apqn

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "mkvps", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMKVPsGolden(t *testing.T) {
	for _, name := range []string{"cca.txt", "ep11.txt", "ep11-empty.txt", "cca-offline.txt"} {
		t.Run(name, func(t *testing.T) {
			raw := readGolden(t, name)
			m, err := ParseMKVPs(raw)
			if err != nil {
				t.Fatal(err)
			}
			out, err := m.Format()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, raw) {
				t.Fatalf("Format differs from the kernel text:\n%s\nwant\n%s", out, raw)
			}
		})
	}
	m, _ := ParseMKVPs(readGolden(t, "cca.txt"))
	l, ok := m.Lookup("AES", "CUR")
	if !ok || l.State != StateValid || hex.EncodeToString(l.Pattern) != "8a11f0e2c3d4b5a6" {
		t.Fatalf("AES CUR = %+v", l)
	}
	if l, _ := m.Lookup("ASYM", "CUR"); len(l.Pattern) != 16 {
		t.Fatalf("ASYM pattern length %d", len(l.Pattern))
	}
	if _, ok := m.Lookup("SYM", "CUR"); ok {
		t.Fatal("sysfs has no SYM line")
	}
	e, _ := ParseMKVPs(readGolden(t, "ep11.txt"))
	if l, _ := e.Lookup("WK", "NEW"); l.State != StateCommitted || len(l.Pattern) != 32 {
		t.Fatalf("WK NEW = %+v", l)
	}
	off, _ := ParseMKVPs(readGolden(t, "cca-offline.txt"))
	if l, _ := off.Lookup("APKA", "OLD"); l.State != StateUnknown || l.Pattern != nil {
		t.Fatalf("offline line = %+v", l)
	}
}

func TestParseMKVPsTolerance(t *testing.T) {
	// Older kernels print only AES; newer ones may add keywords we do not know.
	in := "aes new: empty 0x0000000000000000\nAES CUR: VALID 0x8A11F0E2C3D4B5A6\nQSA NEW: full 0x00\nFOO BAR BAZ\n"
	m, err := ParseMKVPs([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Lines) != 2 || m.Lines[0].Key != "AES" || m.Lines[1].State != StateValid {
		t.Fatalf("lines = %+v", m.Lines)
	}
}

func TestParseMKVPsErrors(t *testing.T) {
	cases := []struct{ in, msg string }{
		{"", "no master key line"},
		{"QSA CUR: valid 0x00\n", "no master key line"},
		{"AES CUR: valid\n", "want 4 fields"},
		{"AES CUR valid 0x8a11f0e2c3d4b5a6\n", "is not NEW:, CUR: or OLD:"},
		{"AES NOW: valid 0x8a11f0e2c3d4b5a6\n", "is not NEW:, CUR: or OLD:"},
		{"AES CUR: valid 8a11f0e2c3d4b5a6\n", "lacks the 0x prefix"},
		{"AES CUR: valid 0x8a11f0\n", "hex digits, want 16"},
		{"AES CUR: valid 0x8a11f0e2c3d4b5zz\n", "not hexadecimal"},
		{"AES CUR: full 0x8a11f0e2c3d4b5a6\n", "not possible"},
		{"AES NEW: valid 0x8a11f0e2c3d4b5a6\n", "not possible"},
		{"AES CUR: bogus 0x8a11f0e2c3d4b5a6\n", "unknown state"},
		{"AES CUR: - 0x8a11f0e2c3d4b5a6\n", "unknown state with a pattern"},
		{"AES CUR: valid -\n", "missing pattern"},
		{"AES CUR: valid 0x8a11f0e2c3d4b5a6\nAES CUR: valid 0x8a11f0e2c3d4b5a6\n", "duplicate"},
		{"WK OLD: valid -\n", "no OLD register"},
		{"WK NEW: full -\n", "not possible"},
		{"WK NEW: empty 0x" + strings.Repeat("00", 32) + "\n", "prints no pattern"},
		{"WK CUR: valid -\n", "missing pattern"},
	}
	for _, tt := range cases {
		_, err := ParseMKVPs([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.msg) || errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("ParseMKVPs(%q) = %v, want %q", tt.in, err, tt.msg)
		}
	}
}

func TestFormatErrors(t *testing.T) {
	for _, m := range []MKVPs{
		{Lines: []MKVPLine{{Key: "SYM", Register: "CUR", State: StateValid, Pattern: make([]byte, 8)}}},
		{Lines: []MKVPLine{{Key: "AES", Register: "CUR", State: StateValid, Pattern: make([]byte, 7)}}},
		{Lines: []MKVPLine{{Key: "AES", Register: "CUR", State: StateValid}}},
	} {
		if _, err := m.Format(); err == nil {
			t.Errorf("Format(%+v) succeeded", m.Lines)
		}
	}
}

func TestRegState(t *testing.T) {
	for s := StateUnknown; s <= StateValid; s++ {
		if s == StateUnknown {
			continue
		}
		got, err := ParseRegState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseRegState(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseRegState("nope"); err == nil {
		t.Error("unknown state accepted")
	}
	if RegState(99).String() != "state(99)" {
		t.Error("out of range name")
	}
}

func FuzzParseMKVPs(f *testing.F) {
	for _, name := range []string{"cca.txt", "ep11.txt", "ep11-empty.txt", "cca-offline.txt"} {
		f.Add(readGolden(f, name))
	}
	f.Add([]byte("AES CUR: valid 0x\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMKVPs(in)
		if err != nil {
			if len(m.Lines) != 0 {
				t.Fatal("lines returned with an error")
			}
			return
		}
		out, err := m.Format()
		if err != nil {
			t.Fatalf("parsed input does not format: %v", err)
		}
		again, err := ParseMKVPs(out)
		if err != nil {
			t.Fatalf("formatted output does not parse: %v\n%s", err, out)
		}
		out2, _ := again.Format()
		if !bytes.Equal(out, out2) {
			t.Fatalf("format not stable:\n%s\n%s", out, out2)
		}
	})
}
