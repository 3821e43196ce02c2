package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// maxFile bounds what is read from the directory: an operation file is a
// few KiB; anything larger is not one.
const maxFile = 1 << 20

// kind names a file type for messages ("a FIFO").
func kind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return "not a regular file"
}

// notRegular is the error for an entry that is not a regular file. It is
// of class DataLoss: an operation directory only ever holds regular files
// written by pkcshsm_mk_change.
func notRegular(name string, m fs.FileMode) error {
	return errclass.Newh(errclass.DataLoss,
		fmt.Sprintf("remove %s: pkcshsm_mk_change only writes regular files there", name),
		"%s is %s, not an operation file; it was not opened", name, kind(m))
}

// afterLstat lets a test replace the entry between the lstat and the open
// of readRegular, where only O_NONBLOCK and fstat stand between a swapped-in
// FIFO and a read that waits forever.
var afterLstat = func(string) {}

// readRegular reads name, which must be a regular file of at most maxFile
// bytes. It never blocks and never follows a link: the entry is checked
// with lstat first (a device is never opened), then opened with O_NOFOLLOW
// and O_NONBLOCK (a FIFO swapped in between does not wait for a writer) and
// checked again with fstat before any read.
func readRegular(name string) ([]byte, error) {
	fi, err := os.Lstat(name)
	if err != nil {
		return nil, ioErr(err, "stat %s", name)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(name, fi.Mode())
	}
	afterLstat(name)
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, notRegular(name, fs.ModeSymlink)
		}
		return nil, ioErr(err, "open %s", name)
	}
	defer f.Close()
	fi, err = f.Stat()
	if err != nil {
		return nil, ioErr(err, "stat %s", name)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(name, fi.Mode())
	}
	if fi.Size() > maxFile {
		return nil, errclass.New(errclass.DataLoss, "%s has %d bytes, more than an operation file can have (%d)", name, fi.Size(), maxFile)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, ioErr(err, "read %s", name)
	}
	if len(raw) > maxFile {
		return nil, errclass.New(errclass.DataLoss, "%s grew beyond %d bytes while being read", name, maxFile)
	}
	return raw, nil
}

// writeFile stores raw under name atomically and durably: a temp file in
// the same directory, fsync, rename over name, fsync of the directory. The
// caller holds the exclusive lock. After a crash before the rename, name
// holds exactly its old content; after it, exactly the new one. The hooks
// are called at prefix+"-before-fsync", "-before-rename" and
// "-before-dirsync".
func (d *Dir) writeFile(name string, raw []byte, prefix string) error {
	f, err := d.fs.CreateTemp(d.path, tmpPrefix+filepath.Base(name)+"-")
	if err != nil {
		return ioErr(err, "create temporary file in %s", d.path)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			d.fs.Remove(tmp)
		}
	}()
	if err := f.Chmod(fileMode); err != nil {
		return ioErr(err, "chmod %s", tmp)
	}
	if _, err := f.Write(raw); err != nil {
		return ioErr(err, "write %s", tmp)
	}
	d.point(prefix + "-before-fsync")
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync %s", tmp)
	}
	if err := f.Close(); err != nil {
		return ioErr(err, "close %s", tmp)
	}
	d.point(prefix + "-before-rename")
	if err := d.fs.Rename(tmp, name); err != nil {
		return ioErr(err, "rename %s", tmp)
	}
	ok = true
	d.point(prefix + "-before-dirsync")
	return d.syncDir(d.path)
}

// cleanTemps removes temp files left by a crashed writer. The caller holds
// the exclusive lock, so no live writer owns them.
func (d *Dir) cleanTemps() {
	ents, err := os.ReadDir(d.path)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := d.fs.Remove(filepath.Join(d.path, e.Name())); err == nil {
				d.log.Warn().Str("file", e.Name()).Msg("removed temporary file left by an interrupted write")
			}
		}
		if id, ok := strings.CutPrefix(e.Name(), claimPrefix); ok {
			d.dropOrphanClaim(ID(id))
		}
	}
}

// dropOrphanClaim removes the claim file of an operation that does not
// exist, if no process holds it (a command killed between taking a claim
// and creating the operation leaves one). A held claim, or one whose
// operation exists, is left alone. The caller holds the exclusive lock.
func (d *Dir) dropOrphanClaim(id ID) {
	if _, err := ParseID(string(id)); err != nil {
		return
	}
	for _, name := range []string{d.mainPath(id), d.copyPath(id)} {
		if _, err := os.Lstat(name); err == nil {
			return
		}
	}
	name := d.claimPath(id)
	f, err := openLockFile(name, false)
	if err != nil {
		return
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return // held: a command is running on it
	}
	if same, err := sameFile(f, name); err == nil && same {
		os.Remove(name)
	}
}

// syncDir makes the directory's entries durable (a rename, a creation, a
// removal). Tests replace it through Options.fsyncDir to see which
// directories were synced.
func (d *Dir) syncDir(path string) error {
	if d.opts.fsyncDir != nil {
		return d.opts.fsyncDir(path)
	}
	return d.fs.SyncDir(path)
}

func fsyncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return ioErr(err, "open directory %s", path)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return ioErr(err, "sync directory %s", path)
	}
	return nil
}

// ioErr classifies a failed file-system call; a refused one gets a hint.
func ioErr(err error, format string, args ...any) error {
	err = errclass.FS(err, format, args...)
	if errclass.Of(err) == errclass.PermissionDenied {
		return errclass.WithHint(err, "run as the administrator who owns the state directory")
	}
	return err
}
