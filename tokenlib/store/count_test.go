package store

import (
	"context"
	"errors"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestCount(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	var handles []uint64
	for i := range 5 {
		o := &Object{Class: ckoSecret, Private: i%2 == 0, Attrs: map[uint32][]byte{ckaLabel: []byte("k")}}
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		handles = append(handles, o.Handle)
	}
	tests := []struct {
		name  string
		dk    *DataKey
		f     Filter
		want  int
		class errclass.Class
	}{
		{"all", dk, Filter{}, 5, errclass.Unknown},
		{"public only without key", nil, Filter{}, 2, errclass.Unknown},
		{"after the second", dk, Filter{After: handles[1]}, 3, errclass.Unknown},
		{"after the last", dk, Filter{After: handles[4]}, 0, errclass.Unknown},
		{"other class", dk, Filter{Classes: []uint{ckoCert}}, 0, errclass.Unknown},
		{"attribute filter refused", dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k")}}, 0, errclass.InvalidArgument},
		{"limit refused", dk, Filter{Limit: 2}, 0, errclass.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := s.Count(ctx, tt.dk, tt.f)
			if errclass.Of(err) != tt.class || n != tt.want {
				t.Fatalf("Count = %d, %v; want %d, class %v", n, err, tt.want, tt.class)
			}
			if err != nil && errclass.Hint(err) == "" {
				t.Fatalf("refusal without a hint: %v", err)
			}
		})
	}
	dk.Destroy()
	if _, err := s.Count(ctx, dk, Filter{}); !errors.Is(err, ErrStaleDataKey) {
		t.Fatalf("Count with a destroyed key: %v", err)
	}
}
