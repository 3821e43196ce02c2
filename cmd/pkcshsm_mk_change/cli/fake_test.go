package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

// fakeTokens is a token library with scripted answers. It records every
// call that would change a token.
type fakeTokens struct {
	mu       sync.Mutex
	slots    []Slot
	pins     map[uint]string
	queryErr map[uint]error // per slot
	affected map[uint]bool  // per slot; default true
	current  map[uint]map[mkvp.Type]mkvp.Pattern
	passErr  map[state.Action]error // fail passes of this action
	calls    []string               // "login 2", "pass reencipher 2" ...
	queues   []hsm.QueueInfo        // the AP bus
	// queryHook, if set, is called with the number of the Query call (from
	// 1) and may fail it.
	queryHook func(n int) error
	queries   int
	// census holds scripted readiness answers per slot (default: not
	// affected, nothing missing).
	census map[uint]CensusResult
	// heldPINs are the PIN slices Login was given, not copies: the test
	// checks that the caller wiped them after use.
	heldPINs [][]byte
	// checkErr and lost script Check per slot.
	checkErr map[uint]error
	lost     map[uint][]string
}

func newFakeTokens() *fakeTokens {
	return &fakeTokens{
		slots: []Slot{
			{ID: 2, Present: true, Label: "cca", Serial: "CCA0001", Type: "cca"},
			{ID: 4, Present: true, Label: "ep11", Serial: "EP110001", Type: "ep11"},
		},
		pins:     map[uint]string{2: "1234", 4: "5678"},
		queryErr: map[uint]error{},
		affected: map[uint]bool{},
		current:  map[uint]map[mkvp.Type]mkvp.Pattern{},
		passErr:  map[state.Action]error{},
		queues:   busOf("01.0033", "02.0033", "03.0033", "06.0033", "0e.0033"),
	}
}

// busOf returns online queues.
func busOf(ids ...string) []hsm.QueueInfo {
	var out []hsm.QueueInfo
	for _, s := range ids {
		out = append(out, hsm.QueueInfo{ID: apqn.MustParse(s), Online: true})
	}
	return out
}

func (f *fakeTokens) Census(_ context.Context, slot uint, _ apqn.List, _ map[mkvp.Type]mkvp.Pattern) (CensusResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.census[slot], nil
}

func (f *fakeTokens) LastPass(context.Context, uint) (LastPass, bool, error) {
	return LastPass{}, false, nil
}

func (f *fakeTokens) Queues(context.Context) ([]hsm.QueueInfo, error) { return f.queues, nil }

func (f *fakeTokens) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeTokens) Slots(context.Context) ([]Slot, error) { return f.slots, nil }

func (f *fakeTokens) Query(_ context.Context, slot uint, op *state.Op, a state.Action) (QueryResult, error) {
	if err := f.queryErr[slot]; err != nil {
		return QueryResult{}, err
	}
	f.mu.Lock()
	f.queries++
	n := f.queries
	f.mu.Unlock()
	if f.queryHook != nil {
		if err := f.queryHook(n); err != nil {
			return QueryResult{}, err
		}
	}
	aff, set := f.affected[slot]
	if !set {
		// By default a CCA token takes part in CCA SYM/AES/APKA changes and
		// an EP11 token in EP11 changes.
		for t := range op.New {
			if (t == mkvp.EP11WK) == (slot == 4) && t != mkvp.CCAASYM {
				aff = true
			}
		}
	}
	return QueryResult{Affected: aff, Current: f.current[slot]}, nil
}

func (f *fakeTokens) Login(_ context.Context, slot uint, pin []byte) error {
	f.mu.Lock()
	f.heldPINs = append(f.heldPINs, pin)
	f.mu.Unlock()
	if string(pin) != f.pins[slot] {
		return errclass.New(errclass.PermissionDenied, "PIN incorrect")
	}
	f.record("login %d", slot)
	return nil
}

func (f *fakeTokens) Check(_ context.Context, slot uint, op *state.Op, current map[mkvp.Type]mkvp.Pattern) ([]string, int, error) {
	f.record("check %d", slot)
	if err := f.checkErr[slot]; err != nil {
		return nil, 0, err
	}
	return f.lost[slot], len(f.lost[slot]), nil
}

func (f *fakeTokens) CheckStore(_ context.Context, slot uint) error {
	f.record("check-store %d", slot)
	return f.checkErr[slot]
}

func (f *fakeTokens) Pass(_ context.Context, slot uint, op *state.Op, a state.Action, progress Progress) (int, error) {
	if err := f.passErr[a]; err != nil && slot == 2 {
		return 0, err
	}
	progress(3, 3)
	f.record("pass %s %d", a, slot)
	return 3, nil
}

func (f *fakeTokens) Close() error { return nil }

func (f *fakeTokens) mutations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, "pass") {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// fakeDaemon answers broadcasts with a scripted account.
type fakeDaemon struct {
	mu       sync.Mutex
	events   []event.Event
	outcomes map[string][]event.ProcessResult // by event type
	dialErr  error
}

func (d *fakeDaemon) Broadcast(_ context.Context, ev event.Event) (event.Account, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, ev)
	procs := d.outcomes[ev.Type]
	if procs == nil {
		procs = []event.ProcessResult{{PID: 4242, Program: "app", Outcome: event.Replied,
			Results: []event.TokenResult{{Slot: 2, Result: event.Affected, Objects: 5}}}}
	}
	return event.Account{EventID: "e1", Type: ev.Type, Processes: procs}, nil
}

func (d *fakeDaemon) Close() error { return nil }

func (d *fakeDaemon) types() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, e := range d.events {
		out = append(out, e.Type)
	}
	return out
}

type env struct {
	t      *testing.T
	root   string
	tokens *fakeTokens
	daemon *fakeDaemon
	stdin  string
}

func newEnv(t *testing.T) *env {
	return &env{t: t, root: t.TempDir(), tokens: newFakeTokens(), daemon: &fakeDaemon{}}
}

func (e *env) layout() paths.Layout { return paths.Layout{Root: e.root} }

func (e *env) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	deps := Deps{
		Stdin:  strings.NewReader(e.stdin),
		Stdout: &out, Stderr: &errb,
		Layout: e.layout(),
		OpenTokens: func(context.Context, zerolog.Logger, string) (Tokens, error) {
			return e.tokens, nil
		},
		DialAdmin: func(context.Context, string, string) (Broadcaster, error) {
			if e.daemon.dialErr != nil {
				return nil, e.daemon.dialErr
			}
			return e.daemon, nil
		},
		Now:      func() time.Time { return time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC) },
		UserName: "admin",
	}
	code = Main(deps, args)
	return code, out.String(), errb.String()
}

// ops returns the stored operations.
func (e *env) ops() []*state.Op {
	d, err := state.Open(e.layout().MKChangeDir(), state.Options{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	ops, broken, err := d.List(context.Background())
	if err != nil || len(broken) > 0 {
		e.t.Fatalf("list: %v %v", broken, err)
	}
	return ops
}

// snapshot returns every file below the state directory with its content.
func (e *env) snapshot() map[string]string {
	out := map[string]string{}
	dir := e.layout().MKChangeDir()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			out[strings.TrimPrefix(p, dir)] = string(b)
		}
		return nil
	})
	return out
}

func mustPattern(t testing.TB, typ mkvp.Type, s string) mkvp.Pattern {
	p, _, err := mkvp.Parse(typ, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
