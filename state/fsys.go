package state

import (
	"io/fs"
	"os"
	"syscall"
)

// fileSystem is what the write path of the operation directory does to
// the file system: every call that changes an entry or a file's content,
// and every fsync. Reads go to the OS directly. The production
// implementation is osFS; the power-cut tests install a recording one
// that keeps, beside the real files, which writes, renames, removals and
// fsyncs happened, so they can rebuild what a power cut at each point
// would leave on disk (only what was synced).
type fileSystem interface {
	// CreateTemp creates a new file in dir, like os.CreateTemp.
	CreateTemp(dir, pattern string) (writableFile, error)
	// OpenAppend opens name for appending, creating it with perm; it
	// never follows a link and never blocks.
	OpenAppend(name string, perm fs.FileMode) (writableFile, error)
	Rename(from, to string) error
	Remove(name string) error
	Mkdir(name string, perm fs.FileMode) error
	// SyncDir makes the entries of the directory path durable.
	SyncDir(path string) error
}

// writableFile is a file the write path writes: content becomes durable
// with Sync.
type writableFile interface {
	Name() string
	Write(p []byte) (int, error)
	Chmod(mode fs.FileMode) error
	Stat() (fs.FileInfo, error)
	Sync() error
	Close() error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (writableFile, error) { return os.CreateTemp(dir, pattern) }

func (osFS) OpenAppend(name string, perm fs.FileMode) (writableFile, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
}

func (osFS) Rename(from, to string) error              { return os.Rename(from, to) }
func (osFS) Remove(name string) error                  { return os.Remove(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error { return os.Mkdir(name, perm) }
func (osFS) SyncDir(path string) error                 { return fsyncDir(path) }
