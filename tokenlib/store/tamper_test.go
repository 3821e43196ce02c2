package store

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// TestTamperedObjectsAreDataLoss edits stored rows the way an attacker with
// write access to token.db could, and checks that every edit of a private
// object is detected as errclass.DataLoss, while List still returns the
// untouched objects along with the error.
func TestTamperedObjectsAreDataLoss(t *testing.T) {
	type pair struct{ victim, other *Object }
	tests := []struct {
		name   string
		tamper func(t *testing.T, s *Store, p pair)
	}{
		{"flipped bit in a sealed value", func(t *testing.T, s *Store, p pair) {
			editRaw(t, s, p.victim.Handle, func(r *rawObject) {
				for i := range r.attrs {
					if r.attrs[i].typ == ckaOpaque {
						r.attrs[i].val[20] ^= 1
					}
				}
			})
		}},
		{"value copied from another object", func(t *testing.T, s *Store, p pair) {
			donor := rawAttrs(t, s, p.other.Handle)
			editRaw(t, s, p.victim.Handle, func(r *rawObject) {
				for i := range r.attrs {
					if r.attrs[i].typ == ckaOpaque {
						r.attrs[i].val = donor[ckaOpaque]
					}
				}
			})
		}},
		{"value moved to another attribute type", func(t *testing.T, s *Store, p pair) {
			editRaw(t, s, p.victim.Handle, func(r *rawObject) {
				// swap the values of CKA_LABEL and CKA_ID (order stays sorted)
				var li, ii int
				for i, a := range r.attrs {
					switch a.typ {
					case ckaLabel:
						li = i
					case ckaID:
						ii = i
					}
				}
				r.attrs[li].val, r.attrs[ii].val = r.attrs[ii].val, r.attrs[li].val
			})
		}},
		{"attribute removed", func(t *testing.T, s *Store, p pair) {
			editRaw(t, s, p.victim.Handle, func(r *rawObject) { r.attrs = r.attrs[1:] })
		}},
		{"whole attribute list copied from another object", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE object SET attrs = (SELECT attrs FROM object WHERE handle = ?) WHERE handle = ?`, p.other.Handle, p.victim.Handle)
		}},
		{"blob list copied from another object", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE blob SET blobs = (SELECT blobs FROM blob WHERE handle = ?) WHERE handle = ?`, p.other.Handle, p.victim.Handle)
		}},
		{"blob list dropped (row made to look legacy)", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE blob SET blobs = NULL WHERE handle = ?`, p.victim.Handle)
		}},
		{"blob list emptied", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE blob SET blobs = x'010100' WHERE handle = ?`, p.victim.Handle)
		}},
		{"blob moved into the attribute list", func(t *testing.T, s *Store, p pair) {
			var blob, blobs []byte
			if err := s.rdb.QueryRow(`SELECT attrs, (SELECT blobs FROM blob WHERE blob.handle = object.handle) FROM object WHERE handle = ?`, p.victim.Handle).Scan(&blob, &blobs); err != nil {
				t.Fatal(err)
			}
			var r, rb rawObject
			if decodeRaw(blob, &r) != nil || decodeRaw(blobs, &rb) != nil {
				t.Fatal("undecodable rows")
			}
			r.attrs = append(r.attrs, rb.attrs...)
			rb.attrs = nil
			execSQL(t, s, `UPDATE object SET attrs = ? WHERE handle = ?`, encodeRaw(nil, &r), p.victim.Handle)
			execSQL(t, s, `UPDATE blob SET blobs = ? WHERE handle = ?`, encodeRaw(nil, &rb), p.victim.Handle)
		}},
		{"class changed", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE object SET class = 3 WHERE handle = ?`, p.victim.Handle)
		}},
		{"made public", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE object SET private = 0 WHERE handle = ?`, p.victim.Handle)
		}},
		{"garbage", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE object SET attrs = x'0102030405' WHERE handle = ?`, p.victim.Handle)
		}},
		{"clear values in a private object", func(t *testing.T, s *Store, p pair) {
			execSQL(t, s, `UPDATE object SET attrs = x'010001030161' WHERE handle = ?`, p.victim.Handle)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s, dk := newToken(t)
			victim, other := keyObject("victim", true), keyObject("other", true)
			for _, o := range []*Object{victim, other} {
				if err := s.Create(ctx, dk, o); err != nil {
					t.Fatal(err)
				}
			}
			tt.tamper(t, s, pair{victim, other})
			_, err := s.Get(ctx, dk, victim.Handle)
			wantClass(t, err, errclass.DataLoss, nil)
			if errclass.Hint(err) == "" {
				t.Error("DataLoss error without a hint")
			}
			objs, err := s.List(ctx, dk, Filter{})
			wantClass(t, err, errclass.DataLoss, nil)
			if len(objs) != 1 || objs[0].Handle != other.Handle {
				t.Fatalf("List returned %d objects, want only the untouched one", len(objs))
			}
			if !strings.Contains(err.Error(), "handles [1]") {
				t.Errorf("List error %q does not name the bad handle", err)
			}
			if _, err := s.Get(ctx, dk, other.Handle); err != nil {
				t.Fatalf("untouched object unreadable: %v", err)
			}
		})
	}
}

func execSQL(t *testing.T, s *Store, q string, args ...any) {
	t.Helper()
	if _, err := s.wdb.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// editRaw lets edit change the stored attributes of object h as one list
// (the attribute list and, for a split row, the blob list merged), then
// writes each type back to the list it came from, set tags unchanged.
func editRaw(t *testing.T, s *Store, h uint64, edit func(*rawObject)) {
	t.Helper()
	var blob, blobs []byte
	if err := s.rdb.QueryRow(`SELECT attrs, (SELECT blobs FROM blob WHERE blob.handle = object.handle) FROM object WHERE handle = ?`, h).Scan(&blob, &blobs); err != nil {
		t.Fatal(err)
	}
	var r, rb rawObject
	if err := decodeRaw(blob, &r); err != nil {
		t.Fatal(err)
	}
	split := blobs != nil
	if split {
		if err := decodeRaw(blobs, &rb); err != nil {
			t.Fatal(err)
		}
	}
	all := rawObject{sealed: r.sealed, attrs: append(slices.Clone(r.attrs), rb.attrs...)}
	slices.SortFunc(all.attrs, func(a, b rawAttr) int { return cmp.Compare(a.typ, b.typ) })
	edit(&all)
	r.attrs, rb.attrs = nil, nil
	for _, a := range all.attrs {
		if split && isBlobType(a.typ) {
			rb.attrs = append(rb.attrs, a)
		} else {
			r.attrs = append(r.attrs, a)
		}
	}
	execSQL(t, s, `UPDATE object SET attrs = ? WHERE handle = ?`, encodeRaw(nil, &r), h)
	if split {
		execSQL(t, s, `UPDATE blob SET blobs = ? WHERE handle = ?`, encodeRaw(nil, &rb), h)
	}
}
