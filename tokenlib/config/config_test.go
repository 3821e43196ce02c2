package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

const sampleDir = "../../testdata/config"

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sampleDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustPattern(t testing.TB, typ mkvp.Type, s string) mkvp.Pattern {
	t.Helper()
	p, _, err := mkvp.Parse(typ, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGlobalSample(t *testing.T) {
	g, err := ParseGlobal("/etc/pkcshsm/pkcshsm.conf", readSample(t, "pkcshsm.conf"))
	if err != nil {
		t.Fatalf("ParseGlobal: %v (hint: %s)", err, errclass.Hint(err))
	}
	want := &Global{
		File:                "/etc/pkcshsm/pkcshsm.conf",
		FileVersion:         "pkcshsm-1",
		HSMBackend:          "simulator",
		SimulatorDir:        "/var/lib/pkcshsm/sim",
		DisableEventSupport: true,
		Statistics:          []string{"on", "implicit", "internal"},
		Slots: []Slot{
			{ID: 2, Type: TypeCCA, Stdll: "libpkcs11_cca.so", TokName: "ccatok",
				ConfName: "/etc/pkcshsm/ccatok.conf", Description: "CCA token", Manufacturer: "IBM",
				HWVersion: Version{7, 0}, FWVersion: Version{1, 2}, TokVersion: Version{3, 12}, UserGroup: "pkcs11"},
			{ID: 4, Type: TypeEP11, TokName: "ep11tok", ConfName: "/etc/pkcshsm/ep11tok.conf",
				Description: "EP11 token", Manufacturer: "IBM", UserGroup: "pkcs11"},
			{ID: 16, Type: TypeCCA, TokName: "ccatok2", Description: "Linux", Manufacturer: "IBM", UserGroup: "pkcs11"},
		},
	}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("ParseGlobal:\n got %+v\nwant %+v", g, want)
	}
	if s, ok := g.Slot(4); !ok || s.TokName != "ep11tok" {
		t.Errorf("Slot(4) = %+v, %v", s, ok)
	}
	if _, ok := g.Slot(3); ok {
		t.Error("Slot(3) found a slot that does not exist")
	}
	if got := want.Slots[0].TokVersion.String(); got != "3.12" {
		t.Errorf("String(3.12) = %q", got)
	}
	if got := want.Slots[0].TokVersion.Packed(); got != 0x0003000C {
		t.Errorf("Packed(3.12) = %#x", got)
	}
}

func TestCCASample(t *testing.T) {
	c, err := ParseCCA("/etc/pkcshsm/ccatok.conf", readSample(t, "ccatok.conf"))
	if err != nil {
		t.Fatalf("ParseCCA: %v", err)
	}
	want := &CCA{
		File:        "/etc/pkcshsm/ccatok.conf",
		FileVersion: "cca-0",
		APQNs:       apqn.List{{Card: 0x0a, Domain: 0x24}, {Card: 11, Domain: 36}},
		ExpectedMKVPs: map[mkvp.Type]mkvp.Pattern{
			mkvp.CCASYM:  mustPattern(t, mkvp.CCASYM, "1122334455667788"),
			mkvp.CCAAES:  mustPattern(t, mkvp.CCAAES, "8877665544332211"),
			mkvp.CCAAPKA: mustPattern(t, mkvp.CCAAPKA, "0123456789ABCDEF"),
		},
		ForceSensitive: true,
		AESKeyMode:     AESKeyModeCipher,
		PKeyMode:       "DISABLED",
		MLDSAKeyMode:   "PURE",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("ParseCCA:\n got %+v\nwant %+v", c, want)
	}
}

func TestEP11Sample(t *testing.T) {
	e, err := ParseEP11("/etc/pkcshsm/ep11tok.conf", readSample(t, "ep11tok.conf"))
	if err != nil {
		t.Fatalf("ParseEP11: %v", err)
	}
	want := &EP11{
		File:               "/etc/pkcshsm/ep11tok.conf",
		APQNs:              apqn.List{{Card: 0, Domain: 1}, {Card: 0x0a, Domain: 0x24}},
		StrictMode:         true,
		VHSMMode:           true,
		ForceSensitive:     true,
		ExpectedWKVP:       mustPattern(t, mkvp.EP11WK, "00112233445566778899AABBCCDDEEFF"),
		CPFilter:           "/etc/pkcshsm/ep11cpfilter.conf",
		OptimizeSinglePart: true,
		PKeyMode:           "ENABLE4NONEXTR",
		DigestLibica:       "OFF",
		UsePRandom:         true,
	}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("ParseEP11:\n got %+v\nwant %+v", e, want)
	}
}

func TestSamplesRoundTrip(t *testing.T) {
	g, err := ParseGlobal("/etc/pkcshsm/pkcshsm.conf", readSample(t, "pkcshsm.conf"))
	if err != nil {
		t.Fatal(err)
	}
	checkGlobalRoundTrip(t, g)
	c, err := ParseCCA("/etc/pkcshsm/ccatok.conf", readSample(t, "ccatok.conf"))
	if err != nil {
		t.Fatal(err)
	}
	checkCCARoundTrip(t, c)
	e, err := ParseEP11("/etc/pkcshsm/ep11tok.conf", readSample(t, "ep11tok.conf"))
	if err != nil {
		t.Fatal(err)
	}
	checkEP11RoundTrip(t, e)
}

func checkGlobalRoundTrip(t testing.TB, g *Global) {
	t.Helper()
	out := g.Format()
	g2, err := ParseGlobal(g.File, out)
	if err != nil {
		t.Fatalf("re-parsing Format output: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(g, g2) {
		t.Fatalf("round trip changed the value:\n got %+v\nwant %+v\n%s", g2, g, out)
	}
}

func checkCCARoundTrip(t testing.TB, c *CCA) {
	t.Helper()
	out := c.Format()
	c2, err := ParseCCA(c.File, out)
	if err != nil {
		t.Fatalf("re-parsing Format output: %v\n%s", err, out)
	}
	if !c.Equal(c2) || !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip changed the value:\n got %+v\nwant %+v\n%s", c2, c, out)
	}
}

func checkEP11RoundTrip(t testing.TB, e *EP11) {
	t.Helper()
	out := e.Format()
	e2, err := ParseEP11(e.File, out)
	if err != nil {
		t.Fatalf("re-parsing Format output: %v\n%s", err, out)
	}
	if len(e2.Warnings) != 0 {
		t.Fatalf("canonical output produced warnings: %q\n%s", e2.Warnings, out)
	}
	if !e.Equal(e2) {
		t.Fatalf("round trip changed the value:\n got %+v\nwant %+v\n%s", e2, e, out)
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	global := []byte("hsm-backend = simulator\nslot 1 { token-type = ep11 }\nslot 2 { stdll = libpkcs11_cca.so confname = ccatok.conf }\nslot 3 { token-type = cca tokname = cca3 }\n")
	gp := write("pkcshsm.conf", global, 0o644)
	write("ep11tok.conf", readSample(t, "ep11tok.conf"), 0o640)
	write("ccatok.conf", readSample(t, "ccatok.conf"), 0o644)

	g, err := LoadGlobal(gp)
	if err != nil {
		t.Fatalf("LoadGlobal: %v", err)
	}
	s1, _ := g.Slot(1)
	if s1.ConfName != filepath.Join(dir, "ep11tok.conf") {
		t.Errorf("EP11 default confname = %q", s1.ConfName)
	}
	e, err := s1.LoadEP11()
	if err != nil || !e.StrictMode || e.CPFilter != filepath.Join(dir, "ep11cpfilter.conf") {
		t.Errorf("LoadEP11 = %+v, %v", e, err)
	}
	if _, err := s1.LoadCCA(); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("LoadCCA on an EP11 slot: %v", err)
	}
	s2, _ := g.Slot(2)
	c, err := s2.LoadCCA()
	if err != nil || c.AESKeyMode != AESKeyModeCipher || c.File != filepath.Join(dir, "ccatok.conf") {
		t.Errorf("LoadCCA = %+v, %v", c, err)
	}
	s3, _ := g.Slot(3)
	c3, err := s3.LoadCCA()
	if err != nil || !c3.Equal(DefaultCCA()) || !c3.APQNAny || c3.AESKeyMode != AESKeyModeData {
		t.Errorf("LoadCCA without confname = %+v, %v; want defaults", c3, err)
	}
	if _, err := s3.LoadEP11(); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("LoadEP11 on a CCA slot: %v", err)
	}

	// Missing files are NotFound, world-writable ones PermissionDenied,
	// directories InvalidArgument.
	if _, err := LoadGlobal(filepath.Join(dir, "nope.conf")); !errors.Is(err, errclass.NotFound) || errclass.Hint(err) == "" {
		t.Errorf("missing file: %v", err)
	}
	ww := write("ww.conf", global, 0o666)
	if _, err := LoadGlobal(ww); !errors.Is(err, errclass.PermissionDenied) || errclass.Hint(err) == "" {
		t.Errorf("world-writable global file: %v", err)
	}
	wc := write("wwcca.conf", readSample(t, "ccatok.conf"), 0o602)
	if _, err := LoadCCA(wc); !errors.Is(err, errclass.PermissionDenied) {
		t.Errorf("world-writable CCA file: %v", err)
	}
	we := write("wwep11.conf", readSample(t, "ep11tok.conf"), 0o646)
	if _, err := LoadEP11(we); !errors.Is(err, errclass.PermissionDenied) {
		t.Errorf("world-writable EP11 file: %v", err)
	}
	if _, err := LoadCCA(dir); !errors.Is(err, errclass.InvalidArgument) {
		t.Errorf("directory: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "ccatok.conf")); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.LoadCCA(); !errors.Is(err, errclass.NotFound) || !strings.HasPrefix(err.Error(), "slot 2: ") {
		t.Errorf("CCA slot whose confname is missing: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "ep11tok.conf")); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.LoadEP11(); !errors.Is(err, errclass.NotFound) {
		t.Errorf("EP11 slot without its file: %v", err)
	}
}

func TestLoadLargeAndUnreadable(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.conf")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadEP11(big); !errors.Is(err, errclass.InvalidArgument) || errclass.Hint(err) == "" {
		t.Errorf("oversized file: %v", err)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: unreadable-file case skipped")
		return
	}
	locked := filepath.Join(dir, "locked.conf")
	if err := os.WriteFile(locked, []byte("APQN_ANY\n"), 0o000); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadEP11(locked); !errors.Is(err, errclass.PermissionDenied) || errclass.Hint(err) == "" {
		t.Errorf("unreadable file: %v", err)
	}
}
