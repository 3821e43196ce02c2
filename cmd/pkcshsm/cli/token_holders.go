package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// procRoot is where dbHolders looks for processes (tests point it
// elsewhere).
var procRoot = "/proc"

// dbHolders lists the processes (other than this one) that have the
// database file db or its -wal or -shm file open, as "pid N (comm)", read
// from /proc/PID/fd. Processes whose descriptors this user may not read
// are not seen: run as root (the administrator of the tokens) to see all.
func dbHolders(db string) []string {
	want := []string{db, db + "-wal", db + "-shm"}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(procRoot, e.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(procRoot, e.Name(), "fd", fd.Name()))
			if err == nil && slices.Contains(want, target) {
				comm, _ := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
				break
			}
		}
	}
	return out
}
