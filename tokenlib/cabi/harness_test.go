package cabi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// The C-layer tests run inside the test binary: ctest links the module
// and calls it through its CK_FUNCTION_LIST with C memory, like a C
// application. The module is process-wide state, so these tests never run
// in parallel; each starts from a fresh PKCSHSM_ROOT and C_Initialize.

const (
	soPIN    = "87654321"
	userPIN  = "12345678"
	ccaSlot  = 2
	ep11Slot = 4
)

// testRoot writes a simulator (CCA 01.0033 and 02.0033, EP11 06.0033) and
// a configuration with a CCA token in slot 2 and an EP11 token in slot 4
// under a new short temporary root (socket paths are limited to 107
// bytes).
func testRoot(t testing.TB) paths.Layout {
	t.Helper()
	root, err := os.MkdirTemp("", "cabi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	layout := paths.Layout{Root: root}
	topo := sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033")}},
	}, Seed: []byte("cabi test")}
	if err := sim.Init(layout.SimDir(), topo); err != nil {
		t.Fatal(err)
	}
	conf := layout.ConfDir()
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"pkcshsm.conf": "hsm-backend = simulator\n" +
			"slot 2 {\n\ttoken-type = cca\n\ttokname = cca\n\tconfname = ccatok.conf\n}\n" +
			"slot 4 {\n\ttoken-type = ep11\n\ttokname = ep11\n\tconfname = ep11tok.conf\n}\n",
		"ccatok.conf":  "APQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n",
		"ep11tok.conf": "APQN_ALLOWLIST\n6 0x33\nEND\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return layout
}

// module is the function list plus the test's C memory, freed at cleanup.
type module struct {
	t      testing.TB
	f      *ctest.List
	layout paths.Layout
	log    string
	mem    []ctest.Mem
}

// newModule points the module at a fresh root (PKCSHSM_ROOT, PKCSHSM_LOG)
// and returns its function list, not yet initialised. Cleanup finalizes
// the module if the test left it initialised.
func newModule(t testing.TB) *module {
	t.Helper()
	layout := testRoot(t)
	m := &module{t: t, layout: layout, log: filepath.Join(layout.Root, "module.log")}
	setenv(t, paths.EnvRoot, layout.Root)
	setenv(t, "PKCSHSM_LOG", m.log)
	setenv(t, "PKCSHSM_LOG_LEVEL", "debug")
	f, err := ctest.Functions()
	if err != nil {
		t.Fatal(err)
	}
	m.f = f
	t.Cleanup(func() {
		m.f.C_Finalize(0)
		for _, b := range m.mem {
			b.Free()
		}
	})
	return m
}

// setenv is t.Setenv for testing.TB (fuzz targets set it once).
func setenv(t testing.TB, k, v string) {
	old, had := os.LookupEnv(k)
	os.Setenv(k, v)
	t.Cleanup(func() {
		if had {
			os.Setenv(k, old)
		} else {
			os.Unsetenv(k)
		}
	})
}

// ready initialises the module, initialises the CCA token with the SO PIN
// and sets the USER PIN, all through the C functions.
func ready(t testing.TB) *module {
	t.Helper()
	m := newModule(t)
	m.ok("C_Initialize", m.f.C_Initialize(0))
	label := m.bytes([]byte(pad("cabi", 32)))
	so := m.bytes([]byte(soPIN))
	m.ok("C_InitToken", m.f.C_InitToken(ccaSlot, so.P, uintptr(so.N), label.P))
	h := m.open(ccaSlot, true)
	m.ok("C_Login SO", m.f.C_Login(h, uintptr(ck.CKU_SO), so.P, uintptr(so.N)))
	user := m.bytes([]byte(userPIN))
	m.ok("C_InitPIN", m.f.C_InitPIN(h, user.P, uintptr(user.N)))
	m.ok("C_CloseSession", m.f.C_CloseSession(h))
	return m
}

// user opens a read/write session on the CCA token logged in as USER.
func (m *module) user() uintptr {
	m.t.Helper()
	h := m.open(ccaSlot, true)
	pin := m.bytes([]byte(userPIN))
	m.ok("C_Login", m.f.C_Login(h, uintptr(ck.CKU_USER), pin.P, uintptr(pin.N)))
	return h
}

func pad(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }

func (m *module) keep(b ctest.Mem) ctest.Mem {
	m.mem = append(m.mem, b)
	return b
}

// bytes copies b into C memory freed at cleanup.
func (m *module) bytes(b []byte) ctest.Mem { return m.keep(ctest.CBytes(b)) }

// alloc returns n zeroed bytes of C memory freed at cleanup.
func (m *module) alloc(n int) ctest.Mem { return m.keep(ctest.Alloc(n)) }

// ulong returns a CK_ULONG in C memory holding v.
func (m *module) ulong(v uint) ctest.Mem {
	b := m.alloc(ctest.SizeofULong)
	ctest.SetULong(b.P, v)
	return b
}

// attrs builds a template with real values: bools are CK_BBOOL, uints
// CK_ULONG, []byte and string byte arrays.
func (m *module) attrs(kv ...any) (ctest.Mem, int) {
	m.t.Helper()
	var as []ctest.Attr
	for i := 0; i < len(kv); i += 2 {
		var v []byte
		switch x := kv[i+1].(type) {
		case bool:
			v = []byte{0}
			if x {
				v[0] = 1
			}
		case uint:
			v = ctest.ULongBytes(x)
		case int:
			v = ctest.ULongBytes(uint(x))
		case ck.ObjectClass:
			v = ctest.ULongBytes(uint(x))
		case ck.KeyType:
			v = ctest.ULongBytes(uint(x))
		case []byte:
			v = x
		case string:
			v = []byte(x)
		default:
			m.t.Fatalf("attrs: unsupported value %T", x)
		}
		b := m.bytes(v)
		as = append(as, ctest.Attr{Type: uint(kv[i].(ck.Attribute)), Value: b.P, Len: uint(len(v))})
	}
	return m.keep(ctest.PutAttrs(as)), len(as)
}

// mech builds a CK_MECHANISM with a raw parameter (nil: NULL, 0).
func (m *module) mech(t ck.Mechanism, param []byte) ctest.Mem {
	if param == nil {
		return m.keep(ctest.PutMechanism(uint(t), 0, 0))
	}
	p := m.bytes(param)
	return m.keep(ctest.PutMechanism(uint(t), p.P, uint(len(param))))
}

func (m *module) open(slot uint, rw bool) uintptr {
	m.t.Helper()
	flags := ck.CKF_SERIAL_SESSION
	if rw {
		flags |= ck.CKF_RW_SESSION
	}
	ph := m.alloc(ctest.SizeofULong)
	m.ok("C_OpenSession", m.f.C_OpenSession(uintptr(slot), uintptr(flags), 0, 0, ph.P))
	return uintptr(ctest.ULong(ph.P))
}

// aesKey generates an AES-256 session key usable for everything.
func (m *module) aesKey(h uintptr, token bool) uintptr {
	m.t.Helper()
	tmpl, n := m.attrs(ck.CKA_VALUE_LEN, 32, ck.CKA_TOKEN, token, ck.CKA_LABEL, "k",
		ck.CKA_ENCRYPT, true, ck.CKA_DECRYPT, true, ck.CKA_WRAP, true, ck.CKA_UNWRAP, true, ck.CKA_EXTRACTABLE, true)
	ph := m.alloc(ctest.SizeofULong)
	m.ok("C_GenerateKey", m.f.C_GenerateKey(h, m.mech(ck.CKM_AES_KEY_GEN, nil).P, tmpl.P, uintptr(n), ph.P))
	return uintptr(ctest.ULong(ph.P))
}

func (m *module) ok(what string, rv uint) {
	m.t.Helper()
	if ck.RV(rv) != ck.CKR_OK {
		m.t.Fatalf("%s: %v", what, ck.RV(rv))
	}
}

func wantRV(t testing.TB, what string, got uint, want ck.RV) {
	t.Helper()
	if ck.RV(got) != want {
		t.Errorf("%s = %v, want %v", what, ck.RV(got), want)
	}
}

// logLines returns the module's log entries (lines that are not JSON
// are returned as {"unparsed": line}).
func (m *module) logLines() []map[string]any {
	f, err := os.Open(m.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			e = map[string]any{"unparsed": sc.Text()}
		}
		out = append(out, e)
	}
	return out
}

// p256 is the DER OID of the NIST P-256 curve (CKA_EC_PARAMS).
var p256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// ecKeyPair generates a P-256 session key pair for signing.
func (m *module) ecKeyPair(h uintptr) (pub, priv uintptr) {
	m.t.Helper()
	pt, pn := m.attrs(ck.CKA_EC_PARAMS, p256, ck.CKA_VERIFY, true, ck.CKA_TOKEN, false)
	st, sn := m.attrs(ck.CKA_SIGN, true, ck.CKA_TOKEN, false)
	ph, ps := m.alloc(ctest.SizeofULong), m.alloc(ctest.SizeofULong)
	m.ok("C_GenerateKeyPair", m.f.C_GenerateKeyPair(h, m.mech(ck.CKM_EC_KEY_PAIR_GEN, nil).P, pt.P, uintptr(pn), st.P, uintptr(sn), ph.P, ps.P))
	return uintptr(ctest.ULong(ph.P)), uintptr(ctest.ULong(ps.P))
}

// panics returns the panics the module logged, for failure messages.
func (m *module) panics() string {
	var b strings.Builder
	for _, e := range m.logLines() {
		if p, ok := e["panic"]; ok {
			fmt.Fprintf(&b, "\npanic in %v: %v\n%v", e["function"], p, e["stack"])
		}
	}
	return b.String()
}
