package mkchange

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// passFixture is a token with n private AES keys under the CCA AES master
// key, a NEW AES master key loaded on both CCA APQNs, and the operation
// and token that change it.
type passFixture struct {
	*fixture
	op  *state.Op
	tok Token
}

func newPassFixture(tb testing.TB, n int) *passFixture {
	return newPassFixtureAttrs(tb, n, 0)
}

// newPassFixtureAttrs is newPassFixture with extra attributes per key:
// the engine's AES keys carry some two dozen (flags, dates, ids), each
// sealed on its own, which is what a pass over real keys reads and writes.
func newPassFixtureAttrs(tb testing.TB, n, extra int) *passFixture {
	tb.Helper()
	f := newFixture(tb)
	blob, err := f.hsm.GenerateKey(f.ctx, cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	if err != nil {
		tb.Fatal(err)
	}
	const chunk = 5000
	for start := 0; start < n; start += chunk {
		err := f.st.Batch(f.ctx, f.dk, func(tx *store.Tx) error {
			for i := start; i < min(n, start+chunk); i++ {
				o := &store.Object{Class: uint(ck.CKO_SECRET_KEY), Private: true, Attrs: map[uint32][]byte{
					uint32(ck.CKA_LABEL): fmt.Appendf(nil, "k%d", i), attrOpaque: blob}}
				for a := range extra {
					o.Attrs[uint32(0x100+a)] = []byte{1, 0, 0, 0, 0, 0, 0, 0}
				}
				if err := tx.Create(o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	return &passFixture{
		fixture: f,
		op:      &state.Op{ID: "Bench1", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}},
		tok:     Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}},
	}
}

// BenchmarkPass measures the token-object pass over 10,000 and 100,000
// private AES keys of one token (durable, batched transactions):
// reencipher, the officer's Set (not timed), then finalize. Each phase is
// reported in objects per second; building the token is not timed. The
// 100,000 variant is left out of -short runs; run it with -benchtime=1x:
//
//	go test -run '^$' -bench 'BenchmarkPass$' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPass(b *testing.B) { benchPass(b, 0) }

// BenchmarkPassEngineKeys is BenchmarkPass over keys shaped like the
// engine's (26 sealed attributes besides the blob), the keys the real
// commands rewrite:
//
//	go test -run '^$' -bench 'BenchmarkPassEngineKeys$' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPassEngineKeys(b *testing.B) { benchPass(b, 26) }

func benchPass(b *testing.B, extra int) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			if n > 10000 && testing.Short() {
				b.Skip("100,000 objects: not in -short runs")
			}
			var reenc, final, reencCPU, finalCPU time.Duration
			var shape store.RowShape
			for b.Loop() {
				b.StopTimer()
				f := newPassFixtureAttrs(b, n, extra)
				b.StartTimer()
				start, cpu := time.Now(), cpuTime()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActReencipher, nil); err != nil || c != n {
					b.Fatalf("reencipher: %d changed, %v", c, err)
				}
				reenc, reencCPU = reenc+time.Since(start), reencCPU+cpuTime()-cpu
				b.StopTimer()
				var err error
				if shape, err = f.st.BlobRowShape(f.ctx); err != nil {
					b.Fatal(err)
				}
				f.set(mkvp.CCAAES, cca1, cca2)
				b.StartTimer()
				start, cpu = time.Now(), cpuTime()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActFinalize, nil); err != nil || c != n {
					b.Fatalf("finalize: %d changed, %v", c, err)
				}
				final, finalCPU = final+time.Since(start), finalCPU+cpuTime()-cpu
			}
			b.ReportMetric(float64(n*b.N)/reenc.Seconds(), "reencipher-objects/s")
			b.ReportMetric(float64(n*b.N)/final.Seconds(), "finalize-objects/s")
			// Per second of CPU (user+system, both goroutines): the
			// figure that a machine shared with other work does not
			// distort.
			b.ReportMetric(float64(n*b.N)/reencCPU.Seconds(), "reencipher-objects/cpu-s")
			b.ReportMetric(float64(n*b.N)/finalCPU.Seconds(), "finalize-objects/cpu-s")
			// The plain-SQLite limit of the same row shape (the blob rows
			// after reencipher), paged and committed like the pass, in
			// the same run; the pass's share of it per CPU-second.
			b.StopTimer()
			plain, err := store.PlainRewrite(context.Background(), filepath.Join(b.TempDir(), "plain"), shape, pageSize, commitChunk)
			if err != nil || plain.Rows != n {
				b.Fatalf("plain-SQLite reference: %d rows, %v", plain.Rows, err)
			}
			sqlite := float64(plain.Rows) / plain.CPU.Seconds()
			b.ReportMetric(sqlite, "sqlite-rows/cpu-s")
			b.ReportMetric(float64(n*b.N)/reencCPU.Seconds()/sqlite, "reencipher/sqlite")
			b.ReportMetric(float64(n*b.N)/finalCPU.Seconds()/sqlite, "finalize/sqlite")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPassAdapterModel: the reencipher pass over private AES keys
// when each of the two APQNs takes 1 ms per request on 4 engines (hsmsim
// fault --latency 1ms --engines 4: 8,000 requests/s of adapter capacity).
// Reported: objects/s, and the share of the adapters' capacity the pass
// used. Sub-benchmarks by PKCSHSM_PASS_INFLIGHT; PKCSHSM_BENCH_KEYS sets
// the key count (default 20,000; the goal is stated for 100,000):
//
//	go test -run '^$' -bench 'BenchmarkPassAdapterModel' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPassAdapterModel(b *testing.B) {
	n := benchKeys(20000)
	for _, per := range []int{1, DefaultInFlight, 4} {
		b.Run(fmt.Sprintf("inflight=%d", per), func(b *testing.B) {
			b.Setenv(InFlightEnv, fmt.Sprint(per))
			var wall, cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				f := newPassFixture(b, n)
				for _, q := range []apqn.ID{cca1, cca2} {
					if err := f.hsm.Do(f.ctx, func(tx *sim.Tx) error {
						if err := tx.SetLatency(q, time.Millisecond); err != nil {
							return err
						}
						return tx.SetEngines(q, 4)
					}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start, c0 := time.Now(), cpuTime()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActReencipher, nil); err != nil || c != n {
					b.Fatalf("reencipher: %d changed, %v", c, err)
				}
				wall, cpu = wall+time.Since(start), cpu+cpuTime()-c0
			}
			// With the CPU per object the pass needs, this is what the
			// machine (not the adapters) allows.
			b.ReportMetric(float64(n*b.N)/cpu.Seconds(), "reencipher-objects/cpu-s")
			rate := float64(n*b.N) / wall.Seconds()
			b.ReportMetric(rate, "reencipher-objects/s")
			b.ReportMetric(100*rate/8000, "%-of-adapter-capacity")
		})
	}
}

// BenchmarkPassWriteStall measures what a pass does to another process's
// writes: a writer on a store handle of its own creates a private object
// every 2 ms, first alone, then while a reencipher pass over the token's
// keys runs, with the pass writing 2,000 objects per transaction (a whole
// page, as before) or commitChunk. Reported per variant: the writer's
// p50/p99/max latency in µs during the pass and how many of its writes
// took more than 5 ms, beside the same figures alone.
//
//	go test -run '^$' -bench 'BenchmarkPassWriteStall' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPassWriteStall(b *testing.B) {
	n := benchKeys(20000)
	for _, chunk := range []int{2000, commitChunk} {
		b.Run(fmt.Sprintf("chunk=%d", chunk), func(b *testing.B) {
			old := commitChunk
			commitChunk = chunk
			defer func() { commitChunk = old }()
			var base, during []time.Duration
			for b.Loop() {
				b.StopTimer()
				f := newPassFixture(b, n)
				other, err := store.Open(filepath.Dir(f.st.Path()), store.Options{})
				if err != nil {
					b.Fatal(err)
				}
				odk, err := other.Login(f.ctx, store.User, []byte("12345678"))
				if err != nil {
					b.Fatal(err)
				}
				write := func(stop <-chan struct{}, out *[]time.Duration) {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						case <-time.After(2 * time.Millisecond):
						}
						o := &store.Object{Class: uint(ck.CKO_DATA), Private: true,
							Attrs: map[uint32][]byte{uint32(ck.CKA_LABEL): fmt.Appendf(nil, "app %d", i)}}
						start := time.Now()
						if err := other.Create(f.ctx, odk, o); err != nil {
							b.Error(err)
							return
						}
						*out = append(*out, time.Since(start))
					}
				}
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() { write(stop, &base); close(done) }()
				time.Sleep(2 * time.Second)
				close(stop)
				<-done
				stop, done = make(chan struct{}), make(chan struct{})
				go func() { write(stop, &during); close(done) }()
				b.StartTimer()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActReencipher, nil); err != nil || c != n {
					b.Fatalf("reencipher: %d changed, %v", c, err)
				}
				close(stop)
				<-done
				other.Close()
			}
			report := func(name string, ds []time.Duration) {
				slices.Sort(ds)
				if len(ds) == 0 {
					return
				}
				over := 0
				for _, d := range ds {
					if d > 5*time.Millisecond {
						over++
					}
				}
				b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), name+"-p50-µs")
				b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), name+"-p99-µs")
				b.ReportMetric(float64(ds[len(ds)-1].Microseconds()), name+"-max-µs")
				b.ReportMetric(float64(over), name+"-over-5ms")
				b.ReportMetric(float64(len(ds)), name+"-writes")
			}
			report("alone", base)
			report("pass", during)
		})
	}
}

func benchKeys(def int) int {
	if v, err := strconv.Atoi(os.Getenv("PKCSHSM_BENCH_KEYS")); err == nil && v > 0 {
		return v
	}
	return def
}
