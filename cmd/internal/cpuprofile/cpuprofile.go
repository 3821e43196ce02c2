// Package cpuprofile lets every pkcshsm tool write a CPU profile of its
// run: with PKCSHSM_CPUPROFILE=FILE set, Start profiles the process into
// FILE (created with mode 0600, refused if it exists and is not a regular
// file) until the stop function it returns runs. Read it with
// `go tool pprof BINARY FILE`.
package cpuprofile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime/pprof"
	"syscall"
)

// Env names the variable that turns profiling on.
const Env = "PKCSHSM_CPUPROFILE"

// Start starts profiling when PKCSHSM_CPUPROFILE is set; the returned
// function stops it and closes the file (a no-op otherwise). An unusable
// file is an error naming it, and the tool should stop before doing
// anything.
func Start() (func(), error) {
	path := os.Getenv(Env)
	if path == "" {
		return func() {}, nil
	}
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("error: %s=%s is not a regular file\nhint: name a new file, e.g. /tmp/pass.pprof", Env, path)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("error: %s=%s: %v\nhint: name a file in a writable directory", Env, path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("error: %s=%s: %v\nhint: name a file in a writable directory", Env, path, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("error: %s=%s: %v", Env, path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
