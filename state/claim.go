package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// claimPrefix names the per-operation claim files: ".claim-<id>".
const claimPrefix = ".claim-"

// Claim is one command's hold on one operation: while a reencipher,
// finalize or cancel runs, it holds an exclusive flock on the operation's
// claim file, so a second admin command on the same operation is refused
// instead of racing it. The kernel drops the flock when the process dies,
// so a killed command never leaves a stale claim. The file records the
// holder's pid and command, for the refusal message.
type Claim struct {
	f    *os.File
	path string
	ID   ID
}

// ClaimInfo is what a claim file records about its holder.
type ClaimInfo struct {
	PID     int
	Command string
	Since   time.Time
}

func (c ClaimInfo) String() string {
	s := fmt.Sprintf("'%s' (pid %d", c.Command, c.PID)
	if !c.Since.IsZero() {
		s += ", since " + c.Since.Local().Format("2006-01-02 15:04:05")
	}
	return s + ")"
}

// ClaimedError is returned when another live process holds the claim.
type ClaimedError struct {
	ID     ID
	Holder ClaimInfo
}

func (e *ClaimedError) Error() string {
	return fmt.Sprintf("master key change operation '%s' is in use by %s", e.ID, e.Holder)
}

// ErrClass classifies the error for errclass.Of.
func (e *ClaimedError) ErrClass() errclass.Class { return errclass.Conflict }

// Is makes errors.Is(err, errclass.Conflict) true.
func (e *ClaimedError) Is(target error) bool { return target == errclass.Conflict }

func (d *Dir) claimPath(id ID) string { return filepath.Join(d.path, claimPrefix+string(id)) }

// Claim takes the claim on operation id for command (e.g. "cancel"). It
// does not wait: if another process holds it, the error is a
// *ClaimedError naming that process. Release it with [Claim.Release].
func (d *Dir) Claim(ctx context.Context, id ID, command string) (*Claim, error) {
	if _, err := ParseID(string(id)); err != nil {
		return nil, err
	}
	if d.opts.ReadOnly {
		return nil, errclass.New(errclass.Internal, "claim in a read-only operation directory")
	}
	name := d.claimPath(id)
	for range 10 {
		f, err := openLockFile(name, true)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				info, _ := readClaim(name)
				return nil, errclass.WithHint(&ClaimedError{ID: id, Holder: info},
					fmt.Sprintf("wait until process %d is done; if it hangs, stop it (kill %d) and run the command 'pkcshsm_mk_change list' advises", info.PID, info.PID))
			}
			return nil, ioErr(err, "lock %s", name)
		}
		// The file may have been removed (an operation ending) between
		// the open and the flock: then the lock is on a dead inode.
		if same, err := sameFile(f, name); err != nil || !same {
			f.Close()
			continue
		}
		info := fmt.Sprintf("pid=%d\ncommand=%s\nsince=%s\n", os.Getpid(), command, d.opts.Now().UTC().Format(time.RFC3339))
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, ioErr(err, "write %s", name)
		}
		if _, err := f.WriteAt([]byte(info), 0); err != nil {
			f.Close()
			return nil, ioErr(err, "write %s", name)
		}
		d.opts.hook("claimed")
		return &Claim{f: f, path: name, ID: id}, nil
	}
	return nil, errclass.New(errclass.Unavailable, "claim file %s keeps being replaced", name)
}

// Release gives the claim up and removes the claim file, so a command
// leaves the directory as it found it. It is safe to call more than once.
// The file is removed while the flock is still held; a process that opened
// it just before finds, after its flock, that the name no longer refers to
// its inode, and starts over.
func (c *Claim) Release() error {
	if c == nil || c.f == nil {
		return nil
	}
	if same, err := sameFile(c.f, c.path); err == nil && same {
		os.Remove(c.path)
	}
	err := c.f.Close() // drops the flock
	c.f = nil
	return err
}

// Claimant reports who holds the claim on id, if anyone (read from the
// kernel's lock table, so it works in a read-only Dir and never disturbs
// the holder).
func (d *Dir) Claimant(id ID) (ClaimInfo, bool) {
	name := d.claimPath(id)
	f, err := openLockFile(name, false)
	if err != nil {
		return ClaimInfo{}, false
	}
	defer f.Close()
	info, err := readClaim(name)
	if err != nil {
		return ClaimInfo{}, false
	}
	// The kernel's lock table names the process that took the flock,
	// which is the one that wrote the file.
	for _, h := range holders(f) {
		if h.PID == info.PID {
			return info, true
		}
	}
	return ClaimInfo{}, false
}

func readClaim(name string) (ClaimInfo, error) {
	raw, err := readRegular(name)
	if err != nil {
		return ClaimInfo{}, err
	}
	return parseClaim(raw), nil
}

// parseClaim reads the "key=value" lines of a claim file; unknown keys and
// malformed values are ignored (the file is only informative).
func parseClaim(raw []byte) ClaimInfo {
	var info ClaimInfo
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "pid":
			info.PID, _ = strconv.Atoi(v)
		case "command":
			info.Command = v
		case "since":
			info.Since, _ = time.Parse(time.RFC3339, v)
		}
	}
	if info.PID < 0 {
		info.PID = 0
	}
	return info
}

func sameFile(f *os.File, name string) (bool, error) {
	a, err := f.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Lstat(name)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}
