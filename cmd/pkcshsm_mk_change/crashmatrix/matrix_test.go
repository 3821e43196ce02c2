package crashmatrix

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// A scenario is what the operator and the officer set out to do; each step
// is a pkcshsm_mk_change command or the officer's activation.
var scenarios = map[string][]string{
	// reencipher, the officer activates the new keys, finalize.
	"finalize": {"reencipher", "set", "finalize"},
	// reencipher, cancel.
	"cancel": {"reencipher", "cancel"},
	// reencipher fails in its second page of token objects (an injected
	// error), so the tool rolls the change back itself.
	"rollback": {"reencipher"},
}

var scenarioOrder = []string{"finalize", "cancel", "rollback"}

// rollbackRule makes the reencipher pass fail at its second page.
const rollbackRule = "cli.pass.reencipher.list=error@2"

// pageRule makes the passes commit two key objects per batch
// (CRASH_PAGE), so that a few keys make several batches.
var pageRule = "mkchange.page-size=value:" + cmp.Or(os.Getenv("CRASH_PAGE"), "2")

// point is one kill of the matrix: the n-th hit of a named failpoint in
// one process of one scenario. For the CLI, step is the index of the
// scenario step whose command is killed.
type point struct {
	scenario string
	proc     string // "cli", "daemon" or "agent" (the first application)
	step     int
	name     string
	nth      int
}

func (p point) String() string {
	where := p.proc
	if p.proc == "cli" {
		where = scenarios[p.scenario][p.step]
	}
	return fmt.Sprintf("%s/%s/%s@%d", p.scenario, where, p.name, p.nth)
}

func (p point) rule() string { return fmt.Sprintf("%s=kill@%d", p.name, p.nth) }

// run is one rotation in its own root, copied from the fixture.
type run struct {
	t        *testing.T
	b        binaries
	f        *fixture
	scenario string
	layout   paths.Layout
	base     []string // environment of every process
	daemon   *proc
	apps     []*proc
	kill     *point
	traceDir string // set: record the points every process reaches
	fpLog    string
	set      bool // the officer activated the new master keys
	// notReached: the tool's pass point was not hit as often as the
	// kill asked (fewer batches than in the trace); the run went on
	// without a kill.
	notReached bool
	restarts   int // daemon restarts
	cmds       []string
}

func newRun(t *testing.T, b binaries, f *fixture, scenario string, kill *point, trace bool) *run {
	root := f.root.Copy(t).Layout.Root
	r := &run{t: t, b: b, f: f, scenario: scenario, layout: paths.Layout{Root: root}, kill: kill,
		fpLog: filepath.Join(root, "failpoints.log")}
	r.base = append(os.Environ(), paths.EnvRoot+"="+root, failpoint.EnvLog+"="+r.fpLog, "GOMAXPROCS=1")
	if trace {
		r.traceDir = filepath.Join(root, "trace")
		must(t, os.Mkdir(r.traceDir, 0o755))
	}
	return r
}

// env is the environment of one process: the kill rule if the point is
// in it, and the trace file.
func (r *run) env(proc string, step int, extra ...string) []string {
	rules := slices.Clone(extra)
	if k := r.kill; k != nil && k.proc == proc && (proc != "cli" || k.step == step) {
		rules = append(rules, k.rule())
	}
	env := envWith(r.base, specWith(rules...))
	if r.traceDir != "" {
		env = append(env, failpoint.EnvTrace+"="+filepath.Join(r.traceDir, fmt.Sprintf("%s-%d", proc, step)))
	}
	return env
}

func (r *run) startDaemon() {
	r.t.Helper()
	n := r.restarts
	env := r.env("daemon", n)
	if n > 0 {
		env = envWith(r.base) // systemd restarts it; the kill was the point
		if r.traceDir != "" {
			env = append(env, failpoint.EnvTrace+"="+filepath.Join(r.traceDir, fmt.Sprintf("daemon-%d", n)))
		}
	}
	r.daemon = start(r.t, "pkcshsmd", env, "", r.b.daemon, "--log-format", "text", "--log-level", "warn")
	waitFor(r.t, "pkcshsmd to answer", func() (bool, error) {
		if r.daemon.Exited() {
			return false, fmt.Errorf("pkcshsmd exited: %v\n%s", r.daemon.Err(), r.daemon.Log.String())
		}
		n, err := connected(r.layout)
		return n >= 0, err
	})
}

// startApps starts n applications and waits until the daemon serves them.
func (r *run) startApps(n int) {
	r.t.Helper()
	for i := range n {
		ready := filepath.Join(r.layout.Root, fmt.Sprintf("app%d.ready", i))
		env := r.env("agent", i)
		if i > 0 {
			env = envWith(r.base) // only the first application carries agent points
		}
		app := start(r.t, fmt.Sprintf("p11load %d", i), env, userPIN+"\n", r.b.load, "-slots", "2,4", "-pause", "2ms",
			"-ready", ready, "-report", filepath.Join(r.layout.Root, fmt.Sprintf("app%d.json", i)))
		r.apps = append(r.apps, app)
		waitFor(r.t, "p11load to set up its keys", func() (bool, error) {
			if app.Exited() {
				return false, fmt.Errorf("p11load exited: %v\n%s", app.Err(), app.Log.String())
			}
			_, err := os.Stat(ready)
			return err == nil, nil
		})
	}
	r.waitApps()
}

// waitApps waits until the daemon serves every application still alive.
func (r *run) waitApps() {
	r.t.Helper()
	alive := 0
	for _, a := range r.apps {
		if !a.Exited() {
			alive++
		}
	}
	waitFor(r.t, fmt.Sprintf("%d applications to connect to pkcshsmd", alive), func() (bool, error) {
		n, err := connected(r.layout)
		return n == alive, err
	})
}

// mk runs pkcshsm_mk_change; step is the scenario step (-1 during
// recovery, where no rule is armed).
func (r *run) mk(step int, args ...string) (code int, out string, killed bool) {
	r.t.Helper()
	var extra []string
	extra = append(extra, pageRule)
	if r.scenario == "rollback" && step == 0 {
		extra = append(extra, rollbackRule)
	}
	env := envWith(r.base, specWith(pageRule))
	if step >= 0 {
		env = r.env("cli", step, extra...)
	} else if r.traceDir != "" {
		env = append(env, failpoint.EnvTrace+"="+filepath.Join(r.traceDir, fmt.Sprintf("recovery-%d", len(r.cmds))))
	}
	r.cmds = append(r.cmds, strings.Join(args, " "))
	p := start(r.t, "pkcshsm_mk_change", env, strings.Repeat(userPIN+"\n", len(slots)), append([]string{r.b.mk}, args...)...)
	<-p.Done()
	code = 0
	if p.Err() != nil {
		code = -1
		if ee, ok := p.Err().(interface{ ExitCode() int }); ok {
			code = ee.ExitCode()
		}
	}
	return code, p.Log.String(), killedBySIGKILL(p.Err())
}

// officerSet activates the new master keys on every APQN.
func (r *run) officerSet() {
	r.t.Helper()
	h, err := sim.Open(r.layout.SimDir(), sim.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	for _, q := range ccaQ {
		for _, typ := range []mkvp.Type{mkvp.CCAAES, mkvp.CCAAPKA} {
			must(r.t, h.Set(ctx, q, typ))
		}
	}
	for _, q := range ep11Q {
		must(r.t, h.Set(ctx, q, mkvp.EP11WK))
	}
	r.set = true
}

var createdRE = regexp.MustCompile(`Master key change operation '([A-Za-z0-9]{6})' created`)

// scenarioSteps runs the scenario until a step fails or is killed. It
// returns the operation id if reencipher printed one.
func (r *run) scenarioSteps() (id string, stoppedAt int, out string) {
	r.t.Helper()
	for i, step := range scenarios[r.scenario] {
		var code int
		var killed bool
		switch step {
		case "set":
			r.officerSet()
			continue
		case "reencipher":
			code, out, killed = r.mk(i, append([]string{"reencipher"}, r.f.mkArgs...)...)
			if m := createdRE.FindStringSubmatch(out); m != nil {
				id = m[1]
			}
		default:
			if id == "" {
				r.t.Fatalf("no operation id for %s", step)
			}
			code, out, killed = r.mk(i, step, "--id", id)
		}
		if k := r.kill; k != nil && k.proc == "cli" && k.step == i && !killed {
			// How many batches a pass has depends on the token keys the
			// applications made meanwhile: a late hit of a pass point may
			// not come in this run. do retries at the last hit there was.
			if strings.HasPrefix(k.name, "cli.pass.") && (code == 0 || r.scenario == "rollback") {
				r.notReached = true
			} else {
				r.t.Fatalf("%s was not killed at %s: exit %d\n%s", step, k.name, code, out)
			}
		}
		if code != 0 {
			if r.kill == nil && !(r.scenario == "rollback" && step == "reencipher") {
				r.t.Fatalf("%s without a kill: exit %d\n%s", step, code, out)
			}
			return id, i, out
		}
		// Daemon or application points: the command went on; the
		// process it reached died there.
	}
	return id, len(scenarios[r.scenario]), out
}

// listed is what list --json says of one operation.
type listed struct {
	ID           string    `json:"id"`
	State        string    `json:"state"`
	Next         *[]string `json:"next"`
	SetLosesKeys *bool     `json:"set_loses_keys"`
}

func (r *run) list() ([]listed, string) {
	r.t.Helper()
	code, out, _ := r.mk(-1, "list", "--json")
	if code != 0 {
		r.t.Fatalf("list --json: exit %d\n%s", code, out)
	}
	var ops []listed
	if err := json.Unmarshal([]byte(out), &ops); err != nil {
		r.t.Fatalf("list --json: %v\n%s", err, out)
	}
	code, text, _ := r.mk(-1, "list")
	if code != 0 {
		r.t.Fatalf("list: exit %d\n%s", code, text)
	}
	return ops, text
}

// recover completes the operation the way list advises, as an operator
// would: until list shows no operation, run the command it names. Where
// list offers finalize or cancel (REENCIPHERED: it depends on what the
// officer did), see below; the officer activates the new keys only when
// list does not warn that this would lose keys.
func (r *run) recover() {
	r.t.Helper()
	for iter := 0; ; iter++ {
		if iter == 8 {
			r.t.Fatalf("the operation is not complete after %d commands: %v", iter, r.cmds)
		}
		if r.daemon.Exited() {
			// systemd restarts the daemon (Restart=on-failure).
			r.restarts++
			r.startDaemon()
			r.waitApps()
		}
		ops, text := r.list()
		if len(ops) == 0 {
			// With no operation, list may still warn that a loaded NEW
			// register would lose keys if set (issue 16), never more.
			if strings.Contains(text, "Operation:") {
				r.t.Fatalf("list --json shows no operation, list shows:\n%s", text)
			}
			return
		}
		if len(ops) != 1 {
			r.t.Fatalf("%d operations listed", len(ops))
		}
		op := ops[0]
		if op.Next == nil || op.SetLosesKeys == nil {
			r.t.Fatalf("list --json does not advise (no \"next\" or \"set_loses_keys\"):\n%+v", op)
		}
		next := *op.Next
		if len(next) == 0 {
			r.t.Fatalf("list advises nothing for operation %s in state %s", op.ID, op.State)
		}
		for _, c := range next {
			if want := fmt.Sprintf("pkcshsm_mk_change %s --id %s", c, op.ID); !strings.Contains(text, want) {
				r.t.Fatalf("list --json advises %v, but list does not say %q:\n%s", next, want, text)
			}
		}
		if *op.SetLosesKeys && !strings.Contains(text, "DO NOT SET") {
			r.t.Fatalf("list --json says setting the new keys loses keys, list does not warn:\n%s", text)
		}
		// Where list offers both, the operator takes the riskier way
		// whenever list calls it safe: the officer activates the new keys
		// and finalize follows. A list that calls the activation safe
		// while keys lack their new blob (an interrupted cancel that
		// recorded nothing) is caught here.
		cmd := next[0]
		if len(next) > 1 {
			switch {
			case !slices.Contains(next, "finalize") || !slices.Contains(next, "cancel"):
				r.t.Fatalf("list offers %v", next)
			case r.set || !*op.SetLosesKeys:
				cmd = "finalize"
			default:
				cmd = "cancel"
			}
		}
		if cmd == "finalize" && !r.set {
			if *op.SetLosesKeys {
				r.t.Fatalf("list advises finalize while warning that setting the new keys loses keys:\n%s", text)
			}
			r.officerSet()
		}
		if cmd == "cancel" && r.set {
			r.t.Fatalf("list advises cancel after the officer activated the new master keys:\n%s", text)
		}
		code, out, _ := r.mk(-1, cmd, "--id", op.ID)
		if code != 0 {
			r.t.Logf("%s --id %s (advised in state %s): exit %d\n%s", cmd, op.ID, op.State, code, out)
		}
	}
}

// verified counts what the verification checked, over all runs.
var keysVerified, decrypted, kills atomic.Int64

// verify checks every operation file, the adapters, the applications'
// reports and every key.
func (r *run) verify(id string) {
	t := r.t
	t.Helper()
	ctx := context.Background()
	d, err := state.Open(r.layout.MKChangeDir(), state.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ops, broken, err := d.List(ctx)
	if err != nil || len(ops) != 0 || len(broken) != 0 {
		t.Fatalf("operation files left: %d active, %v broken, %v", len(ops), broken, err)
	}
	entries, skipped, err := d.History(ctx)
	if err != nil || skipped != 0 {
		t.Fatalf("history: %v (%d skipped)", err, skipped)
	}
	// The history names how the operation ended. A kill between the
	// history entry and the file's removal leaves the operation listed;
	// completing it again writes a second entry, which must agree on
	// whether the change happened (a rollback completed by cancel is
	// "rolled-back" then "canceled"). A kill before the file was created
	// leaves no operation and no entry: nothing changed.
	outcome := state.Outcome("never created")
	for i, e := range entries {
		if e.Op == nil || id != "" && string(e.Op.ID) != id || i > 0 && (e.Outcome == state.Finalized) != (outcome == state.Finalized) {
			t.Fatalf("history entry %d: %+v; want operation %q, outcome like %s", i, e, id, outcome)
		}
		outcome, id = e.Outcome, string(e.Op.ID)
	}
	if len(entries) == 0 && (id != "" || r.kill == nil || r.kill.step != 0) {
		t.Fatalf("no history entry for operation %q", id)
	}
	if len(entries) > 1 {
		t.Logf("history: %d entries for operation %s (%s)", len(entries), id, outcome)
	}
	finalized := outcome == state.Finalized
	switch {
	case finalized && !r.set:
		t.Fatal("finalized without the officer activating the new master keys")
	case !finalized && r.set:
		t.Fatalf("%s after the officer activated the new master keys: keys are lost", outcome)
	case r.scenario == "rollback" && r.kill == nil && outcome != state.RolledBack:
		t.Fatalf("rollback scenario ended %s", outcome)
	}
	want := r.f.oldP
	if finalized {
		want = r.f.newP
	}
	h, err := sim.Open(r.layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append(slices.Clone(ccaQ), ep11Q...) {
		qi, err := h.Queue(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for typ, p := range want {
			if regs, ok := qi.MK[typ]; ok && regs.Current.Pattern != p {
				t.Fatalf("APQN %s %s CURRENT %s, want %s", q, typ, regs.Current.Pattern, p)
			}
		}
	}
	h.Close()

	// The applications: the ones alive stop cleanly, with no failed
	// operation, and decrypt what they encrypted at start with their
	// session and token keys.
	for i, a := range r.apps {
		if a.Exited() {
			if r.kill != nil && r.kill.proc == "agent" && i == 0 && killedBySIGKILL(a.Err()) {
				continue
			}
			t.Fatalf("%s ended early: %v\n%s", a.name, a.Err(), a.Log.String())
		}
		a.Cmd.Process.Signal(syscall.SIGTERM)
		<-a.Done()
		if a.Err() != nil {
			t.Fatalf("%s: %v\n%s", a.name, a.Err(), a.Log.String())
		}
		var rep struct {
			Ops, Failed int
			Slots       []struct {
				Verified int `json:"ciphertexts_verified"`
			}
		}
		b, err := os.ReadFile(filepath.Join(r.layout.Root, fmt.Sprintf("app%d.json", i)))
		if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		if err != nil {
			t.Fatal(err)
		}
		v := 0
		for _, s := range rep.Slots {
			v += s.Verified
		}
		if rep.Failed != 0 || rep.Ops == 0 || v != 2*len(slots) {
			t.Fatalf("%s: %d operations, %d failed, %d of %d start samples verified\n%s", a.name, rep.Ops, rep.Failed, v, 2*len(slots), a.Log.String())
		}
	}

	// Every key: the ones from before by handle, with the blob of
	// before kept in OLD after a finalize; every other (made by the
	// applications during the change) under the expected master key.
	for _, slot := range slots {
		now := map[uint]keyRow{}
		for _, k := range listKeys(t, r.b, r.layout.Root, slot) {
			now[k.Handle] = k
			typ := k.mkType(t)
			if k.Blobs.Current.MKVP != want[typ].String() {
				t.Errorf("slot %d key %d (%s %q): CURRENT under %s %s, want %s", slot, k.Handle, k.Class, k.Label, typ, k.Blobs.Current.MKVP, want[typ])
			}
			if k.Blobs.Reenc != nil {
				t.Errorf("slot %d key %d (%q): REENC blob left (%s)", slot, k.Handle, k.Label, k.Blobs.Reenc.MKVP)
			}
			if o := k.Blobs.Old; o != nil && (!finalized || o.MKVP != r.f.oldP[typ].String() || o.MKType != k.Blobs.Current.MKType) {
				t.Errorf("slot %d key %d (%q): OLD blob %+v after %s", slot, k.Handle, k.Label, *o, outcome)
			}
		}
		for _, was := range r.f.before[slot] {
			k, ok := now[was.Handle]
			if !ok || k.Label != was.Label || k.Class != was.Class {
				t.Errorf("slot %d: key %d (%s %q) from before the change is gone (now %+v)", slot, was.Handle, was.Class, was.Label, k)
				continue
			}
			keysVerified.Add(1)
			switch {
			case finalized && (k.Blobs.Old == nil || *k.Blobs.Old != *was.Blobs.Current):
				t.Errorf("slot %d key %d (%q): OLD %+v, want the blob of before the change %+v", slot, k.Handle, k.Label, k.Blobs.Old, *was.Blobs.Current)
			case !finalized && (k.Blobs.Old != nil || *k.Blobs.Current != *was.Blobs.Current):
				t.Errorf("slot %d key %d (%q) after %s: %+v, want %+v as before", slot, k.Handle, k.Label, outcome, k.Blobs, was.Blobs)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Data encrypted before decrypts; the EC key pair still signs and
	// verifies.
	lib, err := tokenlib.Open(tokenlib.Options{Layout: r.layout, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	for _, slot := range slots {
		s, err := lib.OpenSession(tokenlib.SlotID(slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
		must(t, err)
		must(t, lib.Login(s, ck.CKU_USER, []byte(userPIN)))
		find := func(label string, class ck.ObjectClass) tokenlib.ObjectHandle {
			must(t, lib.FindObjectsInit(s, []tokenlib.Attribute{tokenlib.String(ck.CKA_LABEL, label), tokenlib.Ulong(ck.CKA_CLASS, uint(class))}))
			hs, err := lib.FindObjects(s, 2)
			must(t, err)
			must(t, lib.FindObjectsFinal(s))
			if len(hs) != 1 {
				t.Fatalf("slot %d: %d keys %q", slot, len(hs), label)
			}
			return hs[0]
		}
		for _, smp := range r.f.samples {
			if smp.slot != slot {
				continue
			}
			pt, err := decrypt(lib, s, find(smp.label, ck.CKO_SECRET_KEY), smp.iv, smp.ct)
			if err != nil || !bytes.Equal(pt, plain) {
				t.Fatalf("slot %d: data encrypted before with %q (private %v) does not decrypt: %v", slot, smp.label, smp.isPrivate, err)
			}
			decrypted.Add(1)
		}
		digest := sha256.Sum256(plain)
		must(t, lib.SignInit(s, tokenlib.Mechanism{Type: ck.CKM_ECDSA}, find("ec", ck.CKO_PRIVATE_KEY)))
		sig := make([]byte, 64)
		n, err := lib.Sign(s, digest[:], sig)
		if err != nil {
			t.Fatalf("slot %d: EC sign: %v", slot, err)
		}
		must(t, lib.VerifyInit(s, tokenlib.Mechanism{Type: ck.CKM_ECDSA}, find("ec", ck.CKO_PUBLIC_KEY)))
		if err := lib.Verify(s, digest[:], sig[:n]); err != nil {
			t.Fatalf("slot %d: EC verify: %v", slot, err)
		}
		lib.CloseSession(s)
	}
}

// do runs one rotation of the scenario, with the kill if any, completes
// it as list advises and verifies it.
func (r *run) do() {
	t := r.t
	t.Helper()
	r.startDaemon()
	apps := 1
	if r.kill != nil && r.kill.proc == "agent" {
		apps = 2 // one to kill, one that must go on
	}
	r.startApps(apps)
	id, _, _ := r.scenarioSteps()
	if k := r.kill; k != nil && !r.notReached {
		var fired []string // the injected error of the rollback scenario aside
		for _, f := range firedAt(t, r.fpLog) {
			if !strings.HasSuffix(f, " error") {
				fired = append(fired, f)
			}
		}
		if !slices.Equal(fired, []string{k.name + " kill"}) {
			t.Fatalf("failpoint log %v, want one kill at %s", fired, k.name)
		}
		switch k.proc {
		case "daemon":
			<-r.daemon.Done()
			if !killedBySIGKILL(r.daemon.Err()) {
				t.Fatalf("pkcshsmd ended with %v, not by its kill", r.daemon.Err())
			}
		case "agent":
			<-r.apps[0].Done()
			if !killedBySIGKILL(r.apps[0].Err()) {
				t.Fatalf("p11load ended with %v, not by its kill", r.apps[0].Err())
			}
		}
		kills.Add(1)
	}
	r.recover()
	r.verify(id)
}

// trace runs the scenario without a kill and returns, per process, the
// points it passed in order.
func trace(t *testing.T, b binaries, f *fixture, scenario string) map[string][]string {
	r := newRun(t, b, f, scenario, nil, true)
	r.do()
	out := map[string][]string{}
	entries, err := os.ReadDir(r.traceDir)
	must(t, err)
	for _, e := range entries {
		out[e.Name()] = traceNames(t, filepath.Join(r.traceDir, e.Name()))
	}
	return out
}

// points turns the traces into kill points: per process and name, every
// hit (all), or else for the tool the middle one (the middle batch of a
// pass, the middle write of a command) and for the daemon and the
// applications every event.
func points(scenario string, traces map[string][]string, all bool) []point {
	var out []point
	for file, names := range traces {
		proc, n, _ := strings.Cut(file, "-")
		step := atoi(n)
		switch {
		case proc == "cli":
		case proc == "daemon" && step == 0, proc == "agent" && step == 0:
		default:
			continue // recovery commands, restarted daemons, other applications
		}
		count := map[string]int{}
		var order []string
		for _, name := range names {
			if count[name] == 0 {
				order = append(order, name)
			}
			count[name]++
		}
		for _, name := range order {
			if all || proc != "cli" {
				for k := 1; k <= count[name]; k++ {
					out = append(out, point{scenario, proc, step, name, k})
				}
			} else {
				out = append(out, point{scenario, proc, step, name, (count[name] + 1) / 2})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// sourcePoints lists the failpoint names in the module's code: literal
// names, and the literal prefix of names built at run time.
func sourcePoints(t *testing.T) (literal, prefixes []string) {
	root := filepath.Join("..", "..", "..")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.Contains(p, "failpoint"+string(filepath.Separator)) {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Hit" && sel.Sel.Name != "Err") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "failpoint" {
				return true
			}
			arg := call.Args[0]
			if lit, ok := arg.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				literal = append(literal, s)
				return true
			}
			for descend := true; descend; {
				switch x := arg.(type) {
				case *ast.BinaryExpr: // "prefix." + name
					arg = x.X
				case *ast.CallExpr: // strings.TrimSuffix("prefix."+name, ".")
					if len(x.Args) == 0 {
						descend = false
					} else {
						arg = x.Args[0]
					}
				default:
					descend = false
				}
			}
			if lit, ok := arg.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				prefixes = append(prefixes, s)
			} else {
				t.Errorf("%s:%d: a failpoint name must start with a string literal", p, fset.Position(call.Pos()).Line)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return literal, prefixes
}

// TestCrashMatrix kills the process at each failpoint of every scenario
// and checks that the operation, completed as list advises, loses no key.
// CRASH_SWEEP=1 (scripts/crash-sweep.sh) kills at every hit of every point,
// with CRASH_KEYS extra keys per token.
func TestCrashMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs a rotation per point")
	}
	sweep := os.Getenv("CRASH_SWEEP") == "1"
	extra := 2
	if n, err := strconv.Atoi(os.Getenv("CRASH_KEYS")); err == nil && n >= 0 {
		extra = n
	}
	b := build(t)
	f := newFixture(t, b, extra)

	// A run of each scenario without a kill: the baseline, and the
	// points each process passes.
	traces := map[string]map[string][]string{}
	for _, sc := range scenarioOrder {
		t.Run("trace/"+sc, func(t *testing.T) { traces[sc] = trace(t, b, f, sc) })
	}
	if t.Failed() {
		return
	}
	var matrix []point
	seen := map[string]string{} // kill → the scenario that has it
	reached := map[string]bool{}
	for _, sc := range scenarioOrder {
		for _, p := range points(sc, traces[sc], sweep) {
			reached[p.name] = true
			if sc == "rollback" && p.name+"=error@2" == rollbackRule {
				continue // the point that fails the rollback scenario's reencipher
			}
			// The per-commit run does not repeat a kill: the reencipher of
			// the other scenarios is the finalize one's, and so is the
			// daemons' and applications' handling of its event (the
			// first); the rollback's cancel event is the cancel one's.
			key := fmt.Sprintf("%s/%s@%d", p.proc, p.name, p.nth)
			switch {
			case p.proc == "cli":
				key = fmt.Sprintf("%s/%s/%s", p.proc, scenarios[p.scenario][p.step], p.name)
			case p.nth > 1 && p.scenario == "finalize":
				key = "finalize/" + key
			}
			if first, ok := seen[key]; ok && first != sc && !sweep {
				continue
			}
			seen[key] = sc
			matrix = append(matrix, p)
		}
	}
	literal, prefixes := sourcePoints(t)
	var unreached []string
	for _, name := range literal {
		if !reached[name] {
			unreached = append(unreached, name)
		}
	}
	for _, pre := range prefixes {
		found := false
		for name := range reached {
			found = found || strings.HasPrefix(name, pre)
		}
		if !found {
			unreached = append(unreached, pre+"…")
		}
	}
	if len(unreached) > 0 {
		msg := fmt.Sprintf("failpoints in the code that no scenario reaches: %v", unreached)
		if sweep {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}
	names := map[string]bool{}
	for _, p := range matrix {
		names[p.name] = true
	}
	t.Logf("crash matrix: %d distinct points reached (%d call sites in the code), %d kills to run", len(reached), len(literal)+len(prefixes), len(matrix))
	t.Run("kill", func(t *testing.T) {
		for _, p := range matrix {
			t.Run(p.String(), func(t *testing.T) {
				t.Parallel()
				// A pass point's late hits may not come in a run with fewer
				// batches (the applications made fewer token keys): then
				// kill at the last hit that run had, a few times at most.
				k := p
				for attempt := 0; ; attempt++ {
					r := newRun(t, b, f, k.scenario, &k, strings.HasPrefix(k.name, "cli.pass."))
					r.do()
					if !r.notReached {
						return
					}
					hits := 0
					for _, n := range traceNames(t, filepath.Join(r.traceDir, fmt.Sprintf("cli-%d", k.step))) {
						if n == k.name {
							hits++
						}
					}
					if hits == 0 || hits >= k.nth || attempt == 4 {
						t.Fatalf("%s: not killed, %d hits in attempt %d", k, hits, attempt+1)
					}
					t.Logf("%s: %d hits in this run, killing at the last", k, hits)
					k.nth = hits
				}
			})
		}
	})
	t.Logf("crash matrix: %d kills run at %d distinct points, %d keys from before verified, %d decryptions of data encrypted before",
		kills.Load(), len(names), keysVerified.Load(), decrypted.Load())
}
