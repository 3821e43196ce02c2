package mkchange

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// hookBackend runs hook once, at the first Reencipher call: by then the
// pass has listed (and holds in memory) the first page, so whatever hook
// writes to the store happens between that list and the page's update.
type hookBackend struct {
	hsm.Backend
	once sync.Once
	hook func()
}

func (b *hookBackend) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	b.once.Do(b.hook)
	return b.Backend.Reencipher(ctx, q, blob, d)
}

// smallPages lowers the page size for one test.
func smallPages(t *testing.T, n int) {
	old := pageSize
	pageSize = n
	t.Cleanup(func() { pageSize = old })
}

// passToken stores n private AES keys (CCA AES master key) with a data
// object between every two of them, loads a new AES master key and returns
// the keys, the operation and the token.
func passToken(t *testing.T, f *fixture, n int) ([]*store.Object, *state.Op, Token) {
	t.Helper()
	var keys []*store.Object
	for i := range n {
		keys = append(keys, f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, fmt.Sprint("k", i), true))
		if i%2 == 1 {
			d := &store.Object{Class: uint(ck.CKO_DATA), Attrs: map[uint32][]byte{uint32(ck.CKA_VALUE): []byte("x")}}
			if err := f.st.Create(f.ctx, f.dk, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Page01", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	return keys, op, Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}}
}

func TestPassPagesAndConcurrentWriters(t *testing.T) {
	smallPages(t, 3)
	tests := []struct {
		name string
		keys int
		// other is what another writer does to keys after the first page
		// was listed; it returns the keys the pass must not change.
		other        func(t *testing.T, f *fixture, keys []*store.Object, op *state.Op) (untouched map[uint64]bool)
		wantProgress [][2]int
	}{
		{name: "several pages and a short last one", keys: 7,
			wantProgress: [][2]int{{3, 7}, {6, 7}, {7, 7}}},
		{name: "exactly full pages", keys: 6,
			wantProgress: [][2]int{{3, 6}, {6, 6}}},
		{name: "no keys", keys: 0,
			wantProgress: [][2]int{{0, 0}}},
		{name: "one page", keys: 2,
			wantProgress: [][2]int{{2, 2}}},
		{name: "key deleted after the list", keys: 5,
			other: func(t *testing.T, f *fixture, keys []*store.Object, _ *state.Op) map[uint64]bool {
				if err := f.st.Delete(f.ctx, keys[1].Handle); err != nil {
					t.Error(err)
				}
				return map[uint64]bool{keys[1].Handle: true}
			},
			wantProgress: [][2]int{{3, 5}, {5, 5}}},
		{name: "key updated after the list", keys: 5,
			other: func(t *testing.T, f *fixture, keys []*store.Object, _ *state.Op) map[uint64]bool {
				o, err := f.st.Get(f.ctx, f.dk, keys[2].Handle)
				if err != nil {
					t.Error(err)
					return nil
				}
				o.Attrs[uint32(ck.CKA_LABEL)] = []byte("renamed")
				if err := f.st.Update(f.ctx, f.dk, o); err != nil {
					t.Error(err)
				}
				return nil
			},
			wantProgress: [][2]int{{3, 5}, {5, 5}}},
		{name: "key re-enciphered by another writer after the list", keys: 5,
			other: func(t *testing.T, f *fixture, keys []*store.Object, op *state.Op) map[uint64]bool {
				o, err := f.st.Get(f.ctx, f.dk, keys[0].Handle)
				if err != nil {
					t.Error(err)
					return nil
				}
				if ok, err := Reencipher(f.ctx, f.hsm, cca2, o.Attrs, op); !ok || err != nil {
					t.Errorf("reencipher: %v %v", ok, err)
				}
				if err := f.st.Update(f.ctx, f.dk, o); err != nil {
					t.Error(err)
				}
				return map[uint64]bool{keys[0].Handle: true}
			},
			wantProgress: [][2]int{{3, 5}, {5, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			keys, op, tok := passToken(t, f, tt.keys)
			var be hsm.Backend = f.hsm
			var untouched map[uint64]bool
			if tt.other != nil {
				be = &hookBackend{Backend: f.hsm, hook: func() { untouched = tt.other(t, f, keys, op) }}
			}
			var progress [][2]int
			n, err := tok.Pass(f.ctx, f.st, f.dk, be, op, state.ActReencipher, func(d, total int) {
				progress = append(progress, [2]int{d, total})
			})
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.keys-len(untouched) {
				t.Errorf("pass changed %d objects, want %d", n, tt.keys-len(untouched))
			}
			if fmt.Sprint(progress) != fmt.Sprint(tt.wantProgress) {
				t.Errorf("progress %v, want %v", progress, tt.wantProgress)
			}
			for i, k := range keys {
				got, err := f.st.Get(f.ctx, f.dk, k.Handle)
				if tt.other != nil && untouched[k.Handle] && err != nil {
					continue // deleted by the other writer
				}
				if err != nil {
					t.Fatal(err)
				}
				if ri, err := hsm.Inspect(got.Attrs[attrReenc]); err != nil || ri.Pattern != op.New[mkvp.CCAAES] {
					t.Errorf("key %d: no REENC blob under the new key (%v)", i, err)
				}
				if want := fmt.Sprint("k", i); i == 2 && tt.name == "key updated after the list" {
					if string(got.Attrs[uint32(ck.CKA_LABEL)]) != "renamed" {
						t.Errorf("the other writer's change was lost: label %q", got.Attrs[uint32(ck.CKA_LABEL)])
					}
				} else if string(got.Attrs[uint32(ck.CKA_LABEL)]) != want {
					t.Errorf("key %d: label %q, want %q", i, got.Attrs[uint32(ck.CKA_LABEL)], want)
				}
			}
			if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n != 0 {
				t.Errorf("repeated pass changed %d objects: %v", n, err)
			}
		})
	}
}

// A transform error on a later page stops the pass with that error; the
// pages before it stay committed, and a second run after the cause is fixed completes the work.
func TestPassErrorOnLaterPage(t *testing.T) {
	smallPages(t, 2)
	f := newFixture(t)
	keys, op, tok := passToken(t, f, 5)
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n != 5 {
		t.Fatalf("reencipher: %d %v", n, err)
	}
	// The fourth key loses its REENC blob: finalizing it would lose the key.
	o, err := f.st.Get(f.ctx, f.dk, keys[3].Handle)
	if err != nil {
		t.Fatal(err)
	}
	saved := o.Attrs[attrReenc]
	delete(o.Attrs, attrReenc)
	if err := f.st.Update(f.ctx, f.dk, o); err != nil {
		t.Fatal(err)
	}
	f.set(mkvp.CCAAES, cca1, cca2)
	n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, nil)
	if !errors.Is(err, ErrNoReenc) || n != 2 {
		t.Fatalf("finalize: %d changed, %v; want 2 and ErrNoReenc", n, err)
	}
	for i, k := range keys {
		_, has := f.get(k)[attrOld]
		if has != (i < 2) {
			t.Errorf("key %d finalized = %v, want %v", i, has, i < 2)
		}
	}
	o.Attrs[attrReenc] = saved // restored from a backup, say
	if err := f.st.Update(f.ctx, f.dk, o); err != nil {
		t.Fatal(err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActFinalize, nil); err != nil || n != 3 {
		t.Fatalf("finalize again: %d %v", n, err)
	}
}

// Cancelling the context ends the pass after the batch in progress.
func TestPassCancel(t *testing.T) {
	smallPages(t, 2)
	f := newFixture(t)
	_, op, tok := passToken(t, f, 6)
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	calls := 0
	n, err := tok.Pass(ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, func(int, int) { calls++; cancel() })
	if !errors.Is(err, context.Canceled) || n != 2 || calls != 1 {
		t.Fatalf("cancelled pass: %d changed, %d progress calls, %v", n, calls, err)
	}
	if n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n != 4 {
		t.Fatalf("resumed pass: %d %v", n, err)
	}
}

// lockProbe is a backend that, at every Reencipher after the first, checks
// whether someone holds the token's write lock: it tries a write
// transaction of its own through a second store handle (as another process
// would), with a short busy timeout. The first call runs hook.
type lockProbe struct {
	hsm.Backend
	t     *testing.T
	probe *store.Store
	mu    sync.Mutex // the pass calls from several goroutines
	calls int
	held  int
	hook  func()
}

func (b *lockProbe) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls++
	if b.calls == 1 {
		b.hook()
	} else if err := b.probe.Batch(ctx, nil, func(*store.Tx) error { return nil }); err != nil {
		if errclass.Of(err) != errclass.Unavailable {
			b.t.Errorf("probe write: %v", err)
		}
		b.held++
	}
	return b.Backend.Reencipher(ctx, q, blob, d)
}

// TestPassNoHSMCallInWriteTransaction: objects another writer changed
// after the pass read them are transformed again (an HSM call) outside the
// write transaction, so no other process's write waits for the HSM.
func TestPassNoHSMCallInWriteTransaction(t *testing.T) {
	f := newFixture(t)
	keys, op, tok := passToken(t, f, 6) // one page: no commit overlaps a read
	probe, err := store.Open(filepath.Dir(f.st.Path()), store.Options{BusyTimeout: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	be := &lockProbe{Backend: f.hsm, t: t, probe: probe, hook: func() {
		for _, k := range keys[1:4] { // three conflicts
			o, err := f.st.Get(f.ctx, f.dk, k.Handle)
			if err != nil {
				t.Error(err)
				return
			}
			o.Attrs[uint32(ck.CKA_LABEL)] = append(o.Attrs[uint32(ck.CKA_LABEL)], "-renamed"...)
			if err := f.st.Update(f.ctx, f.dk, o); err != nil {
				t.Error(err)
			}
		}
	}}
	n, err := tok.Pass(f.ctx, f.st, f.dk, be, op, state.ActReencipher, nil)
	if err != nil || n != 6 {
		t.Fatalf("pass: %d changed, %v", n, err)
	}
	if be.calls != 6+3 {
		t.Errorf("%d HSM calls, want 9 (6 keys, 3 transformed again)", be.calls)
	}
	if be.held != 0 {
		t.Errorf("%d HSM calls ran while the write lock was held", be.held)
	}
	for i, k := range keys {
		got := f.get(k)
		if ri, err := hsm.Inspect(got[attrReenc]); err != nil || ri.Pattern != op.New[mkvp.CCAAES] {
			t.Errorf("key %d: no REENC blob under the new key (%v)", i, err)
		}
		if want := fmt.Sprint("k", i); i >= 1 && i < 4 {
			want += "-renamed"
			if string(got[uint32(ck.CKA_LABEL)]) != want {
				t.Errorf("key %d: the other writer's change was lost (label %q)", i, got[uint32(ck.CKA_LABEL)])
			}
		}
	}
}

// TestPassStopsAtDamagedObject: a key whose stored blobs are damaged
// (the blob list cut short, or a blob that no longer unseals) stops the
// pass with an error naming its handle; keys after it are not touched,
// none is skipped silently, and once the object is removed the pass
// completes. (The pass reads the narrow blob rows only; damage to a key's
// other attributes is found by every other read of the key, and the
// pass's blob update never rewrites them: store.TestListBlobsAuthenticates.)
func TestPassStopsAtDamagedObject(t *testing.T) {
	for _, damage := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:30] }},
		{"blob fails to unseal", func(b []byte) []byte { b[len(b)-60] ^= 0x10; return b }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			smallPages(t, 2)
			f := newFixture(t)
			keys, op, tok := passToken(t, f, 6)
			victim := keys[3]
			db, err := sql.Open("sqlite", f.st.Path())
			if err != nil {
				t.Fatal(err)
			}
			var blob []byte
			if err := db.QueryRow(`SELECT blobs FROM blob WHERE handle = ?`, victim.Handle).Scan(&blob); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(`UPDATE blob SET blobs = ? WHERE handle = ?`, damage.change(blob), victim.Handle); err != nil {
				t.Fatal(err)
			}
			db.Close()
			n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil)
			if err == nil || errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), fmt.Sprintf("handles [%d]", victim.Handle)) {
				t.Fatalf("pass over a damaged key: %d changed, %v", n, err)
			}
			reenc := 0
			for _, k := range keys {
				if k == victim {
					continue
				}
				_, has := f.get(k)[attrReenc]
				if has {
					reenc++
				}
				if has && k.Handle > victim.Handle {
					t.Errorf("key %d after the damaged one was re-enciphered: the pass did not stop", k.Handle)
				}
			}
			// Pages of two keys: the first page is committed, the
			// damaged key's page is not.
			if reenc != n || n != 2 {
				t.Errorf("%d keys have a REENC blob, pass reported %d; want 2 (the page before the damaged key)", reenc, n)
			}
			if err := f.st.Delete(f.ctx, victim.Handle); err != nil {
				t.Fatal(err)
			}
			if m, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil); err != nil || n+m != 5 {
				t.Fatalf("pass after removing the damaged key: %d more, %v", m, err)
			}
		})
	}
}

// TestTxChunkFollowsCommitTime: while other writers are about, the pass's
// write transactions shrink when they hold the write lock longer than
// txHold, never below minChunk, and grow back to commitChunk when the
// store is fast again; once no writer was seen for contendedFor they are
// commitChunk whatever they take.
func TestTxChunkFollowsCommitTime(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newTxChunk()
	c.now = func() time.Time { return now }
	if c.size() != commitChunk {
		t.Fatalf("first chunk %d, want %d", c.size(), commitChunk)
	}
	// Slow transactions alone change nothing while no writer is about.
	c.took(c.size(), false, 100*time.Millisecond)
	if c.size() != commitChunk {
		t.Fatalf("chunk %d with no writer about, want %d", c.size(), commitChunk)
	}
	const writer = true // each transaction found another writer about
	// 40 µs per object: 50 fit in 2 ms; smoothed, the chunk comes down.
	for range 10 {
		c.took(c.size(), writer, time.Duration(c.size())*40*time.Microsecond)
	}
	if want := int(txHold / (40 * time.Microsecond)); c.size() < want-2 || c.size() > want+2 {
		t.Fatalf("chunk %d at 40 µs per object, want about %d", c.size(), want)
	}
	// A store so slow that even minChunk objects take longer.
	for range 10 {
		c.took(c.size(), writer, 100*time.Millisecond)
	}
	if c.size() != minChunk {
		t.Fatalf("chunk %d with 100 ms commits, want the floor %d", c.size(), minChunk)
	}
	// No writer for contendedFor: whole chunks again, however slow.
	for range 3 {
		now = now.Add(contendedFor / 2)
		c.took(c.size(), false, 100*time.Millisecond)
	}
	if c.size() != commitChunk {
		t.Fatalf("chunk %d with no writer about, want %d", c.size(), commitChunk)
	}
	// A writer again: short transactions at once.
	c.took(c.size(), writer, 100*time.Millisecond)
	if c.size() != minChunk {
		t.Fatalf("chunk %d after waiting for a writer, want %d", c.size(), minChunk)
	}
	// Fast again: back to commitChunk, not beyond.
	for range 20 {
		c.took(c.size(), writer, time.Duration(c.size())*time.Microsecond)
	}
	if c.size() != commitChunk {
		t.Fatalf("chunk %d at 1 µs per object, want %d", c.size(), commitChunk)
	}
}

// TestPassTransactionsFollowHoldTime: a pass over a store whose
// transactions take longer than txHold writes minChunk objects per
// transaction after the first, a pass without the bound commitChunk —
// counted by the store's generation, which every write transaction bumps
// once — and both change every key.
func TestPassTransactionsFollowHoldTime(t *testing.T) {
	oldHold, oldChunk, oldFor := txHold, commitChunk, contendedFor
	t.Cleanup(func() { txHold, commitChunk, contendedFor, writersAbout = oldHold, oldChunk, oldFor, false })
	commitChunk = 2 * minChunk
	contendedFor, writersAbout = time.Hour, true // as if writers were about all the time
	txs := map[time.Duration]int{}
	for _, hold := range []time.Duration{0, time.Nanosecond} {
		txHold = hold
		f := newFixture(t)
		keys, op, tok := passToken(t, f, 6*minChunk)
		g0, err := f.st.Generation(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		n, err := tok.Pass(f.ctx, f.st, f.dk, f.hsm, op, state.ActReencipher, nil)
		if err != nil || n != len(keys) {
			t.Fatalf("pass: %d changed, %v", n, err)
		}
		g1, err := f.st.Generation(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		txs[hold] = int(g1 - g0)
		for _, k := range keys {
			if _, ok := f.get(k)[attrReenc]; !ok {
				t.Fatalf("key %d has no REENC blob", k.Handle)
			}
		}
	}
	// 96 keys: 3 transactions of 32 without the bound; 32 then 4 of 16
	// with it. The pass's other writes are the same in both.
	if d := txs[time.Nanosecond] - txs[0]; d != 2 {
		t.Fatalf("transactions with the bound %d, without %d: want 2 more with it", txs[time.Nanosecond], txs[0])
	}
}
