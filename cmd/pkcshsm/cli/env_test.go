package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
)

const (
	soPIN   = "87654321"
	userPIN = "12345678"
)

// newRoot makes a temporary PKCSHSM_ROOT with a simulator (two CCA APQNs,
// one EP11 APQN) and a configuration with a CCA token in slot 0 and an
// EP11 token in slot 1, and points PKCSHSM_ROOT at it.
func newRoot(t *testing.T) paths.Layout {
	t.Helper()
	layout := paths.Layout{Root: t.TempDir()}
	topo := sim.Topology{Groups: []sim.Group{
		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}},
		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033")}},
	}}
	if err := sim.Init(layout.SimDir(), topo); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(layout.ConfDir(), 0o755); err != nil {
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
		if err := os.WriteFile(filepath.Join(layout.ConfDir(), name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(paths.EnvRoot, layout.Root)
	return layout
}

// result is one in-process run of the command.
type result struct {
	code           int
	stdout, stderr string
}

// pkcshsm runs the command in process with stdin lines.
func pkcshsm(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb, nil)
	return result{code, out.String(), errb.String()}
}

// ok runs the command and fails the test unless it succeeds.
func ok(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := pkcshsm(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("pkcshsm %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

// setupTokens initializes both tokens and sets their USER PINs.
func setupTokens(t *testing.T) {
	t.Helper()
	for _, slot := range []string{"0", "1"} {
		ok(t, lines(soPIN, soPIN), "token", "init", "--slot", slot, "--label", "tok"+slot)
		ok(t, lines(soPIN, userPIN, userPIN), "pin", "set", "--slot", slot)
	}
}
