package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"
)

// benchKey is a realistic secure-key object: a few small attributes and an
// HSM blob of a CCA AES key token's size.
func benchKey(i int, private bool) *Object {
	return &Object{Class: ckoSecret, Private: private, Attrs: map[uint32][]byte{
		ckaClass:    {4, 0, 0, 0, 0, 0, 0, 0},
		ckaKeyType:  {0x1f, 0, 0, 0, 0, 0, 0, 0},
		ckaLabel:    []byte(fmt.Sprintf("key-%06d", i)),
		ckaID:       []byte(fmt.Sprintf("id-%06d", i)),
		ckaSensitiv: {1},
		ckaOpaque:   bytes.Repeat([]byte{byte(i)}, 136),
	}}
}

func benchToken(b *testing.B) (*Store, *DataKey) {
	b.Helper()
	return newTokenIn(b, b.TempDir(), testOptions(b))
}

// fill creates n objects in batches of 10,000.
func fill(b *testing.B, s *Store, dk *DataKey, n int, private bool) {
	b.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 10000 {
		err := s.Batch(ctx, dk, func(tx *Tx) error {
			for i := start; i < min(n, start+10000); i++ {
				o := benchKey(i, private)
				if i%2 == 1 {
					o.Class = ckoPrivate
				}
				if err := tx.Create(o); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate is one durable (fsynced) transaction per object.
func BenchmarkCreate(b *testing.B) {
	for _, private := range []bool{false, true} {
		b.Run(fmt.Sprintf("private=%v", private), func(b *testing.B) {
			ctx := context.Background()
			s, dk := benchToken(b)
			i := 0
			for b.Loop() {
				if err := s.Create(ctx, dk, benchKey(i, private)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkList10k finds one key by class and label among 10,000 objects
// (5,000 of the class), without any cache.
func BenchmarkList10k(b *testing.B) {
	for _, private := range []bool{false, true} {
		b.Run(fmt.Sprintf("private=%v", private), func(b *testing.B) {
			ctx := context.Background()
			s, dk := benchToken(b)
			fill(b, s, dk, 10000, private)
			f := Filter{Classes: []uint{ckoSecret}, Attrs: map[uint32][]byte{ckaLabel: []byte("key-004242")}}
			for b.Loop() {
				objs, err := s.List(ctx, dk, f)
				if err != nil || len(objs) != 1 {
					b.Fatalf("List: %d objects, %v", len(objs), err)
				}
			}
		})
	}
}

// BenchmarkListAll10k decodes all 10,000 private objects (what a cache
// fill costs).
func BenchmarkListAll10k(b *testing.B) {
	ctx := context.Background()
	s, dk := benchToken(b)
	fill(b, s, dk, 10000, true)
	for b.Loop() {
		objs, err := s.List(ctx, dk, Filter{})
		if err != nil || len(objs) != 10000 {
			b.Fatalf("List: %d objects, %v", len(objs), err)
		}
	}
}

// BenchmarkGeneration is the cache check.
func BenchmarkGeneration(b *testing.B) {
	ctx := context.Background()
	s, _ := benchToken(b)
	for b.Loop() {
		if _, err := s.Generation(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogin is one USER login with the default KDF.
func BenchmarkLogin(b *testing.B) {
	ctx := context.Background()
	opts := testOptions(b)
	opts.KDF = DefaultKDF
	s, _ := newTokenIn(b, b.TempDir(), opts)
	b.ReportMetric(float64(DefaultKDF.MemoryKiB), "KiB")
	for b.Loop() {
		dk, err := s.Login(ctx, User, userPIN)
		if err != nil {
			b.Fatal(err)
		}
		dk.Destroy()
	}
}

// BenchmarkRewrite is the MK-change pass: every private object gets a new
// sealed CKA_IBM_OPAQUE_REENC, in durable batches of 5,000 (page, update,
// commit). One b.N iteration rewrites the whole token.
func BenchmarkRewrite(b *testing.B) {
	const reenc = 0x80000002
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			ctx := context.Background()
			s, dk := benchToken(b)
			fill(b, s, dk, n, true)
			blob := bytes.Repeat([]byte{0x5a}, 136)
			round := 0
			for b.Loop() {
				round++
				blob[0] = byte(round)
				var after uint64
				done := 0
				for {
					var page int
					err := s.Batch(ctx, dk, func(tx *Tx) error {
						objs, err := tx.List(Filter{After: after, Limit: 5000})
						if err != nil {
							return err
						}
						for _, o := range objs {
							o.Attrs[reenc] = blob
							if err := tx.Update(o); err != nil {
								return err
							}
						}
						page = len(objs)
						if page > 0 {
							after = objs[page-1].Handle
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
					if page == 0 {
						break
					}
					done += page
				}
				if done != n {
					b.Fatalf("rewrote %d objects, want %d", done, n)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}
