package slotd

import (
	"os"
	"testing"
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
