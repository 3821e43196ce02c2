package tokenlib

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// Slots of the test environment.
const (
	slotCCA  SlotID = 0
	slotEP11 SlotID = 1
)

var testKDF = store.KDF{Algorithm: store.KDFArgon2id, Time: 1, MemoryKiB: 64, Threads: 1}

const (
	soPIN   = "87654321"
	userPIN = "12345678"
)

// writeTestRoot creates a simulator with two CCA APQNs and one EP11 APQN
// and a configuration with a CCA token in slot 0 and an EP11 token in slot
// 1, under a new temporary root.
func writeTestRoot(t testing.TB) paths.Layout {
	t.Helper()
	layout := paths.Layout{Root: t.TempDir()}
	topo := sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033")}},
	}, Seed: []byte("tokenlib test")}
	if err := sim.Init(layout.SimDir(), topo); err != nil {
		t.Fatal(err)
	}
	conf := layout.ConfDir()
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"pkcshsm.conf": "hsm-backend = simulator\nsimulator-dir = \"" + layout.SimDir() + "\"\n" +
			"slot 0 {\n\ttoken-type = cca\n\ttokname = ccatok\n\tconfname = ccatok.conf\n}\n" +
			"slot 1 {\n\ttoken-type = ep11\n\ttokname = ep11tok\n\tconfname = ep11tok.conf\n}\n",
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

// testLogger routes a Library's log to the test. Benchmarks and fuzz
// targets get none: a *testing.F may not log once its fuzz function runs
// (the testing package panics), and the Library's agent logs from its own
// goroutine whenever it retries the daemon — which killed fuzz workers
// ("fuzzing process hung or terminated unexpectedly").
func testLogger(t testing.TB) zerolog.Logger {
	switch t.(type) {
	case *testing.B, *testing.F:
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
}

func openTestLib(t testing.TB, layout paths.Layout) *Library {
	t.Helper()
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// newTestLib returns a Library on a fresh root whose two tokens are
// initialized with soPIN and have userPIN set.
func newTestLib(t testing.TB) (*Library, paths.Layout) {
	t.Helper()
	layout := writeTestRoot(t)
	l := openTestLib(t, layout)
	for _, slot := range []SlotID{slotCCA, slotEP11} {
		initTestToken(t, l, slot)
	}
	return l, layout
}

func initTestToken(t testing.TB, l *Library, slot SlotID) {
	t.Helper()
	must(t, l.InitToken(slot, []byte(soPIN), "test token"))
	h, err := l.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	must(t, l.Login(h, ck.CKU_SO, []byte(soPIN)))
	must(t, l.InitPIN(h, []byte(userPIN)))
	must(t, l.CloseSession(h))
}

// userSession opens a R/W session logged in as USER.
func userSession(t testing.TB, l *Library, slot SlotID) SessionHandle {
	t.Helper()
	h, err := l.OpenSession(slot, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	if err := l.Login(h, ck.CKU_USER, []byte(userPIN)); err != nil && RV(err) != ck.CKR_USER_ALREADY_LOGGED_IN {
		t.Fatal(err)
	}
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v (%v)", err, RV(err))
	}
}

// wantRV fails unless err carries rv.
func wantRV(t testing.TB, err error, rv ck.RV) {
	t.Helper()
	if got := RV(err); got != rv {
		t.Fatalf("got %v (%v), want %v", got, err, rv)
	}
}
