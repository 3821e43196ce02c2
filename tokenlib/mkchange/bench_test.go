package mkchange

import (
	"fmt"
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
func BenchmarkPass(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			if n > 10000 && testing.Short() {
				b.Skip("100,000 objects: not in -short runs")
			}
			var reenc, final time.Duration
			for b.Loop() {
				b.StopTimer()
				f := newPassFixture(b, n)
				b.StartTimer()
				start := time.Now()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActReencipher, nil); err != nil || c != n {
					b.Fatalf("reencipher: %d changed, %v", c, err)
				}
				reenc += time.Since(start)
				b.StopTimer()
				f.set(mkvp.CCAAES, cca1, cca2)
				b.StartTimer()
				start = time.Now()
				if c, err := f.tok.Pass(f.ctx, f.st, f.dk, f.hsm, f.op, state.ActFinalize, nil); err != nil || c != n {
					b.Fatalf("finalize: %d changed, %v", c, err)
				}
				final += time.Since(start)
			}
			b.ReportMetric(float64(n*b.N)/reenc.Seconds(), "reencipher-objects/s")
			b.ReportMetric(float64(n*b.N)/final.Seconds(), "finalize-objects/s")
		})
	}
}
