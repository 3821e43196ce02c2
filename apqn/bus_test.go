package apqn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// writeTree writes files (path → content) below root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBus(t *testing.T) {
	root := t.TempDir()
	ccaMKVPs, _ := os.ReadFile(filepath.Join("..", "testdata", "mkvps", "cca.txt"))
	writeTree(t, root, map[string]string{
		"devices/ap/card01/type":                  "CEX8C\n",
		"devices/ap/card01/online":                "1\n",
		"devices/ap/card01/config":                "1\n",
		"devices/ap/card01/chkstop":               "0\n",
		"devices/ap/card01/ap_functions":          "0x92800000\n",
		"devices/ap/card01/serialnr":              "93AADFK7\n",
		"devices/ap/card01/01.0033/online":        "1\n",
		"devices/ap/card01/01.0033/config":        "1\n",
		"devices/ap/card01/01.0033/chkstop":       "0\n",
		"devices/ap/card01/01.0033/mkvps":         string(ccaMKVPs),
		"devices/ap/card01/01.0034/online":        "0\n",
		"devices/ap/card0e/type":                  "CEX7P\n",
		"devices/ap/card0e/online":                "1\n",
		"devices/ap/card0e/chkstop":               "1\n",
		"devices/ap/card0e/0e.0033/online":        "1\n",
		"devices/ap/card0e/0e.0033/request_count": "17\n",
		"devices/ap/cardzz/type":                  "junk\n", // not a card name we know
		"devices/ap/poll_thread":                  "0\n",
	})
	b := Bus{Root: root}
	qs, err := b.Queues()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range qs {
		got = append(got, q.ID.String()+" "+q.Card.Mode.String()+" "+q.Status())
	}
	want := "01.0033 CCA-Coproc online|01.0034 CCA-Coproc offline|0E.0033 EP11-Coproc chkstop"
	if strings.Join(got, "|") != want {
		t.Fatalf("queues = %q, want %q", strings.Join(got, "|"), want)
	}
	if !qs[0].Usable() || qs[1].Usable() || qs[2].Usable() {
		t.Fatal("Usable")
	}
	if qs[0].Card.Serial != "93AADFK7" || qs[0].Card.Functions != 0x92800000 || qs[0].Card.Generation != 8 {
		t.Fatalf("card = %+v", qs[0].Card)
	}
	m, err := b.MKVPs(MustParse("01.0033"))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := m.Lookup("AES", "NEW"); l.State != StateFull {
		t.Fatalf("AES NEW = %+v", l)
	}
	if _, err := b.MKVPs(MustParse("01.0034")); errclass.Of(err) != errclass.NotFound {
		t.Fatalf("missing mkvps: %v", err)
	}
	if _, err := b.Queue(MustParse("05.0001")); errclass.Of(err) != errclass.NotFound {
		t.Fatalf("missing card: %v", err)
	}
	if _, err := (Bus{Root: filepath.Join(root, "nope")}).Cards(); errclass.Of(err) != errclass.NotFound {
		t.Fatalf("missing root: %v", err)
	}
}

func TestBusCorrupt(t *testing.T) {
	cases := map[string]map[string]string{
		"bad online":     {"devices/ap/card01/type": "CEX8C", "devices/ap/card01/online": "yes"},
		"bad type":       {"devices/ap/card01/type": "XYZ"},
		"bad functions":  {"devices/ap/card01/type": "CEX8C", "devices/ap/card01/ap_functions": "0xZZ"},
		"bad generation": {"devices/ap/card01/type": "CEXxC"},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, files)
			if _, err := (Bus{Root: root}).Cards(); err == nil {
				t.Fatal("corrupt attribute accepted")
			}
		})
	}
}

func TestParseCardType(t *testing.T) {
	for in, want := range map[string]Mode{"CEX8C": ModeCCA, "CEX7P": ModeEP11, "CEX6A": ModeAccel, "CEX10C": ModeCCA, "CEX5X": ModeUnknown} {
		_, m, err := ParseCardType(in)
		if err != nil || m != want {
			t.Errorf("ParseCardType(%q) = %v, %v", in, m, err)
		}
	}
	for _, in := range []string{"", "CEX", "CEXC", "PCICC", "CEX0C"} {
		if _, _, err := ParseCardType(in); err == nil {
			t.Errorf("ParseCardType(%q) accepted", in)
		}
	}
}
