package sim

import (
	"context"
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The adapter time model. A real Crypto Express adapter serves a request
// in some hundreds of microseconds and works on several requests at once
// (its engines); requests beyond them wait in the adapter's queue. The
// simulator models each APQN as E engines with a fixed service time S:
// a request takes the engine that frees first, starts when it is free (or
// at once), and completes S later. With E = 0 the APQN has no engine
// limit: every request just takes S.
//
// The engines are shared by every process that opens the simulator: the
// file dir/adapter is mapped shared and holds, per APQN and engine, the
// monotonic time (CLOCK_MONOTONIC, the same clock in every process) until
// which the engine is busy. A request reserves its slot with one
// compare-and-swap and no lock, so a stopped or killed process can hold an
// engine for at most the service time it reserved, never longer: no
// process can make another one wait on it the way a held lock would.

const (
	adapterName = "adapter"
	// MaxEngines bounds the engines of one APQN.
	MaxEngines = 64
	// slotBytes is the size of one engine's busy-until time.
	slotBytes = 8
)

// adapterClock is the mapped engine table.
type adapterClock struct {
	mem   []byte
	slots []uint64 // len = queues * MaxEngines
	local bool     // not shared (the file could not be mapped writable)
}

func adapterSize(queues int) int64 { return int64(queues) * MaxEngines * slotBytes }

// openAdapter maps dir/adapter, creating or growing it to hold queues
// APQNs. A process that may not write the simulator directory keeps a
// process-local table: the model then holds within that process only.
func openAdapter(path string, queues int) (*adapterClock, error) {
	want := adapterSize(queues)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if os.IsPermission(err) || errors.Is(err, unix.EROFS) {
		// No write access, or a read-only file system (read-only
		// commands on a read-only root): the model holds within this
		// process.
		return &adapterClock{slots: make([]uint64, queues*MaxEngines), local: true}, nil
	}
	if err != nil {
		return nil, ioErr(err, "open adapter engine table %s", path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, ioErr(err, "stat %s", path)
	}
	if !st.Mode().IsRegular() {
		return nil, errclass.Newh(errclass.DataLoss, "remove it and run `hsmsim init --force`",
			"adapter engine table %s is not a regular file", path)
	}
	if st.Size() < want {
		// Growing only: a concurrent opener that wants less keeps working
		// on the prefix, one that wants more grows it further.
		if err := f.Truncate(want); err != nil {
			return nil, ioErr(err, "size %s", path)
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, errclass.New(errclass.Unavailable, "map %s: %w", path, err)
	}
	// mmap returns page-aligned memory: every slot is 8-byte aligned.
	slots := unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), len(mem)/slotBytes)
	return &adapterClock{mem: mem, slots: slots}, nil
}

func (a *adapterClock) close() error {
	if a == nil || a.mem == nil {
		return nil
	}
	err := unix.Munmap(a.mem)
	a.mem, a.slots = nil, nil
	return err
}

// monotonic is CLOCK_MONOTONIC in nanoseconds: one clock for all
// processes of the machine, unlike Go's per-process monotonic reading.
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// reserve books one request of service time svc on APQN index qi with
// engines engines (0: unlimited) and returns the monotonic time at which
// it completes.
func (a *adapterClock) reserve(qi, engines int, svc int64) int64 {
	now := monotonic()
	if engines <= 0 || a == nil || (qi+1)*MaxEngines > len(a.slots) {
		return now + svc
	}
	if engines > MaxEngines {
		engines = MaxEngines
	}
	slots := a.slots[qi*MaxEngines : qi*MaxEngines+engines]
	for {
		best, free := 0, atomic.LoadUint64(&slots[0])
		for j := 1; j < len(slots); j++ {
			if v := atomic.LoadUint64(&slots[j]); v < free {
				best, free = j, v
			}
		}
		start := now
		if int64(free) > start {
			start = int64(free)
		}
		end := start + svc
		if atomic.CompareAndSwapUint64(&slots[best], free, uint64(end)) {
			return end
		}
		now = monotonic()
	}
}

// busy reports how many of the first engines of APQN index qi are busy
// now (for tests and `hsmsim show`).
func (a *adapterClock) busy(qi, engines int) int {
	if a == nil || engines <= 0 || (qi+1)*MaxEngines > len(a.slots) {
		return 0
	}
	now := monotonic()
	n := 0
	for j := 0; j < min(engines, MaxEngines); j++ {
		if int64(atomic.LoadUint64(&a.slots[qi*MaxEngines+j])) > now {
			n++
		}
	}
	return n
}

// Waiting strategy. Go's timers sleep in the network poller, whose wait
// has millisecond granularity: a 100 µs timer costs about 1 ms when the
// process is otherwise idle. waitUntil therefore sleeps on a timer only
// for what lies beyond spinWindow+timerSlop, then in nanosleep(2) (the
// thread's timer slack, 50 µs by default, is the error), and spins with
// yields over the last stretch.
const (
	timerSlop  = 2 * time.Millisecond
	spinWindow = 60 * time.Microsecond
)

// waitUntil returns when the monotonic clock reaches end, or early with
// the context's error.
func waitUntil(ctx context.Context, end int64) error {
	for {
		rem := time.Duration(end - monotonic())
		if rem <= 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return ctxErr(err)
		}
		switch {
		case rem > timerSlop+spinWindow:
			t := time.NewTimer(rem - timerSlop)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctxErr(ctx.Err())
			}
		case rem > spinWindow:
			ts := unix.NsecToTimespec(int64(rem - spinWindow))
			_ = unix.Nanosleep(&ts, nil) // EINTR: the loop looks again
		default:
			runtime.Gosched()
		}
	}
}
