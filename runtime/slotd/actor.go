package slotd

import (
	"fmt"
	"net"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Actor is who is on the other end of a connection, as the kernel reports it
// when the connection is accepted (SO_PEERCRED, SO_PEERGROUPS). It is never
// taken from anything the peer says.
type Actor struct {
	UID    uint32
	GID    uint32
	PID    int32
	Groups []uint32 // supplementary groups
}

// InGroup reports whether gid is the actor's primary or a supplementary group.
func (a Actor) InGroup(gid uint32) bool {
	return a.GID == gid || slices.Contains(a.Groups, gid)
}

// String is how logs name the actor.
func (a Actor) String() string { return fmt.Sprintf("pid %d uid %d gid %d", a.PID, a.UID, a.GID) }

// TestActor builds an Actor for unit tests of permission decisions, without
// a socket.
func TestActor(uid, gid uint32, pid int32, groups ...uint32) Actor {
	return Actor{UID: uid, GID: gid, PID: pid, Groups: groups}
}

// PeerActor reads the peer credentials of a connected Unix socket.
func PeerActor(c *net.UnixConn) (Actor, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Actor{}, errclass.New(errclass.Internal, "peer credentials: %w", err)
	}
	var (
		a       Actor
		credErr error
	)
	ctlErr := raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			credErr = err
			return
		}
		a = Actor{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
		a.Groups, credErr = peerGroups(fd)
	})
	if ctlErr != nil {
		return Actor{}, errclass.New(errclass.Internal, "peer credentials: %w", ctlErr)
	}
	if credErr != nil {
		return Actor{}, errclass.New(errclass.Internal, "peer credentials: %w", credErr)
	}
	return a, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+). x/sys has no typed helper
// for it and its string helper stops at the first zero byte, so this calls
// getsockopt directly with a uint32 buffer, growing it on ERANGE.
func peerGroups(fd uintptr) ([]uint32, error) {
	buf := make([]uint32, 64)
	for range 3 {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return slices.Clone(buf[:size/4]), nil
		case unix.ERANGE:
			buf = make([]uint32, size/4+1)
		case unix.ENOPROTOOPT:
			return nil, nil // old kernel: primary group only
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
	return nil, fmt.Errorf("SO_PEERGROUPS: group list keeps growing")
}

// Policy decides, per request, what an [Actor] may do.
//
//   - root may do everything;
//   - members of the admin group may broadcast, ask for status, and connect
//     as an application (the admin tool is itself an application);
//   - members of the app group may connect as an application (not read the
//     status: the process list is for administrators);
//   - in sandbox mode (a temporary root, tests, demos) the daemon's own uid
//     counts as root;
//   - everyone else is refused.
//
// A gid of -1 means "no such group".
type Policy struct {
	AppGID   int64
	AdminGID int64
	// SandboxUID is the daemon's own uid in sandbox mode, -1 otherwise.
	SandboxUID int64
	// AppGroup and AdminGroup are the group names, for hints.
	AppGroup, AdminGroup string
}

func (p Policy) privileged(a Actor) bool {
	return a.UID == 0 || (p.SandboxUID >= 0 && int64(a.UID) == p.SandboxUID)
}

func (p Policy) in(a Actor, gid int64) bool {
	return gid >= 0 && a.InGroup(uint32(gid))
}

// PermitApp decides whether a may connect to the app socket.
func (p Policy) PermitApp(a Actor) error {
	if p.privileged(a) || p.in(a, p.AppGID) || p.in(a, p.AdminGID) {
		return nil
	}
	return errclass.Newh(errclass.PermissionDenied,
		fmt.Sprintf("add the user to group %s", orNone(p.AppGroup)),
		"%s may not use the application socket", a)
}

// PermitStatus decides whether a may read the daemon's status: the list of
// every connected process (pids, programs, users) is for administrators,
// not for every application (the app socket may be 0666).
func (p Policy) PermitStatus(a Actor) error {
	if p.privileged(a) || p.in(a, p.AdminGID) {
		return nil
	}
	return errclass.Newh(errclass.PermissionDenied,
		fmt.Sprintf("run as root or as a member of group %s", orNone(p.AdminGroup)),
		"%s may not read the daemon status (the list of processes is for administrators)", a)
}

// PermitBroadcast decides whether a may send events to every process.
func (p Policy) PermitBroadcast(a Actor) error {
	if p.privileged(a) || p.in(a, p.AdminGID) {
		return nil
	}
	return errclass.Newh(errclass.PermissionDenied,
		fmt.Sprintf("run as root or as a member of group %s", orNone(p.AdminGroup)),
		"%s may not broadcast events", a)
}

func orNone(name string) string {
	if name == "" {
		return "(none configured)"
	}
	return name
}
