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

// pass runs the pass of action a over the fixture's token, which must
// change all n keys.
func (f *passFixture) pass(b testing.TB, a state.Action, n int) {
	b.Helper()
	if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, a, nil); err != nil || c != n {
		b.Fatalf("%s: %d changed, %v", a, c, err)
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
				f.pass(b, state.ActReencipher, n)
				reenc, reencCPU = reenc+time.Since(start), reencCPU+cpuTime()-cpu
				b.StopTimer()
				var err error
				if shape, err = f.st.BlobRowShape(f.ctx); err != nil {
					b.Fatal(err)
				}
				f.set(mkvp.CCAAES, cca1, cca2)
				b.StartTimer()
				start, cpu = time.Now(), cpuTime()
				f.pass(b, state.ActFinalize, n)
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

// BenchmarkPassAdapterModel: the reencipher and finalize passes over
// private AES keys when each of the two APQNs takes 1 ms per request on 4
// engines (hsmsim fault --latency 1ms --engines 4: 8,000 requests/s of
// adapter capacity), while an application encrypts 1 KiB with AES-CBC
// through the same modelled APQNs, one request after the other, round
// robin over the two (as the token engine spreads its requests). The
// application runs alone first (its baseline under the same model), then
// during each pass. Reported: keys/s of each pass, the reencipher pass's
// share of the adapters' capacity, and the application's p50/p99 and
// calls above 5 ms, baseline and during each pass, and the p99 ratios.
// Sub-benchmarks: the adaptive window up to PKCSHSM_PASS_INFLIGHT=8 (the
// default), and for comparison windows fixed at 3 (the former default)
// and 4 (the engines). PKCSHSM_BENCH_KEYS sets the key count (default
// 100,000, the goal):
//
//	go test -run '^$' -bench 'BenchmarkPassAdapterModel' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPassAdapterModel(b *testing.B) {
	n := benchKeys(100000)
	for _, v := range []struct {
		name       string
		per, fixed int
	}{{"adaptive-max=8", DefaultInFlight, 0}, {"fixed=3", 3, 3}, {"fixed=4", 4, 4}} {
		b.Run(v.name, func(b *testing.B) {
			b.Setenv(InFlightEnv, fmt.Sprint(v.per))
			fixedWindow = v.fixed
			defer func() { fixedWindow = 0 }()
			benchPassWithApp(b, n, time.Millisecond, 4)
		})
	}
}

// benchPassWithApp runs the application alone for 2 s, then during a
// reencipher and a finalize pass over n keys, each APQN modelled with
// service time lat on engines engines (0: no model), and reports the
// figures BenchmarkPassAdapterModel describes.
func benchPassWithApp(b *testing.B, n int, lat time.Duration, engines int) {
	var reenc, final, cpu time.Duration
	var base, during, duringFinal []time.Duration
	for b.Loop() {
		b.StopTimer()
		f := newPassFixture(b, n)
		for _, q := range []apqn.ID{cca1, cca2} {
			if err := f.hsm.Do(f.ctx, func(tx *sim.Tx) error {
				if err := tx.SetLatency(q, lat); err != nil {
					return err
				}
				return tx.SetEngines(q, engines)
			}); err != nil {
				b.Fatal(err)
			}
		}
		app := newModelApp(b, f)
		base = append(base, app.run(func() { time.Sleep(2 * time.Second) })...)
		b.StartTimer()
		start, c0 := time.Now(), cpuTime()
		during = append(during, app.run(func() {
			f.pass(b, state.ActReencipher, n)
		})...)
		reenc, cpu = reenc+time.Since(start), cpu+cpuTime()-c0
		b.StopTimer()
		f.set(mkvp.CCAAES, cca1, cca2)
		b.StartTimer()
		start = time.Now()
		duringFinal = append(duringFinal, app.run(func() {
			f.pass(b, state.ActFinalize, n)
		})...)
		final += time.Since(start)
	}
	rate := float64(n*b.N) / reenc.Seconds()
	b.ReportMetric(rate, "reencipher-keys/s")
	if lat > 0 && engines > 0 {
		b.ReportMetric(100*rate/(2*float64(engines)/lat.Seconds()), "%-of-bound")
	}
	b.ReportMetric(float64(n*b.N)/final.Seconds(), "finalize-keys/s")
	// With the application's CPU in it: what the process spent.
	b.ReportMetric(float64(n*b.N)/cpu.Seconds(), "reencipher-keys/cpu-s")
	bp99 := reportLatencies(b, "app-base", base)
	rp99 := reportLatencies(b, "app-reenc", during)
	fp99 := reportLatencies(b, "app-final", duringFinal)
	if bp99 > 0 {
		b.ReportMetric(float64(rp99)/float64(bp99), "app-reenc-p99/base")
		b.ReportMetric(float64(fp99)/float64(bp99), "app-final-p99/base")
	}
}

// modelApp is an application that encrypts 1 KiB with AES-CBC under a
// secure key of the token's master key, one request after the other,
// round robin over the two CCA APQNs; every result must be the first one.
type modelApp struct {
	b    *testing.B
	f    *passFixture
	key  []byte
	data []byte
	want []byte
	i    int
}

func newModelApp(b *testing.B, f *passFixture) *modelApp {
	key, err := f.hsm.GenerateKey(f.ctx, cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	if err != nil {
		b.Fatal(err)
	}
	return &modelApp{b: b, f: f, key: key, data: make([]byte, 1024)}
}

// run encrypts until work returns and gives each encryption's latency.
func (a *modelApp) run(work func()) []time.Duration {
	var out []time.Duration
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		iv := make([]byte, 16)
		for {
			select {
			case <-stop:
				return
			default:
			}
			q := []apqn.ID{cca1, cca2}[a.i%2]
			a.i++
			start := time.Now()
			ct, err := a.f.hsm.Encrypt(a.f.ctx, q, a.key, hsm.MechAESCBC, hsm.Params{IV: iv}, a.data)
			d := time.Since(start)
			if err != nil {
				a.b.Error(err)
				return
			}
			if a.want == nil {
				a.want = ct
			} else if !slices.Equal(ct, a.want) {
				a.b.Error("application: the ciphertext changed")
				return
			}
			out = append(out, d)
		}
	}()
	work()
	close(stop)
	<-done
	return out
}

// reportLatencies reports p50, p99, max and the calls above 5 ms of ds
// (sorted in place) under name, and returns the p99.
func reportLatencies(b *testing.B, name string, ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	over := 0
	for _, d := range ds {
		if d > 5*time.Millisecond {
			over++
		}
	}
	p99 := ds[len(ds)*99/100]
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), name+"-p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), name+"-p99-µs")
	b.ReportMetric(float64(ds[len(ds)-1].Microseconds()), name+"-max-µs")
	b.ReportMetric(float64(over), name+"-over-5ms")
	b.ReportMetric(float64(len(ds)), name+"-calls")
	return p99
}

// BenchmarkPassWriteStall measures what a pass does to another process's
// writes: a writer on a store handle of its own creates a private object
// every 2 ms, first alone, then while a reencipher pass over the token's
// keys runs, then during the finalize pass, with the pass writing
// commitChunk objects per transaction (as before) or as many as fit in
// txHold (the default). Reported
// per variant: the writer's p50/p99/max latency in µs alone and during
// each pass and how many of its writes took more than 5 ms.
// PKCSHSM_BENCH_KEYS sets the key count (default 20,000):
//
//	go test -run '^$' -bench 'BenchmarkPassWriteStall' -benchtime=1x ./tokenlib/mkchange/
func BenchmarkPassWriteStall(b *testing.B) {
	n := benchKeys(20000)
	for _, hold := range []time.Duration{0, txHold} {
		name := "chunk=250"
		if hold > 0 {
			name = "hold=" + hold.String()
		}
		b.Run(name, func(b *testing.B) {
			old := txHold
			txHold = hold
			defer func() { txHold = old }()
			var base, reenc, final []time.Duration
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
				i := 0
				// during writes every 2 ms until work returns.
				during := func(out *[]time.Duration, work func()) {
					stop, done := make(chan struct{}), make(chan struct{})
					go func() {
						defer close(done)
						for {
							select {
							case <-stop:
								return
							case <-time.After(2 * time.Millisecond):
							}
							i++
							o := &store.Object{Class: uint(ck.CKO_DATA), Private: true,
								Attrs: map[uint32][]byte{uint32(ck.CKA_LABEL): fmt.Appendf(nil, "app %d", i)}}
							start := time.Now()
							if err := other.Create(f.ctx, odk, o); err != nil {
								b.Error(err)
								return
							}
							*out = append(*out, time.Since(start))
						}
					}()
					work()
					close(stop)
					<-done
				}
				during(&base, func() { time.Sleep(2 * time.Second) })
				b.StartTimer()
				during(&reenc, func() {
					f.pass(b, state.ActReencipher, n)
				})
				b.StopTimer()
				f.set(mkvp.CCAAES, cca1, cca2)
				b.StartTimer()
				during(&final, func() {
					f.pass(b, state.ActFinalize, n)
				})
				other.Close()
			}
			reportLatencies(b, "alone", base)
			reportLatencies(b, "reenc", reenc)
			reportLatencies(b, "final", final)
		})
	}
}

func benchKeys(def int) int {
	if v, err := strconv.Atoi(os.Getenv("PKCSHSM_BENCH_KEYS")); err == nil && v > 0 {
		return v
	}
	return def
}
