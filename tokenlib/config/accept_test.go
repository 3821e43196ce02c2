package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
)

func TestGrammarShapes(t *testing.T) {
	in := "# comment\r\nversion opencryptoki-3.27 # trailing\r\n" +
		"a = 42\nb = 0x2A\nc = 3.12\nd = \"s p\"\ne = /usr/lib/x.so\n" +
		"slot 0x10\n{\n  # comment inside\n  k = v\n}\n" +
		"st { x = 1 y = \"2\" }\n" +
		"l ( on, implicit,\n internal )\n" +
		"FLAG\nOLD \"arg\"\nOLD2 word\n" +
		"PAIRS # comment\n\n 0x0a 36 # comment\n 1 2\nEND\n" +
		"\"alone\"\n"
	nodes, err := parseFile("t.conf", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []*node{
		{kind: kFileVersion, line: 2, key: "version", str: "opencryptoki-3.27"},
		{kind: kInt, line: 3, key: "a", num: 42},
		{kind: kInt, line: 4, key: "b", num: 42},
		{kind: kVersion, line: 5, key: "c", num: 0x0003000C},
		{kind: kString, line: 6, key: "d", str: "s p"},
		{kind: kBare, line: 7, key: "e", str: "/usr/lib/x.so"},
		{kind: kIdxStruct, line: 8, key: "slot", num: 16, body: []*node{{kind: kBare, line: 11, key: "k", str: "v"}}},
		{kind: kStruct, line: 13, key: "st", body: []*node{
			{kind: kInt, line: 13, key: "x", num: 1}, {kind: kString, line: 13, key: "y", str: "2"}}},
		{kind: kBareList, line: 14, key: "l", list: []string{"on", "implicit", "internal"}},
		{kind: kBareConst, line: 16, key: "FLAG"},
		{kind: kBareConst, line: 17, key: "OLD"},
		{kind: kStringConst, line: 17, str: "arg"},
		{kind: kBareConst, line: 18, key: "OLD2"},
		{kind: kBareConst, line: 18, key: "word"},
		{kind: kPairList, line: 19, key: "PAIRS", end: "END", pairs: []pair{{0x0a, 36, 21}, {1, 2, 22}}},
		{kind: kStringConst, line: 24, str: "alone"},
	}
	if !reflect.DeepEqual(nodes, want) {
		for i := range max(len(nodes), len(want)) {
			var g, w *node
			if i < len(nodes) {
				g = nodes[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if !reflect.DeepEqual(g, w) {
				t.Errorf("node %d:\n got %+v\nwant %+v", i, g, w)
			}
		}
	}
	// "version" is a file version only as the first element.
	nodes, err = parseFile("t.conf", []byte("a\nversion x\n"))
	if err != nil || nodes[1].kind != kBareConst || nodes[1].key != "version" {
		t.Errorf("late version: %+v, %v", nodes, err)
	}
}

func TestGlobalDefaults(t *testing.T) {
	root := t.TempDir()
	t.Setenv(paths.EnvRoot, root)
	g, err := ParseGlobal("/conf/pkcshsm.conf", []byte("hsm-backend = \"simulator\"\nslot 0 { stdll = /usr/lib64/opencryptoki/stdll/libpkcs11_ep11.so }\nslot 1 { token-type = cca confname = /other/cca.conf }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if g.SimulatorDir != paths.FromEnv().SimDir() || !strings.HasPrefix(g.SimulatorDir, root) {
		t.Errorf("SimulatorDir = %q, want the default under %s", g.SimulatorDir, root)
	}
	s0 := g.Slots[0]
	if s0.Type != TypeEP11 || s0.TokName != "ep11tok" || s0.ConfName != "/conf/ep11tok.conf" ||
		s0.Description != DefaultDescription || s0.Manufacturer != DefaultManufacturer || s0.UserGroup != DefaultUserGroup {
		t.Errorf("EP11 slot defaults: %+v", s0)
	}
	s1 := g.Slots[1]
	if s1.Type != TypeCCA || s1.TokName != "ccatok" || s1.ConfName != "/other/cca.conf" {
		t.Errorf("CCA slot: %+v", s1)
	}
	if g.DisableEventSupport || g.Statistics != nil || g.FileVersion != "" {
		t.Errorf("unset globals: %+v", g)
	}
	if TypeCCA.String() != "cca" || TypeEP11.String() != "ep11" || TokenType(9).String() != "tokentype(9)" {
		t.Error("TokenType.String")
	}
}

func TestCCAAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *CCA
	}{
		{"empty file: defaults", "", DefaultCCA()},
		{"only comments", "# nothing\n\n", DefaultCCA()},
		{"keywords are case-insensitive", "apqn_whitelist\n1 2\nend\nexpected_mkvps {\n aes = \"0x1122334455667788\" }\nforce_sensitive\naes_key_mode = CIPHER\n",
			&CCA{APQNs: apqn.List{{Card: 1, Domain: 2}}, ForceSensitive: true, AESKeyMode: AESKeyModeCipher,
				ExpectedMKVPs: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: pat(t, mkvp.CCAAES, "1122334455667788")}}},
		{"explicit APQN_ANY", "APQN_ANY\nAES_KEY_MODE = \"DATA\"", DefaultCCA()},
		{"empty pattern block", "EXPECTED_MKVPS {\n}\n", DefaultCCA()},
		{"subset of patterns", "EXPECTED_MKVPS { APKA = \"a1a2a3a4a5a6a7a8\" }",
			&CCA{APQNAny: true, AESKeyMode: AESKeyModeData,
				ExpectedMKVPs: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAPKA: pat(t, mkvp.CCAAPKA, "A1A2A3A4A5A6A7A8")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCCA("c.conf", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !c.Equal(tt.want) {
				t.Errorf("got %+v\nwant %+v", c, tt.want)
			}
			checkCCARoundTrip(t, c)
		})
	}
}

func pat(t testing.TB, typ mkvp.Type, s string) mkvp.Pattern { return mustPattern(t, typ, s) }

func TestEP11Accepts(t *testing.T) {
	wk := "00112233445566778899AABBCCDDEEFF"
	tests := []struct {
		name     string
		in       string
		want     EP11
		warnings int
	}{
		{"APQN_ANY only", "APQN_ANY", EP11{APQNAny: true, CPFilter: "/etc/x/ep11cpfilter.conf"}, 0},
		{"old-style arguments", "APQN_ANY\nCPFILTER /abs/filter.conf\nEXPECTED_WKVP \"0x" + wk + "\"\nPKEY_MODE DISABLED\nDIGEST_LIBICA /usr/lib/libica.so.4",
			EP11{APQNAny: true, CPFilter: "/abs/filter.conf", ExpectedWKVP: pat(t, mkvp.EP11WK, wk), PKeyMode: "DISABLED", DigestLibica: "/usr/lib/libica.so.4"}, 0},
		{"= arguments", "APQN_ANY\nCPFILTER = \"sub/filter.conf\"\nEXPECTED_WKVP = \"" + strings.ToLower(wk) + "\"\nPKEY_MODE = DEFAULT\nDIGEST_LIBICA = DEFAULT",
			EP11{APQNAny: true, CPFilter: "/etc/x/sub/filter.conf", ExpectedWKVP: pat(t, mkvp.EP11WK, wk), PKeyMode: "DEFAULT", DigestLibica: "DEFAULT"}, 0},
		{"long WKVP (sysfs form) warns", "APQN_ANY\nEXPECTED_WKVP \"" + wk + strings.Repeat("0", 32) + "\"",
			EP11{APQNAny: true, CPFilter: "/etc/x/ep11cpfilter.conf", ExpectedWKVP: pat(t, mkvp.EP11WK, wk)}, 1},
		{"odd long WKVP warns", "APQN_ANY\nEXPECTED_WKVP \"" + wk + "1\"",
			EP11{APQNAny: true, CPFilter: "/etc/x/ep11cpfilter.conf", ExpectedWKVP: pat(t, mkvp.EP11WK, wk)}, 1},
		{"STRICT and VHSM together", "APQN_ANY\nSTRICT_MODE\nVHSM_MODE",
			EP11{APQNAny: true, StrictMode: true, VHSMMode: true, CPFilter: "/etc/x/ep11cpfilter.conf"}, 0},
		{"FIPS alone", "APQN_ANY\nFIPS_SESSION_MODE",
			EP11{APQNAny: true, FIPSSessionMode: true, CPFilter: "/etc/x/ep11cpfilter.conf"}, 0},
		{"256 APQNs", "APQN_ALLOWLIST\n" + manyPairs(256) + "END",
			EP11{APQNs: manyIDs(256), CPFilter: "/etc/x/ep11cpfilter.conf"}, 0},
		{"file version", "version ep11-1\nAPQN_ANY",
			EP11{FileVersion: "ep11-1", APQNAny: true, CPFilter: "/etc/x/ep11cpfilter.conf"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEP11("/etc/x/ep11tok.conf", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !e.Equal(&tt.want) {
				t.Errorf("got %+v\nwant %+v", e, &tt.want)
			}
			if len(e.Warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", e.Warnings, tt.warnings)
			}
			for _, w := range e.Warnings {
				if !strings.HasPrefix(w, "/etc/x/ep11tok.conf:2: EXPECTED_WKVP has") {
					t.Errorf("warning %q does not name file, line and keyword", w)
				}
			}
			checkEP11RoundTrip(t, e)
		})
	}
}

func manyIDs(n int) apqn.List {
	var l apqn.List
	for i := range n {
		l = append(l, apqn.ID{Card: uint8(i / 256), Domain: uint16(i % 256)})
	}
	return l
}

func TestResolveRelativeToFile(t *testing.T) {
	e, err := ParseEP11("rel/ep11tok.conf", []byte("APQN_ANY\nCPFILTER f.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(e.CPFilter) || !strings.HasSuffix(e.CPFilter, filepath.Join("rel", "f.conf")) {
		t.Errorf("CPFilter = %q, want an absolute path ending in rel/f.conf", e.CPFilter)
	}
}

// TestOtherSamples parses the alternative samples and round-trips them.
func TestOtherSamples(t *testing.T) {
	c, err := ParseCCA("/etc/pkcshsm/ccatok-any.conf", readSample(t, "ccatok-any.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.APQNAny || c.MLDSAKeyMode != "PREHASH" || c.PKeyMode != "DEFAULT" || len(c.ExpectedMKVPs) != 1 {
		t.Errorf("ccatok-any.conf: %+v", c)
	}
	checkCCARoundTrip(t, c)

	e, err := ParseEP11("/etc/pkcshsm/ep11tok-fips.conf", readSample(t, "ep11tok-fips.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !e.APQNAny || !e.FIPSSessionMode || e.FileVersion != "ep11-1" || e.DigestLibica != "/usr/lib64/libica.so.4" || e.PKeyMode != "DEFAULT" {
		t.Errorf("ep11tok-fips.conf: %+v", e)
	}
	checkEP11RoundTrip(t, e)

	e, err = ParseEP11("/etc/pkcshsm/ep11tok-legacy.conf", readSample(t, "ep11tok-legacy.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if len(e.APQNs) != 1 || e.APQNs[0] != (apqn.ID{Card: 1, Domain: 13}) || len(e.Warnings) != 1 ||
		e.CPFilter != "/etc/pkcshsm/ep11cpfilter.conf" || e.DigestLibica != "DEFAULT" {
		t.Errorf("ep11tok-legacy.conf: %+v", e)
	}
	checkEP11RoundTrip(t, e)
}
