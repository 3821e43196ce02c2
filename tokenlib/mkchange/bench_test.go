package mkchange

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
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
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
