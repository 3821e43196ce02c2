package sim

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// The generation file is how a process learns that another one changed the
// state, without reading the state file on every operation: an 8-byte
// counter in a file every process maps shared. A writer bumps it (under the
// state lock, after the new state file is in place); a reader compares it
// with the value it saw when it last loaded the state — one atomic load —
// and reloads only when it moved.

const genSize = 8

// genCounter is the mapped generation counter.
type genCounter struct {
	mem []byte
	p   *uint64
}

func createGen(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return ioErr(err, "create %s", path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ioErr(err, "stat %s", path)
	}
	if st.Size() != genSize {
		if err := f.Truncate(genSize); err != nil {
			return ioErr(err, "size %s", path)
		}
	}
	return nil
}

func openGen(path string) (*genCounter, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if os.IsPermission(err) || errors.Is(err, unix.EROFS) {
		// Readers that may not write (no permission, a read-only file
		// system) still watch; a write fails on the state file first.
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, ioErr(err, "open generation counter %s", path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, ioErr(err, "stat %s", path)
	}
	if st.Size() != genSize {
		return nil, errclass.Newh(errclass.DataLoss,
			"re-create the simulator with `hsmsim init --force`",
			"generation counter %s has %d bytes, want %d", path, st.Size(), genSize)
	}
	prot := unix.PROT_READ | unix.PROT_WRITE
	if fl, _ := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); fl&unix.O_ACCMODE == unix.O_RDONLY {
		prot = unix.PROT_READ
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, genSize, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, errclass.New(errclass.Unavailable, "map %s: %w", path, err)
	}
	// mmap returns page-aligned memory, so the counter is 8-byte aligned
	// as the atomic operations need.
	return &genCounter{mem: mem, p: (*uint64)(unsafe.Pointer(&mem[0]))}, nil
}

func (g *genCounter) load() uint64 { return atomic.LoadUint64(g.p) }

func (g *genCounter) bump() { atomic.AddUint64(g.p, 1) }

func (g *genCounter) close() error {
	if g == nil || g.mem == nil {
		return nil
	}
	err := unix.Munmap(g.mem)
	g.mem, g.p = nil, nil
	if err != nil {
		return fmt.Errorf("unmap generation counter: %w", err)
	}
	return nil
}
