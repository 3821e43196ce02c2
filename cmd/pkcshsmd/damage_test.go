package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDamagedOperationFileWhileApplicationsRun damages the files of two
// active operations (a CCA and an EP11 one; every file of each, so no copy
// can repair them) while two real applications run, and checks that the
// applications do not forget the operations: keys they create afterwards
// still get their blob under the new master key, the officer's set does
// not fail a single application operation (EP11 APQN pinning and the
// fallback to the REENC blob go on), and once the files are restored
// finalize completes with every key under the new master keys.
func TestDamagedOperationFileWhileApplicationsRun(t *testing.T) {
	s := newStack(t)
	apps := []*loadApp{s.startLoad("app1"), s.startLoad("app2")}
	newAES := s.loadNew(ccaAPQN, "AES")
	wk := s.loadNew(ep11AP, "WK")
	code, out, ccaOp := s.reencipher(false, newAES, "--timeout", "30s")
	if code != 0 {
		t.Fatalf("CCA reencipher: exit %d\n%s", code, out)
	}
	code, out, ep11Op := s.reencipher(true, wk, "--timeout", "30s")
	if code != 0 {
		t.Fatalf("EP11 reencipher: exit %d\n%s", code, out)
	}

	// Flip one byte in the middle of every file of both operations: each
	// still parses as far as its name goes, and fails its checksum.
	saved := map[string][]byte{}
	ents, err := os.ReadDir(s.ops)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ccaOp) && !strings.HasPrefix(e.Name(), ep11Op) {
			continue
		}
		name := filepath.Join(s.ops, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		saved[name] = b
		bad := bytes.Clone(b)
		bad[len(bad)/2] ^= 0x01
		if err := os.WriteFile(name, bad, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if len(saved) < 2 {
		t.Fatalf("found %d operation files to damage", len(saved))
	}
	for _, a := range apps {
		for _, id := range []string{ccaOp, ep11Op} {
			s.waitLogLine(a, id, "unreadable master key change operation file")
		}
	}
	// The administrator looks; whatever list does, it must not make the
	// applications forget.
	_, out = s.run("", "pkcshsm_mk_change", "list")
	t.Logf("list with both operations damaged:\n%s", out)

	// Keys made from now on must still get their REENC blob.
	before := map[string]map[uint64]bool{"2": {}, "4": {}}
	for slot := range before {
		for _, k := range s.keys(slot) {
			before[slot][k.Handle] = true
		}
	}
	newKeys := func(slot, mkType string, n int) []keyRow {
		var rows []keyRow
		waitFor(t, "the applications to create keys in slot "+slot, func() bool {
			rows = nil
			for _, k := range s.keys(slot) {
				if !before[slot][k.Handle] && k.MKType == mkType {
					rows = append(rows, k)
				}
			}
			return len(rows) >= n
		})
		return rows
	}
	for _, c := range []struct{ slot, mkType string }{{"2", "CCA AES"}, {"4", "EP11 WK"}} {
		for _, k := range newKeys(c.slot, c.mkType, 2) {
			if !k.HasReenc {
				t.Errorf("slot %s: key %d (%s) made after the damage has no blob under the new master key", c.slot, k.Handle, k.Label)
			}
		}
	}

	// The officer activates the new keys; the applications keep going
	// until each has made a few more keys under them.
	s.must("", "hsmsim", "set", "--apqns", ccaAPQN, "--type", "AES")
	s.must("", "hsmsim", "set", "--apqns", ep11AP, "--type", "WK")
	for slot := range before {
		for _, k := range s.keys(slot) {
			before[slot][k.Handle] = true
		}
	}
	for _, k := range newKeys("4", "EP11 WK", 2) {
		if !strings.EqualFold(k.MKVP, wk[:len(k.MKVP)]) {
			t.Errorf("slot 4: key %d made after the set is under %s, want %s", k.Handle, k.MKVP, wk)
		}
	}
	newKeys("2", "CCA AES", 2)

	// Restored files resume the normal course.
	for name, b := range saved {
		if err := os.WriteFile(name, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	s.must(userPIN+"\n", "pkcshsm_mk_change", "finalize", "-i", ccaOp, "--timeout", "30s")
	s.must(userPIN+"\n", "pkcshsm_mk_change", "finalize", "-i", ep11Op, "--timeout", "30s")
	for _, a := range apps {
		rep := s.stopLoad(a, 20*time.Second)
		if rep.Failed != 0 || rep.Ops == 0 {
			t.Errorf("pid %d: %d of %d operations failed", a.pid(), rep.Failed, rep.Ops)
		}
	}
	checkKeys(t, s, "2", "CCA AES", newAES)
	checkKeys(t, s, "4", "EP11 WK", wk)
}

// waitLogLine waits until one line of the application's log contains
// every text, compared without case.
func (s *stack) waitLogLine(a *loadApp, texts ...string) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("a log line of pid %d with ", a.pid())+strings.Join(texts, ", "), func() bool {
		b, _ := os.ReadFile(a.log)
		for _, line := range strings.Split(strings.ToLower(string(b)), "\n") {
			all := true
			for _, x := range texts {
				all = all && strings.Contains(line, strings.ToLower(x))
			}
			if all {
				return true
			}
		}
		return false
	})
}
