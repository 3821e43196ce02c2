package slotd

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// socketSpec says how one listening socket is made.
type socketSpec struct {
	path    string
	mode    fs.FileMode
	gid     int64 // -1: leave the group alone
	dirMode fs.FileMode
}

// prepareDir makes sure the socket's directory exists, is a real directory
// (not a symlink) and is not writable by everyone. A directory we create
// gets dirMode; an existing one (systemd's RuntimeDirectory) is left as is.
func prepareDir(dir string, mode fs.FileMode, log zerolog.Logger) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return errclass.New(errclass.FailedPrecondition, "create run directory parent: %w", err)
		}
		if err := os.Mkdir(dir, mode); err != nil && !errors.Is(err, fs.ErrExist) {
			return errclass.New(errclass.FailedPrecondition, "create run directory: %w", err)
		}
		// Mkdir is subject to the umask; the mode is deliberate.
		if err := os.Chmod(dir, mode); err != nil {
			return errclass.New(errclass.FailedPrecondition, "set mode of run directory: %w", err)
		}
		log.Info().Str("dir", dir).Str("mode", fmt.Sprintf("%#o", mode.Perm())).Msg("created run directory")
		return nil
	case err != nil:
		return errclass.New(errclass.FailedPrecondition, "run directory: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return errclass.Newh(errclass.FailedPrecondition, "remove the symlink or pass a real directory",
			"run directory %s is a symlink", dir)
	case !fi.IsDir():
		return errclass.Newh(errclass.FailedPrecondition, "remove it or choose another socket path",
			"run directory %s is not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0:
		return errclass.Newh(errclass.FailedPrecondition, fmt.Sprintf("chmod o-w %s", dir),
			"run directory %s is writable by everyone", dir)
	}
	return nil
}

// clearStale removes a socket file left behind by a daemon that died. It
// refuses symlinks and non-sockets, and refuses a socket a live daemon still
// answers on. The check-then-remove has a window in which another daemon
// could bind; systemd runs one instance, and the second daemon to bind loses
// with "address in use", so the window costs nothing but an error message.
func clearStale(path string, log zerolog.Logger) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return errclass.New(errclass.FailedPrecondition, "socket path: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return errclass.Newh(errclass.FailedPrecondition, "remove the symlink; pkcshsmd never follows one",
			"socket path %s is a symlink", path)
	case fi.Mode()&fs.ModeSocket == 0:
		return errclass.Newh(errclass.FailedPrecondition, "remove the file or choose another socket path",
			"socket path %s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return errclass.Newh(errclass.Conflict, "stop the running daemon first (systemctl stop pkcshsmd)",
			"another pkcshsmd is already listening on %s", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return errclass.New(errclass.FailedPrecondition, "probe existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return errclass.New(errclass.FailedPrecondition, "remove stale socket: %w", err)
	}
	log.Info().Str("socket", path).Msg("removed stale socket of a dead daemon")
	return nil
}

// maxSocketPath is the longest path a Unix socket can be bound to.
const maxSocketPath = 107

// listen creates the socket with its deliberate mode and group.
func listen(spec socketSpec, log zerolog.Logger) (*net.UnixListener, error) {
	// sun_path holds 108 bytes with the terminating NUL; bind(2) says only
	// "invalid argument" for a longer path.
	if len(spec.path) > maxSocketPath {
		return nil, errclass.Newh(errclass.InvalidArgument,
			"use a shorter root directory (PKCSHSM_ROOT) or socket path",
			"socket path %s has %d bytes, more than the %d a Unix socket allows", spec.path, len(spec.path), maxSocketPath)
	}
	if err := prepareDir(filepath.Dir(spec.path), spec.dirMode, log); err != nil {
		return nil, err
	}
	if err := clearStale(spec.path, log); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: spec.path, Net: "unix"})
	if err != nil {
		return nil, errclass.New(errclass.FailedPrecondition, "listen on %s: %w", spec.path, err)
	}
	l.SetUnlinkOnClose(true)
	// Between bind and chmod the socket has the umask's mode; pkcshsmd runs
	// with umask 077, so the window only ever narrows access.
	if err := os.Chmod(spec.path, spec.mode); err != nil {
		l.Close()
		return nil, errclass.New(errclass.FailedPrecondition, "set mode of %s: %w", spec.path, err)
	}
	if spec.gid >= 0 {
		if err := os.Lchown(spec.path, -1, int(spec.gid)); err != nil {
			l.Close()
			return nil, errclass.New(errclass.FailedPrecondition, "set group of %s: %w", spec.path, err)
		}
	}
	return l, nil
}
