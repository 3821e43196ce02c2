package tokenlib

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/runtime/event"
	"github.com/pkcshsm/pkcshsm/state"
)

// TestMKDamagedFileKeepsLastState: an active operation whose files (the
// operation file and its copy, so nothing can repair it) fail their
// checksum, are cut short or are moved away is not forgotten: new keys keep
// getting REENC blobs until the history records the operation's end; the
// restored files resume normal following.
func TestMKDamagedFileKeepsLastState(t *testing.T) {
	ctx := context.Background()
	layout := writeTestRoot(t)
	o := officer(t, layout)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	d := opsDir(t, layout)
	op := createOp(t, d, mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	good := map[string][]byte{} // every file of the operation
	ents, err := os.ReadDir(layout.MKChangeDir())
	must(t, err)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), string(op.ID)) {
			name := filepath.Join(layout.MKChangeDir(), e.Name())
			b, err := os.ReadFile(name)
			must(t, err)
			good[name] = b
		}
	}
	if len(good) == 0 {
		t.Fatal("no operation file found")
	}
	each := func(f func(name string, b []byte)) {
		for name, b := range good {
			f(name, b)
		}
	}
	restore := func() {
		each(func(name string, b []byte) {
			os.Remove(name + ".away")
			must(t, os.WriteFile(name, b, 0o640))
		})
	}
	for _, c := range []struct {
		what string
		do   func(name string, b []byte)
	}{
		{"bad checksum", func(name string, b []byte) {
			bad := append([]byte(nil), b...)
			bad[len(bad)/2] ^= 0x20
			must(t, os.WriteFile(name, bad, 0o640))
		}},
		{"truncated", func(name string, b []byte) { must(t, os.WriteFile(name, b[:len(b)/2], 0o640)) }},
		{"moved away", func(name string, _ []byte) { must(t, os.Rename(name, name+".away")) }},
	} {
		what := c.what
		t.Run(what, func(t *testing.T) {
			defer restore()
			each(c.do)
			_, err := l.reconcile(ctx)
			must(t, err)
			if ids := activeOpIDs(l, slotCCA); len(ids) != 1 || ids[0] != op.ID {
				t.Fatalf("active operations after the damage: %v, want [%s]", ids, op.ID)
			}
			k := genAES(t, l, h, "during-"+what, false)
			wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})
			must(t, aesRoundTrip(l, h, k))
			restore()
			_, err = l.reconcile(ctx)
			must(t, err)
			if ids := activeOpIDs(l, slotCCA); len(ids) != 1 {
				t.Fatalf("active operations after the repair: %v", ids)
			}
		})
	}

	// A recorded end settles it as before.
	k := genAES(t, l, h, "before-end", false)
	must(t, o.ClearNew(ctx, cca1, mkvp.CCAAES))
	must(t, o.ClearNew(ctx, cca2, mkvp.CCAAES))
	must(t, d.Remove(ctx, op.ID, state.Canceled))
	_, err = l.reconcile(ctx)
	must(t, err)
	if ids := activeOpIDs(l, slotCCA); len(ids) != 0 {
		t.Fatalf("operations still active after their recorded end: %v", ids)
	}
	wantBlobs(t, l, h, k, cur, mkvp.Pattern{}, mkvp.Pattern{})
}

// TestCloseBoundedByStuckReconcile: a reconcile that never returns (held
// here by taking its lock) does not keep Close from closing the stores.
func TestCloseBoundedByStuckReconcile(t *testing.T) {
	layout := writeTestRoot(t)
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoAgent: true})
	must(t, err)
	defer func(d time.Duration) { closeWait = d }(closeWait)
	closeWait = 100 * time.Millisecond
	l.mkMu.Lock() // a reconcile stuck in a read
	done := make(chan error, 1)
	go func() { done <- l.Close() }()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited for the stuck reconcile")
	}
	if _, err := l.slots[slotCCA].db.info(); err == nil {
		t.Error("the token store is still open after Close")
	}
	l.mkMu.Unlock()
}

// TestReconcileWaitIsBounded: a reconcile waits for an earlier one that
// does not return only until its context ends, and says why.
func TestReconcileWaitIsBounded(t *testing.T) {
	layout := writeTestRoot(t)
	l := newMKLib(t, layout, slotCCA)
	l.mkMu.Lock() // an earlier reconcile stuck in a read
	defer l.mkMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := l.reconcile(ctx)
	if errclass.Of(err) != errclass.DeadlineExceeded || !strings.Contains(err.Error(), "earlier reconcile") {
		t.Fatalf("reconcile behind a stuck one: %v", err)
	}
	r := agentHandler{l}.HandleEvent(ctx, event.Event{ID: "e1", Type: "mkchange.reencipher", OpID: "AbCd12"})
	for _, tr := range r.Tokens {
		if tr.Result != event.Failed || tr.Class != errclass.DeadlineExceeded {
			t.Errorf("slot %d answered %+v", tr.Slot, tr)
		}
	}
	if len(r.Tokens) == 0 {
		t.Error("no token answered")
	}
}
