package state

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// openLockFile opens a lock or claim file without following a link and
// without blocking (a FIFO put in its place does not wait for a writer),
// and checks that it is a regular file before it is used.
func openLockFile(name string, create bool) (*os.File, error) {
	flag := os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if create {
		flag = os.O_RDWR | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	}
	f, err := os.OpenFile(name, flag, fileMode)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, errclass.Newh(errclass.PermissionDenied, "remove the link; pkcshsm_mk_change creates the file itself",
				"refusing lock file %s: it is a symlink", name)
		}
		return nil, ioErr(err, "open lock file %s", name)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, ioErr(err, "stat %s", name)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, errclass.Newh(errclass.PermissionDenied, fmt.Sprintf("remove %s; pkcshsm_mk_change creates it as a regular file", name),
			"refusing lock file %s: it is %s", name, kind(fi.Mode()))
	}
	return f, nil
}

// flockWait takes a flock on f, waiting at most until ctx ends. It polls
// with LOCK_NB (a blocking flock cannot be interrupted) and calls busy
// each time the lock is held by someone else.
func flockWait(ctx context.Context, f *os.File, how int, busy func()) error {
	wait := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return err
		}
		busy()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// holder is a process holding a flock, as the kernel reports it.
type holder struct {
	PID     int
	Program string // from /proc/PID/comm; "" if unknown
	Write   bool   // exclusive
}

func (h holder) String() string {
	mode := "shared"
	if h.Write {
		mode = "exclusive"
	}
	if h.Program == "" {
		return fmt.Sprintf("pid %d (%s)", h.PID, mode)
	}
	return fmt.Sprintf("pid %d %s (%s)", h.PID, h.Program, mode)
}

// holders lists the processes holding a flock on the file f refers to,
// from /proc/locks. It returns nil when that is not knowable.
func holders(f *os.File) []holder {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	raw, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	if h := parseLocks(raw, uint64(st.Dev), st.Ino); len(h) > 0 {
		return h
	}
	// Some file systems (btrfs subvolumes, overlays) report another
	// device number in stat than in /proc/locks: match the inode alone.
	return parseLocks(raw, anyDev, st.Ino)
}

// anyDev makes parseLocks ignore the device.
const anyDev = ^uint64(0)

// parseLocks picks the granted FLOCK entries of one inode from the text of
// /proc/locks ("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters
// carry "->" and are left out).
func parseLocks(raw []byte, dev, ino uint64) []holder {
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	want := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	if dev == anyDev {
		want = fmt.Sprintf(":%d", ino)
	}
	var out []holder
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[1] != "FLOCK" || (f[5] != want && (dev != anyDev || !strings.HasSuffix(f[5], want))) {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil || pid <= 0 {
			continue
		}
		h := holder{PID: pid, Write: f[3] == "WRITE"}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			h.Program = strings.TrimSpace(string(comm))
		}
		out = append(out, h)
	}
	return out
}

// withLock runs fn under the directory lock: exclusive for writers, shared
// for readers. The wait is bounded by LockTimeout; when it runs out, the
// error names the lock file and the processes holding it. A read-only Dir
// whose lock file does not exist yet reads without it: writes are atomic
// renames, so a reader still sees whole files. fn itself never blocks: it
// only reads regular files opened with O_NONBLOCK.
func (d *Dir) withLock(ctx context.Context, exclusive bool, fn func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if exclusive && d.opts.ReadOnly {
		return errclass.New(errclass.Internal, "write to a read-only operation directory")
	}
	name := d.lockPath()
	f, err := openLockFile(name, !d.opts.ReadOnly)
	if err != nil {
		if d.opts.ReadOnly && errclass.Of(err) == errclass.NotFound {
			return fn()
		}
		return err
	}
	defer f.Close()
	how, what := syscall.LOCK_SH, "shared"
	if exclusive {
		how, what = syscall.LOCK_EX, "exclusive"
	}
	ctx, cancel := context.WithTimeout(ctx, d.opts.LockTimeout)
	defer cancel()
	start := time.Now()
	reported := false
	err = flockWait(ctx, f, how, func() {
		d.opts.hook("lock-busy")
		if !reported && time.Since(start) >= time.Second {
			reported = true
			held := holderList(holders(f))
			d.log.Warn().Str("lock", name).Str("mode", what).Stringer("held_by", held).
				Msg("waiting for the operation directory lock")
			if d.opts.Waiting != nil {
				d.opts.Waiting(fmt.Sprintf("waiting up to %s for the %s lock on %s, held by %s",
					d.opts.LockTimeout, what, name, held))
			}
		}
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return errclass.Newh(errclass.DeadlineExceeded,
			"another pkcshsm_mk_change may be running; try again when it is done, or stop the process named",
			"timed out after %s waiting for the %s lock on %s; held by %s", d.opts.LockTimeout, what, name, holderList(holders(f)))
	case err != nil && errors.Is(err, context.Canceled):
		return errclass.New(errclass.Aborted, "stopped waiting for the lock on %s: %w", name, err)
	case err != nil:
		return ioErr(err, "lock %s", name)
	}
	defer func() {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
			d.log.Error().Err(err).Msg("failed to release the operation directory lock")
		}
	}()
	d.opts.hook("locked")
	return fn()
}

type holderList []holder

func (l holderList) String() string {
	if len(l) == 0 {
		return "an unknown process"
	}
	s := make([]string, len(l))
	for i, h := range l {
		s[i] = h.String()
	}
	return strings.Join(s, ", ")
}
