package sim

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
)

var (
	_ hsm.Backend = (*HSM)(nil)
	_ hsm.Officer = (*HSM)(nil)
)

// Options configure an opened simulator.
type Options struct {
	// Logger receives debug records of state reloads and officer steps;
	// the zero Logger discards them. Key material is never logged.
	Logger zerolog.Logger
}

// HSM is an opened simulator. It is safe for concurrent use by many
// goroutines; many processes may open the same directory.
type HSM struct {
	dir  string
	log  zerolog.Logger
	gen  *genCounter
	eng  *adapterClock
	snap atomic.Pointer[snapshot]

	reloadMu sync.Mutex // serialises reloads in this process
	writeMu  sync.Mutex // serialises writers in this process (flock does across processes)
}

// snapshot is an immutable, decoded state with what operations need ready:
// patterns and sealing keys of every loaded register.
type snapshot struct {
	seen   uint64 // generation counter value observed before the file was read
	st     *stateFile
	queues map[apqn.ID]*queueRT
}

type queueRT struct {
	q    *queueState
	qi   int // index in the state's queue list: the APQN's engine slots
	info hsm.QueueInfo
	mk   map[mkvp.Type]*mkRegs
	// sessions maps the session fields of the logged-in EP11 sessions
	// under the CURRENT wrapping key to their secrets.
	sessions map[[hsm.SessionIDSize]byte][]byte
	// opened caches the private keys opened on this APQN (see keycache.go).
	// It belongs to the snapshot: any change of the state — a register
	// loaded, set or cleared, a session logged in or out — makes a new
	// snapshot with an empty cache.
	opened keyCache
}

// mkRegs are the loaded registers of one master key type; nil = not loaded.
type mkRegs struct {
	cur, old, new *mkKey
}

type mkKey struct {
	key     []byte
	pattern mkvp.Pattern
	aead    cipher.AEAD
}

// Open opens the simulator in dir (created by [Init]).
func Open(dir string, opts Options) (*HSM, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); errors.Is(err, fs.ErrNotExist) {
		return nil, errclass.Newh(errclass.NotFound,
			"create it with `hsmsim init`, or point PKCSHSM_ROOT / --dir at an existing one",
			"no simulator in %s", dir)
	}
	g, err := openGen(filepath.Join(dir, genName))
	if err != nil {
		return nil, err
	}
	h := &HSM{dir: dir, log: opts.Logger, gen: g}
	s, err := h.view()
	if err != nil {
		g.close()
		return nil, err
	}
	if h.eng, err = openAdapter(filepath.Join(dir, adapterName), max(len(s.st.Queues), 16)); err != nil {
		g.close()
		return nil, err
	}
	return h, nil
}

// OpenDefault opens the simulator where the tokens look for it:
// paths.FromEnv().SimDir(), i.e. $PKCSHSM_ROOT/var/lib/pkcshsm/sim.
func OpenDefault(opts Options) (*HSM, error) {
	return Open(paths.FromEnv().SimDir(), opts)
}

// Close releases the mapping of the generation counter. The HSM must not
// be used afterwards.
func (h *HSM) Close() error {
	err := h.eng.close()
	if gerr := h.gen.close(); gerr != nil {
		err = gerr
	}
	return err
}

// Dir is the simulator directory.
func (h *HSM) Dir() string { return h.dir }

// SysfsRoot is the root of the sysfs view, for apqn.Bus.
func (h *HSM) SysfsRoot() string { return filepath.Join(h.dir, sysName) }

// view returns the current snapshot, reloading the state file only when
// the generation counter moved since it was last read.
func (h *HSM) view() (*snapshot, error) {
	g := h.gen.load()
	if s := h.snap.Load(); s != nil && s.seen == g {
		return s, nil
	}
	h.reloadMu.Lock()
	defer h.reloadMu.Unlock()
	g = h.gen.load()
	if s := h.snap.Load(); s != nil && s.seen == g {
		return s, nil
	}
	// Read after loading g: writers bump after the rename, so this file is
	// at least as new as generation g.
	st, err := readState(h.dir)
	if err != nil {
		return nil, err
	}
	s := buildSnapshot(st, g)
	h.snap.Store(s)
	h.log.Debug().Uint64("generation", g).Msg("simulator state loaded")
	return s, nil
}

func readState(dir string) (*stateFile, error) {
	path := filepath.Join(dir, stateFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, ioErr(err, "read simulator state %s", path)
	}
	return decodeState(path, raw)
}

func buildSnapshot(st *stateFile, seen uint64) *snapshot {
	s := &snapshot{seen: seen, st: st, queues: make(map[apqn.ID]*queueRT, len(st.Queues))}
	for i := range st.Queues {
		q := &st.Queues[i]
		rt := &queueRT{q: q, qi: i, mk: map[mkvp.Type]*mkRegs{}}
		rt.info = hsm.QueueInfo{ID: q.ID, Mode: apqn.Mode(q.Mode), Online: q.Online && !q.Chkstop,
			MK: map[mkvp.Type]hsm.Registers{}}
		for t, r := range q.Registers {
			regs := &mkRegs{}
			mk := func(reg register, usable bool) (*mkKey, hsm.Register) {
				out := hsm.Register{State: reg.State.st()}
				if !usable {
					return nil, out
				}
				k := &mkKey{key: reg.Key, pattern: PatternOf(t, reg.Key), aead: sealer(t, reg.Key)}
				out.Pattern = k.pattern
				return k, out
			}
			var info hsm.Registers
			regs.cur, info.Current = mk(r.Current, r.Current.State.st() == apqn.StateValid)
			if t != mkvp.EP11WK {
				regs.old, info.Old = mk(r.Old, r.Old.State.st() == apqn.StateValid)
			}
			ns := r.New.State.st()
			regs.new, info.New = mk(r.New, ns == apqn.StateFull || ns == apqn.StateUncommitted || ns == apqn.StateCommitted)
			rt.mk[t] = regs
			rt.info.MK[t] = info
			if t == mkvp.EP11WK {
				rt.sessions = sessionFields(q, regs.cur)
			}
		}
		s.queues[q.ID] = rt
	}
	return s
}

// Queues lists every APQN in ascending order.
func (h *HSM) Queues(ctx context.Context) ([]hsm.QueueInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(err)
	}
	s, err := h.view()
	if err != nil {
		return nil, err
	}
	out := make([]hsm.QueueInfo, 0, len(s.st.Queues))
	for _, q := range s.st.Queues {
		out = append(out, copyInfo(s.queues[q.ID].info))
	}
	return out, nil
}

// Queue describes one APQN.
func (h *HSM) Queue(ctx context.Context, q apqn.ID) (hsm.QueueInfo, error) {
	if err := ctx.Err(); err != nil {
		return hsm.QueueInfo{}, ctxErr(err)
	}
	s, err := h.view()
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	rt, ok := s.queues[q]
	if !ok {
		return hsm.QueueInfo{}, noSuchAPQN(q)
	}
	return copyInfo(rt.info), nil
}

func copyInfo(i hsm.QueueInfo) hsm.QueueInfo {
	m := make(map[mkvp.Type]hsm.Registers, len(i.MK))
	for k, v := range i.MK {
		m[k] = v
	}
	i.MK = m
	return i
}

func noSuchAPQN(q apqn.ID) error {
	return errclass.Newh(errclass.NotFound, "list the simulated APQNs with `hsmsim show`",
		"APQN %s: %w", q, hsm.ErrNoSuchAPQN)
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errclass.New(errclass.DeadlineExceeded, "simulated adapter: %w", err)
	}
	return errclass.New(errclass.Aborted, "simulated adapter: %w", err)
}

// begin is the common entry of every backend operation on q: the current
// snapshot, the APQN, its availability and the injected faults.
func (h *HSM) begin(ctx context.Context, q apqn.ID) (*queueRT, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(err)
	}
	s, err := h.view()
	if err != nil {
		return nil, err
	}
	rt, ok := s.queues[q]
	if !ok {
		return nil, noSuchAPQN(q)
	}
	if err := offlineErr(rt.q); err != nil {
		return nil, err
	}
	f := rt.q.Faults
	if f.LatencyNS > 0 {
		// The adapter's time: queue for an engine, then the service time.
		// No lock is held while waiting.
		if err := waitUntil(ctx, h.eng.reserve(rt.qi, rt.q.Engines, f.LatencyNS)); err != nil {
			return nil, err
		}
	}
	if f.FailArmed {
		if err := h.consumeOp(ctx, q); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

func offlineErr(q *queueState) error {
	switch {
	case q.Chkstop:
		return errclass.Newh(errclass.Unavailable, "clear the fault with `hsmsim fault --clear "+q.ID.String()+"`",
			"APQN %s is checkstopped: %w", q.ID, hsm.ErrOffline)
	case !q.Online:
		return errclass.Newh(errclass.Unavailable, "bring it online with `hsmsim online "+q.ID.String()+"`",
			"APQN %s is offline: %w", q.ID, hsm.ErrOffline)
	}
	return nil
}

// consumeOp counts one operation against an armed fail-after fault; the
// count is shared by all processes, so it goes through the state file.
func (h *HSM) consumeOp(ctx context.Context, q apqn.ID) error {
	var fired bool
	err := h.mutate(ctx, func(st *stateFile) error {
		qs := st.queue(q)
		if qs == nil || !qs.Faults.FailArmed {
			return nil
		}
		if qs.Faults.FailAfter == 0 {
			fired = true
			return errNoChange
		}
		qs.Faults.FailAfter--
		return nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	if err != nil {
		return err
	}
	if fired {
		return errclass.Newh(errclass.Unavailable, "clear the fault with `hsmsim fault --clear "+q.String()+"`",
			"APQN %s failed (injected fault): %w", q, hsm.ErrOffline)
	}
	return nil
}

// lockCtx takes the exclusive lock; with a deadline or a cancelable
// context it polls, so a caller's bound on the wait holds.
func lockCtx(ctx context.Context, lk *flock.Flock) error {
	if ctx.Done() == nil {
		if err := lk.Lock(); err != nil {
			return ioErr(err, "lock %s", lk.Path())
		}
		return nil
	}
	ok, err := lk.TryLockContext(ctx, 2*time.Millisecond)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("waiting for the simulator lock %s: %w", lk.Path(), ctxErr(ctx.Err()))
	case err != nil:
		return ioErr(err, "lock %s", lk.Path())
	case !ok:
		return errclass.New(errclass.Unavailable, "could not lock %s", lk.Path())
	}
	return nil
}

// errNoChange makes mutate return without writing.
var errNoChange = errors.New("no change")

// mutate runs fn on a fresh copy of the state under the exclusive lock.
// If fn fails nothing is written; otherwise the new state is written
// atomically, the sysfs view rendered and the generation counter bumped,
// in that order, so a process that sees the new generation finds the new
// state.
func (h *HSM) mutate(ctx context.Context, fn func(st *stateFile) error) error {
	h.writeMu.Lock()
	defer h.writeMu.Unlock()
	lk := flock.New(filepath.Join(h.dir, lockName))
	if err := lockCtx(ctx, lk); err != nil {
		return err
	}
	defer lk.Unlock()
	cur, err := readState(h.dir)
	if err != nil {
		return err
	}
	next := cur.clone()
	if err := fn(next); err != nil {
		return err
	}
	raw, err := encodeState(next)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(h.dir, stateFileName), raw, 0o600, true); err != nil {
		return err
	}
	if err := renderSysfs(filepath.Join(h.dir, sysName), next); err != nil {
		return fmt.Errorf("state saved, but the sysfs view is stale: %w", err)
	}
	h.gen.bump()
	return nil
}
