package slotd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestCanChownTo(t *testing.T) {
	if !canChownTo(int64(os.Getegid())) {
		t.Errorf("canChownTo(own egid %d) = false", os.Getegid())
	}
	groups, _ := os.Getgroups()
	member := map[int64]bool{int64(os.Getegid()): true}
	for _, g := range groups {
		member[int64(g)] = true
	}
	// A gid the process is not in: only root may chown to it.
	var other int64 = 64000
	for member[other] {
		other++
	}
	if got, want := canChownTo(other), os.Geteuid() == 0; got != want {
		t.Errorf("canChownTo(%d) = %v as euid %d, want %v", other, got, os.Geteuid(), want)
	}
}

// TestListenPathTooLong: a socket path longer than sun_path allows is a
// clear invalid-argument error naming the length, not bind's EINVAL.
func TestListenPathTooLong(t *testing.T) {
	dir := t.TempDir()
	long := filepath.Join(dir, strings.Repeat("d", 120), "app.sock")
	_, err := listen(socketSpec{path: long, mode: 0o660, gid: -1, dirMode: 0o755}, zerolog.Nop())
	if errclass.Of(err) != errclass.InvalidArgument || !strings.Contains(err.Error(), "more than the 107") {
		t.Fatalf("listen on a %d-byte path: %v, want an invalid-argument error naming the limit", len(long), err)
	}
	if _, statErr := os.Stat(filepath.Dir(long)); statErr == nil {
		t.Errorf("the refused listen created %s", filepath.Dir(long))
	}
}
