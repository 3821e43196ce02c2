package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Restore replaces the database of the token directory dir with backup (a
// file written by [Store.Backup]). No store may have the database open:
// the caller stops the applications using the token first.
//
// The backup is checked first ([CheckFile]); a damaged one changes
// nothing. It is copied to a temporary file in dir with the mode and owner
// of the current database, fsynced; then the current database's -wal and
// -shm files are removed and dir fsynced (a WAL left beside the restored
// file would be replayed into it), and the copy is renamed over the
// database and dir fsynced again. A crash before the rename leaves the old
// database without its WAL tail (run the restore again); after it, the
// restored one.
func Restore(ctx context.Context, dir, backup string) error {
	if err := CheckFile(ctx, backup); err != nil {
		return err
	}
	path := filepath.Join(dir, DBName)
	cur, err := os.Lstat(path)
	if err != nil {
		return errclass.FS(err, "token database %s", path)
	}
	if !cur.Mode().IsRegular() {
		return errclass.New(errclass.DataLoss, "token database %s is not a regular file", path)
	}
	in, err := os.OpenFile(backup, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return errclass.FS(err, "open backup %s", backup)
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, ".restore-*")
	if err != nil {
		return errclass.FS(err, "create a temporary file in %s", dir)
	}
	tmp := out.Name()
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return errclass.FS(err, "copy %s to %s", backup, tmp)
	}
	if err := out.Chmod(cur.Mode().Perm()); err != nil {
		return errclass.FS(err, "chmod %s", tmp)
	}
	if st, ok := cur.Sys().(*syscall.Stat_t); ok && os.Getuid() == 0 {
		if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return errclass.FS(err, "chown %s", tmp)
		}
	}
	if err := out.Sync(); err != nil {
		return errclass.FS(err, "sync %s", tmp)
	}
	if err := out.Close(); err != nil {
		return errclass.FS(err, "close %s", tmp)
	}
	for _, side := range []string{path + "-wal", path + "-shm"} {
		if err := os.Remove(side); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return errclass.FS(err, "remove %s", side)
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return errclass.FS(err, "rename %s to %s", tmp, path)
	}
	ok = true
	return syncDir(dir)
}
