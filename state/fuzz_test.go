package state

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func FuzzParseClaim(f *testing.F) {
	f.Add([]byte("pid=1234\ncommand=cancel\nsince=2026-12-01T07:00:00Z\n"))
	f.Add([]byte("pid=-5\ncommand=\x00\nsince=yesterday"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, raw []byte) {
		info := parseClaim(raw)
		if info.PID < 0 {
			t.Fatalf("negative pid %d", info.PID)
		}
		// What is parsed round-trips through the format Claim writes.
		if info.PID > 0 && !strings.ContainsAny(info.Command, "\n") {
			again := parseClaim([]byte(fmt.Sprintf("pid=%d\ncommand=%s\nsince=%s\n", info.PID, info.Command, info.Since.UTC().Format(time.RFC3339))))
			if again.PID != info.PID || again.Command != info.Command {
				t.Fatalf("round trip %+v -> %+v", info, again)
			}
		}
	})
}

func FuzzParseLocks(f *testing.F) {
	f.Add([]byte("1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n2: -> FLOCK  ADVISORY  READ 1 fd:01:5678 0 EOF\n"), uint64(0xfd01), uint64(5678))
	f.Add([]byte("1: POSIX ADVISORY WRITE x y z\n"), uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, raw []byte, dev, ino uint64) {
		for _, h := range parseLocks(raw, dev, ino) {
			if h.PID <= 0 {
				t.Fatalf("holder with pid %d", h.PID)
			}
		}
	})
}
