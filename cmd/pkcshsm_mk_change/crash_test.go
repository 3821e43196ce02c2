package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

var q1, q2 = testenv.CCAAPQNs[0], testenv.CCAAPQNs[1]

// tool is the built pkcshsm_mk_change (internal/testenv builds the
// binaries once per go test run).
func tool(t *testing.T) string { return testenv.Bin(t, "pkcshsm_mk_change") }

const (
	soPIN   = testenv.SOPIN
	userPIN = testenv.UserPIN
	nKeys   = 5000
)

// crashEnv is a temporary root with a CCA token holding nKeys public AES
// token keys (public, so the test can watch the pass in the store without
// logging in), event support disabled (no daemon: only the token-object
// passes matter here).
type crashEnv struct {
	t      *testing.T
	layout paths.Layout
	hsm    *sim.HSM
	root   *testenv.Root
}

func newCrashEnv(t *testing.T) *crashEnv { return newCrashEnvKeys(t, nKeys) }

// newCrashEnvKeys is newCrashEnv with n keys.
func newCrashEnvKeys(t *testing.T, n int) *crashEnv {
	r := testenv.NewRoot(t, testenv.CCA(2))
	r.NoEvents()
	r.Token(2, n)
	return &crashEnv{t: t, layout: r.Layout, hsm: r.Sim(), root: r}
}

// patterns returns, per token key, the master key patterns of its
// CKA_IBM_OPAQUE and CKA_IBM_OPAQUE_OLD blobs (zero when absent), read
// from the blobs themselves.
func (e *crashEnv) patterns() map[uint64][2]mkvp.Pattern {
	out := map[uint64][2]mkvp.Pattern{}
	for h, ps := range e.blobPatterns(ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_OLD) {
		out[h] = [2]mkvp.Pattern{ps[0], ps[1]}
	}
	return out
}

// blobPatterns maps every token key to the master key patterns of the
// given blob attributes (zero where the key has none).
func (e *crashEnv) blobPatterns(attrs ...ck.Attribute) map[uint64][]mkvp.Pattern {
	st, err := store.Open(e.layout.TokenDir("cca"), store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	objs, err := st.List(context.Background(), nil, store.Filter{Classes: []uint{uint(ck.CKO_SECRET_KEY)}})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[uint64][]mkvp.Pattern{}
	for _, o := range objs {
		ps := make([]mkvp.Pattern, len(attrs))
		for i, a := range attrs {
			if b, ok := o.Attrs[uint32(a)]; ok {
				info, err := hsm.Inspect(b)
				if err != nil {
					e.t.Fatalf("key %d: %v: %v", o.Handle, a, err)
				}
				ps[i] = info.Pattern
			}
		}
		out[o.Handle] = ps
	}
	return out
}

// count returns how many token keys have each blob attribute.
func (e *crashEnv) count() (reenc, old int) {
	st, err := store.Open(e.layout.TokenDir("cca"), store.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	objs, err := st.List(context.Background(), nil, store.Filter{Classes: []uint{uint(ck.CKO_SECRET_KEY)}})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, o := range objs {
		if _, ok := o.Attrs[uint32(ck.CKA_IBM_OPAQUE_REENC)]; ok {
			reenc++
		}
		if _, ok := o.Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)]; ok {
			old++
		}
	}
	return reenc, old
}

func (e *crashEnv) latency(d time.Duration) {
	err := e.hsm.Do(context.Background(), func(tx *sim.Tx) error {
		if err := tx.SetLatency(q1, d); err != nil {
			return err
		}
		return tx.SetLatency(q2, d)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// run runs the tool to completion.
func (e *crashEnv) run(args ...string) (int, string) {
	cmd := exec.Command(tool(e.t), args...)
	cmd.Env = append(os.Environ(), paths.EnvRoot+"="+e.layout.Root)
	cmd.Stdin = strings.NewReader(userPIN + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return 0, out.String()
}

func (e *crashEnv) op() *state.Op {
	d, err := state.Open(e.layout.MKChangeDir(), state.Options{ReadOnly: true})
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	ops, broken, err := d.List(context.Background())
	if err != nil || len(broken) > 0 {
		e.t.Fatalf("operation files: %v %v", broken, err)
	}
	if len(ops) != 1 {
		e.t.Fatalf("%d operations", len(ops))
	}
	return ops[0]
}

func (e *crashEnv) loadNewAES() mkvp.Pattern {
	var p mkvp.Pattern
	for _, q := range []apqn.ID{q1, q2} {
		var err error
		p, err = e.hsm.LoadNew(context.Background(), q, mkvp.CCAAES, bytes.Repeat([]byte{7}, 32), hsm.Part{})
		if err != nil {
			e.t.Fatal(err)
		}
	}
	return p
}

func TestKillDuringReencipherThenCancel(t *testing.T) {
	e := newCrashEnv(t)
	before := e.patterns()
	p := e.loadNewAES()
	if r := e.runFP("cli.pass.reencipher.after-batch-commit=kill@1", "reencipher", "-a", "01.0033,02.0033", "-A", p.String()); !r.killed {
		t.Fatalf("reencipher not killed: exit %d\n%s", r.code, r.out)
	}
	op := e.op()
	if op.State != state.Reenciphering {
		t.Fatalf("state after the kill = %s, want REENCIPHERING", op.State)
	}
	if reenc, _ := e.count(); reenc != 2000 {
		t.Fatalf("%d of %d keys re-enciphered at the kill, want one batch of 2000", reenc, nKeys)
	}
	// finalize cannot start from REENCIPHERING, and says so.
	if code, out := e.run("finalize", "-i", string(op.ID)); code != 4 || !strings.Contains(out, "can not be finalized") {
		t.Fatalf("finalize after the kill: exit %d\n%s", code, out)
	}
	code, out := e.run("cancel", "-i", string(op.ID))
	if code != 0 || !strings.Contains(out, "successfully canceled") {
		t.Fatalf("cancel after the kill: exit %d\n%s", code, out)
	}
	if reenc, old := e.count(); reenc != 0 || old != 0 {
		t.Fatalf("after cancel: %d keys with REENC, %d with OLD", reenc, old)
	}
	// Each key's blobs are as before the change.
	if after := e.patterns(); len(after) != nKeys || !maps.Equal(after, before) {
		t.Fatalf("after cancel: %d keys, blobs as before: %v", len(after), maps.Equal(after, before))
	}
	// No operation is left; the NEW register the officer loaded is, and
	// list says a set would now lose every key (issue 16).
	if code, out := e.run("list"); code != 0 || strings.Contains(out, "Operation:") ||
		!strings.Contains(out, fmt.Sprintf("%d KEY OBJECTS HAVE NO BLOB UNDER IT.", nKeys)) {
		t.Fatalf("list after cancel: %d %q", code, out)
	}
}

func TestKillDuringFinalizeThenFinalize(t *testing.T) {
	e := newCrashEnv(t)
	before := e.patterns()
	if len(before) != nKeys {
		t.Fatalf("%d keys, want %d", len(before), nKeys)
	}
	p := e.loadNewAES()
	if code, out := e.run("reencipher", "-a", "01.0033,02.0033", "-A", p.String()); code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", code, out)
	}
	op := e.op()
	if reenc, _ := e.count(); reenc != nKeys {
		t.Fatalf("%d of %d keys re-enciphered", reenc, nKeys)
	}
	for _, q := range []apqn.ID{q1, q2} {
		if err := e.hsm.Set(context.Background(), q, mkvp.CCAAES); err != nil {
			t.Fatal(err)
		}
	}
	// Killed at a failpoint after the first batch commit, so the kill
	// lands in the middle however loaded the machine is (a kill at the
	// first progress line can come after the whole pass).
	if r := e.runFP("cli.pass.finalize.after-batch-commit=kill@1", "finalize", "-i", string(op.ID)); !r.killed {
		t.Fatalf("finalize not killed: exit %d\n%s", r.code, r.out)
	}
	if _, old := e.count(); old != 2000 {
		t.Fatalf("%d of %d keys finalized at the kill, want one batch of 2000", old, nKeys)
	}
	// The intent was recorded before the pass began: FINALIZING, first
	// pass, and list names finalize as the one command that completes it.
	if o := e.op(); o.State != state.Finalizing || o.Step != state.StepFirstPass {
		t.Fatalf("after the kill: state %s, step %q; want FINALIZING, %q", o.State, o.Step, state.StepFirstPass)
	}
	if code, out := e.run("list"); code != 0 || !strings.Contains(out, "run 'pkcshsm_mk_change finalize --id "+string(op.ID)+"'") ||
		strings.Contains(out, "pkcshsm_mk_change cancel") {
		t.Fatalf("list after the kill: exit %d\n%s", code, out)
	}
	code, out := e.run("finalize", "-i", string(op.ID))
	if code != 0 || !strings.Contains(out, "successfully finalized") {
		t.Fatalf("finalize again: exit %d\n%s", code, out)
	}
	if reenc, old := e.count(); reenc != 0 || old != nKeys {
		t.Fatalf("after finalize: %d keys with REENC, %d of %d with OLD", reenc, old, nKeys)
	}
	// The backup is the old blob: every key's OLD carries the pattern its
	// CURRENT had before the change, whether the first or the second run
	// finalized it; CURRENT carries the new one.
	after := e.patterns()
	for h, was := range before {
		now, ok := after[h]
		if !ok || now[0] != p || now[1] != was[0] {
			t.Fatalf("key %d: CURRENT %s, OLD %s; want CURRENT %s (new), OLD %s (before the change)", h, now[0], now[1], p, was[0])
		}
	}
	if len(after) != len(before) {
		t.Fatalf("%d keys after finalize, %d before", len(after), len(before))
	}
}

// TestKillInsidePipelinedPass: the tool is killed while the reencipher
// pass has several requests in flight on each APQN (the adapters have 4
// engines of 300µs; the kill lands at the 3,000th request, inside the
// second page). Only whole transactions were committed, every REENC blob
// there is under the new key, and cancel brings every key back as it was.
func TestKillInsidePipelinedPass(t *testing.T) {
	e := newCrashEnv(t)
	before := e.patterns()
	p := e.loadNewAES()
	err := e.hsm.Do(context.Background(), func(tx *sim.Tx) error {
		for _, q := range []apqn.ID{q1, q2} {
			if err := tx.SetLatency(q, 300*time.Microsecond); err != nil {
				return err
			}
			if err := tx.SetEngines(q, 4); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.runFP("cli.pass.reencipher.in-flight=kill@3000", "reencipher", "-a", "01.0033,02.0033", "-A", p.String())
	if !r.killed {
		t.Fatalf("reencipher not killed: exit %d\n%s", r.code, r.out)
	}
	if op := e.op(); op.State != state.Reenciphering {
		t.Fatalf("state after the kill = %s, want REENCIPHERING", op.State)
	}
	if after := e.patterns(); !maps.Equal(after, before) {
		t.Fatal("the pass changed a key's CURRENT blob or OLD blob")
	}
	reenc := 0
	for h, rp := range e.reencPatterns() {
		reenc++
		if rp != p {
			t.Fatalf("key %d: REENC under %s, want %s", h, rp, p)
		}
	}
	// Pages of 2,000 are committed in transactions of up to 250 (fewer
	// when a transaction would hold the write lock too long), in handle
	// order, while the next page is prepared: what was committed is a
	// prefix of the first page by handle.
	if reenc > 2000 {
		t.Fatalf("%d keys re-enciphered at the kill, want at most the first page", reenc)
	}
	handles := slices.Sorted(maps.Keys(before))
	done := e.reencPatterns()
	for i, h := range handles {
		if _, ok := done[h]; ok != (i < reenc) {
			t.Fatalf("key %d (the %dth by handle) re-enciphered = %v with %d keys re-enciphered: not a prefix of the page", h, i+1, ok, reenc)
		}
	}
	code, out := e.run("cancel", "-i", string(e.op().ID))
	if code != 0 || !strings.Contains(out, "successfully canceled") {
		t.Fatalf("cancel after the kill: exit %d\n%s", code, out)
	}
	if after := e.patterns(); !maps.Equal(after, before) {
		t.Fatal("after cancel the keys' blobs differ from before the change")
	}
}

// reencPatterns maps the keys with a REENC blob to its master key pattern.
func (e *crashEnv) reencPatterns() map[uint64]mkvp.Pattern {
	out := map[uint64]mkvp.Pattern{}
	for h, ps := range e.blobPatterns(ck.CKA_IBM_OPAQUE_REENC) {
		if ps[0] != (mkvp.Pattern{}) {
			out[h] = ps[0]
		}
	}
	return out
}
