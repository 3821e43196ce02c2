package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func labelled(label string, private bool, class uint) *Object {
	o := keyObject(label, private)
	o.Class = class
	o.Attrs[ckaClass] = []byte{byte(class), 0, 0, 0, 0, 0, 0, 0}
	return o
}

// queryPlan returns SQLite's plan for the query Find builds for f.
func queryPlan(t *testing.T, s *Store, dk *DataKey, f Filter, cols string) string {
	t.Helper()
	q, err := s.buildQuery(dk, f, cols)
	if err != nil || q.none {
		t.Fatalf("buildQuery: %v none=%v", err, q.none)
	}
	rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+q.text, q.args...)
	if err != nil {
		t.Fatalf("explain %s: %v", q.text, err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, detail)
	}
	return strings.Join(lines, "\n")
}

// TestFindUsesIndex checks the plans: a label or id search reads its
// index (no scan of the object table, no sort), a one-class search the
// class index, and neither decodes an object.
func TestFindUsesIndex(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	err := s.Batch(ctx, dk, func(tx *Tx) error {
		for i := range 300 {
			if err := tx.Create(labelled(fmt.Sprintf("k-%03d", i), i%2 == 0, ckoSecret)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		dk     *DataKey
		f      Filter
		index  string
		noScan bool
	}{
		{"label, logged in", dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-007")}}, "object_label", true},
		{"label, public", nil, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-007")}}, "object_label", true},
		{"label and class, paged", dk, Filter{Classes: []uint{ckoSecret}, Attrs: map[uint32][]byte{ckaLabel: []byte("k-007")}, After: 3, Limit: 10}, "object_label", true},
		{"id", dk, Filter{Attrs: map[uint32][]byte{ckaID: {}}}, "object_id", true},
		{"label wins over id", dk, Filter{Attrs: map[uint32][]byte{ckaID: {}, ckaLabel: []byte("x")}}, "object_label", true},
		{"one class, paged", dk, Filter{Classes: []uint{ckoSecret}, Limit: 100}, "object_class", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := queryPlan(t, s, tc.dk, tc.f, "handle")
			if !strings.Contains(plan, tc.index) {
				t.Errorf("plan does not use %s:\n%s", tc.index, plan)
			}
			if tc.noScan && (strings.Contains(plan, "SCAN object") || strings.Contains(plan, "TEMP B-TREE")) {
				t.Errorf("plan scans the table or sorts:\n%s", plan)
			}
		})
	}

	before := s.Stats().Decoded
	got, err := s.Find(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-007")}})
	if err != nil || len(got) != 1 {
		t.Fatalf("Find label k-007: %v %v", got, err)
	}
	o, err := s.Get(ctx, dk, got[0])
	if err != nil || string(o.Attrs[ckaLabel]) != "k-007" {
		t.Fatalf("found object: %v", err)
	}
	all, err := s.Find(ctx, dk, Filter{Classes: []uint{ckoSecret}})
	if err != nil || len(all) != 300 || !slices.IsSorted(all) {
		t.Fatalf("Find class: %d handles, sorted %v, %v", len(all), slices.IsSorted(all), err)
	}
	if d := s.Stats().Decoded - before; d != 1 {
		t.Errorf("%d objects decoded, want 1 (the Get)", d)
	}
}

// TestFindMatchesLikeList compares Find with a full List for filters of
// every kind, including pages, public and private objects, and a label
// shared by several objects.
func TestFindMatchesLikeList(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	err := s.Batch(ctx, dk, func(tx *Tx) error {
		for i := range 120 {
			label := fmt.Sprintf("k-%02d", i%40) // three objects per label
			class := uint(ckoSecret)
			if i%5 == 0 {
				class = 0 // CKO_DATA
			}
			o := labelled(label, i%3 != 0, class)
			o.Attrs[ckaID] = []byte{byte(i % 7)}
			if err := tx.Create(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	filters := []Filter{
		{},
		{Classes: []uint{ckoSecret}},
		{Classes: []uint{0, ckoSecret}, Limit: 7, After: 20},
		{Attrs: map[uint32][]byte{ckaLabel: []byte("k-05")}},
		{Attrs: map[uint32][]byte{ckaLabel: []byte("k-05")}, Private: &yes},
		{Attrs: map[uint32][]byte{ckaLabel: []byte("k-05")}, Private: &no},
		{Attrs: map[uint32][]byte{ckaLabel: []byte("k-05"), ckaID: {5}}},
		{Attrs: map[uint32][]byte{ckaID: {3}}, Limit: 4},
		{Attrs: map[uint32][]byte{ckaID: {3}}, After: 60},
		{Attrs: map[uint32][]byte{ckaLabel: []byte("none")}},
		{Attrs: map[uint32][]byte{ckaOpaque: bytes.Repeat([]byte{0xA5}, 64)}, Limit: 9},
	}
	for _, key := range []*DataKey{dk, nil} {
		for i, f := range filters {
			objs, err := s.List(ctx, key, f)
			if err != nil {
				t.Fatal(err)
			}
			var want []uint64
			for _, o := range objs {
				want = append(want, o.Handle)
			}
			got, err := s.Find(ctx, key, f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("filter %d (logged in %v): Find %v, List %v", i, key != nil, got, want)
			}
		}
	}
	// A label search sees private objects only with the data key.
	pub, err := s.Find(ctx, nil, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-01")}})
	if err != nil {
		t.Fatal(err)
	}
	both, err := s.Find(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-01")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pub) != 1 || len(both) != 3 {
		t.Errorf("label k-01: %d public, %d in all, want 1 and 3", len(pub), len(both))
	}
}

// TestPrivateIndexNeedsTheDataKey: the index column of a private object is
// not the public digest of its label, so without the data key it cannot
// be matched against guessed labels.
func TestPrivateIndexNeedsTheDataKey(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	priv, pub := labelled("secret-label", true, ckoSecret), labelled("secret-label", false, ckoSecret)
	for _, o := range []*Object{priv, pub} {
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
	}
	col := func(h uint64) []byte {
		var b []byte
		if err := s.rdb.QueryRow(`SELECT label_ix FROM object WHERE handle = ?`, h).Scan(&b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	guess := s.pubIx.digest(ckaLabel, []byte("secret-label"))
	if !bytes.Equal(col(pub.Handle), guess) {
		t.Fatal("the public object's index is not the public digest")
	}
	if bytes.Equal(col(priv.Handle), guess) || bytes.Contains(col(priv.Handle), []byte("secret")) {
		t.Fatal("the private object's index can be matched without the data key")
	}
}

// TestIndexAfterMigration opens a token written with schema 1 (no index
// columns): searches still find its objects, and an update indexes them.
func TestIndexAfterMigration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	full := migrations
	withMigrationsUpTo(t, 1)
	s, dk := newTokenIn(t, dir, testOptions(t))
	priv, pub := labelled("old-private", true, ckoSecret), labelled("old-public", false, ckoSecret)
	for _, o := range []*Object{priv, pub} {
		// Written the way a schema-1 release did: no index columns.
		o.UniqueID = newUniqueID()
		res, err := s.wdb.Exec(`INSERT INTO object (unique_id, class, private, version, attrs) VALUES (?, ?, ?, 1, ?)`,
			o.UniqueID, int64(o.Class), boolInt(o.Private), encodeLegacy(o, dk))
		if err != nil {
			t.Fatal(err)
		}
		id, _ := res.LastInsertId()
		o.Handle = uint64(id)
	}
	s.Close()
	migrations = full
	s2 := openTest(t, dir)
	dk2, err := s2.Login(ctx, User, userPIN)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Object{priv, pub} {
		got, err := s2.Find(ctx, dk2, Filter{Attrs: map[uint32][]byte{ckaLabel: o.Attrs[ckaLabel]}})
		if err != nil || !slices.Equal(got, []uint64{o.Handle}) {
			t.Fatalf("Find %q after migration: %v %v (want %d)", o.Attrs[ckaLabel], got, err, o.Handle)
		}
		fresh, err := s2.Get(ctx, dk2, o.Handle)
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.Update(ctx, dk2, fresh); err != nil {
			t.Fatal(err)
		}
		var ix []byte
		if err := s2.rdb.QueryRow(`SELECT label_ix FROM object WHERE handle = ?`, o.Handle).Scan(&ix); err != nil || len(ix) != ixLen {
			t.Fatalf("index after update: %x %v", ix, err)
		}
		if got, err := s2.Find(ctx, dk2, Filter{Attrs: map[uint32][]byte{ckaLabel: o.Attrs[ckaLabel]}}); err != nil || len(got) != 1 {
			t.Fatalf("Find %q after indexing: %v %v", o.Attrs[ckaLabel], got, err)
		}
	}
}

// TestFindReturnsUnreadableObjects: an object whose stored bytes are
// damaged is still returned by a search the index or the columns answer,
// and reading it fails naming its handle, while its neighbours read fine.
func TestFindReturnsUnreadableObjects(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	var objs []*Object
	for i := range 5 {
		o := labelled(fmt.Sprintf("k-%d", i), i%2 == 0, ckoSecret)
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	victim := objs[2]
	if _, err := s.wdb.Exec(`UPDATE object SET attrs = substr(attrs, 1, 10) WHERE handle = ?`, victim.Handle); err != nil {
		t.Fatal(err)
	}
	got, err := s.Find(ctx, dk, Filter{Classes: []uint{ckoSecret}})
	if err != nil || len(got) != 5 {
		t.Fatalf("Find by class: %v %v", got, err)
	}
	got, err = s.Find(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("k-2")}})
	if err != nil || !slices.Equal(got, []uint64{victim.Handle}) {
		t.Fatalf("Find by the damaged object's label: %v %v", got, err)
	}
	_, err = s.Get(ctx, dk, victim.Handle)
	if errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), fmt.Sprintf("object %d", victim.Handle)) {
		t.Fatalf("Get damaged object: %v", err)
	}
	for _, o := range objs {
		if o != victim {
			if _, err := s.Get(ctx, dk, o.Handle); err != nil {
				t.Errorf("neighbour %d: %v", o.Handle, err)
			}
		}
	}
	list, err := s.List(ctx, dk, Filter{})
	if len(list) != 4 || errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), fmt.Sprint(victim.Handle)) {
		t.Fatalf("List: %d objects, %v", len(list), err)
	}
}

// TestClassifyByResultCode: SQLite errors get their class from the result
// code, and an error that only looks like one by its text does not.
func TestClassifyByResultCode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, DBName), bytes.Repeat([]byte("not a database "), 400), FileMode); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testOptions(t))
	if errclass.Of(err) != errclass.DataLoss {
		t.Errorf("open of a non-database: class %v (%v), want DataLoss", errclass.Of(err), err)
	}
	fake := errors.New("SQLITE_BUSY: database is locked (but not from SQLite)")
	if c := errclass.Of(classifyDB(fake)); c != errclass.Internal {
		t.Errorf("a look-alike error classified %v, want Internal", c)
	}
	if c := errclass.Of(classifyDB(fmt.Errorf("x: %w", sql.ErrConnDone))); c != errclass.FailedPrecondition {
		t.Errorf("closed connection classified %v", c)
	}

	// A real SQLITE_BUSY: another connection holds the write lock past a
	// short busy timeout.
	opts := testOptions(t)
	opts.BusyTimeout = 50 * 1e6 // 50 ms
	s := openTest(t, t.TempDir())
	s.Close()
	s1, err := Open(s.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	hold, err := s1.wdb.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback()
	if _, err := hold.Exec(`UPDATE token SET label = label`); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	err = s2.Delete(context.Background(), 1)
	if errclass.Of(err) != errclass.Unavailable {
		t.Errorf("write against a held lock: class %v (%v), want Unavailable", errclass.Of(err), err)
	}
}

// TestPartialReadUpdate: an object read with Filter.Only carries just the
// named attributes; changing them and updating keeps every other
// attribute exactly, for private and public objects; the set of types is
// still authenticated on a partial read.
func TestPartialReadUpdate(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	for _, private := range []bool{true, false} {
		o := labelled("partial", private, ckoSecret)
		o.Attrs[ckaID] = []byte("id-1")
		for i := range 20 {
			o.Attrs[uint32(0x200+i)] = []byte(fmt.Sprintf("other-%d", i))
		}
		if err := s.Create(ctx, dk, o); err != nil {
			t.Fatal(err)
		}
		full, err := s.Get(ctx, dk, o.Handle)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := s.List(ctx, dk, Filter{UniqueID: o.UniqueID, Only: []uint32{ckaOpaque, 0x205}})
		if err != nil || len(objs) != 1 {
			t.Fatalf("partial list: %v", err)
		}
		p := objs[0]
		if len(p.Attrs) != 2 || !bytes.Equal(p.Attrs[ckaOpaque], full.Attrs[ckaOpaque]) || string(p.Attrs[0x205]) != "other-5" {
			t.Fatalf("partial attrs: %v", p.Attrs)
		}
		p.Attrs[ckaOpaque] = []byte("new blob")
		p.Attrs[0x1000] = []byte("added")
		delete(p.Attrs, 0x205)
		if err := s.Update(ctx, dk, p); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, dk, o.Handle)
		if err != nil {
			t.Fatalf("read after partial update: %v", err)
		}
		want := full.Attrs
		want[ckaOpaque], want[0x1000] = []byte("new blob"), []byte("added")
		delete(want, 0x205)
		if len(got.Attrs) != len(want) {
			t.Fatalf("private=%v: %d attributes after update, want %d", private, len(got.Attrs), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got.Attrs[k], v) {
				t.Errorf("private=%v: attribute %#x = %q, want %q", private, k, got.Attrs[k], v)
			}
		}
		if hs, err := s.Find(ctx, dk, Filter{Attrs: map[uint32][]byte{ckaLabel: []byte("partial"), ckaID: []byte("id-1")}}); err != nil || !slices.Contains(hs, o.Handle) {
			t.Errorf("private=%v: the index lost the object after a partial update: %v %v", private, hs, err)
		}
		// Changing the private flag of a partial object is refused.
		objs, _ = s.List(ctx, dk, Filter{UniqueID: o.UniqueID, Only: []uint32{ckaOpaque}})
		objs[0].Private = !private
		if err := s.Update(ctx, dk, objs[0]); errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("private flag change of a partial object: %v", err)
		}
	}
	// A dropped attribute is detected by a partial read too.
	o := labelled("victim", true, ckoSecret)
	o.Attrs[0x300] = []byte("x")
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	editRaw(t, s, o.Handle, func(r *rawObject) {
		for i := range r.attrs {
			if r.attrs[i].typ == 0x300 {
				r.attrs = append(r.attrs[:i], r.attrs[i+1:]...)
				break
			}
		}
	})
	objs, err := s.List(ctx, dk, Filter{UniqueID: o.UniqueID, Only: []uint32{ckaOpaque}})
	if len(objs) != 0 || errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("partial read of a tampered object: %d objects, %v", len(objs), err)
	}
}

// TestDamagedFileAffectsOnlyItsObjects damages the database file itself
// — cut short, or one page overwritten — and checks that the token still
// opens, that every object either reads correctly or fails with a DataLoss
// error naming its handle, and that both happen (the damage hit some
// objects, not all).
func TestDamagedFileAffectsOnlyItsObjects(t *testing.T) {
	for _, damage := range []struct {
		name string
		fn   func(t *testing.T, path string, size int64)
	}{
		{"truncated", func(t *testing.T, path string, size int64) {
			if err := os.Truncate(path, size-40*4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"page overwritten", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), (size/4096/2)*4096); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(damage.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s, dk := newTokenIn(t, dir, testOptions(t))
			var handles []uint64
			err := s.Batch(ctx, dk, func(tx *Tx) error {
				for i := range 300 {
					o := labelled(fmt.Sprintf("k-%03d", i), i%2 == 0, ckoSecret)
					o.Attrs[ckaOpaque] = bytes.Repeat([]byte{byte(i)}, 1500)
					if err := tx.Create(o); err != nil {
						return err
					}
					handles = append(handles, o.Handle)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			s.Close() // checkpoints the WAL into token.db
			path := filepath.Join(dir, DBName)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			damage.fn(t, path, fi.Size())
			s2, err := Open(dir, testOptions(t))
			if err != nil {
				t.Fatalf("open damaged token: %v", err)
			}
			defer s2.Close()
			dk2, err := s2.Login(ctx, User, userPIN)
			if err != nil {
				t.Fatalf("login on damaged token: %v", err)
			}
			good, bad := 0, 0
			for i, h := range handles {
				o, err := s2.Get(ctx, dk2, h)
				switch {
				case err == nil:
					if string(o.Attrs[ckaLabel]) != fmt.Sprintf("k-%03d", i) || !bytes.Equal(o.Attrs[ckaOpaque], bytes.Repeat([]byte{byte(i)}, 1500)) {
						t.Fatalf("object %d read back wrong", h)
					}
					good++
				case errclass.Of(err) == errclass.DataLoss && strings.Contains(err.Error(), fmt.Sprintf("object %d", h)):
					bad++
				default:
					t.Fatalf("object %d: %v (class %v), want its data or a DataLoss error naming it", h, err, errclass.Of(err))
				}
			}
			if good == 0 || bad == 0 {
				t.Fatalf("%d objects readable, %d damaged; the damage should hit some, not all", good, bad)
			}
			t.Logf("%d readable, %d damaged", good, bad)
			if damage.name == "truncated" {
				// Served read-only: a write would build on lost pages.
				if err := s2.Create(ctx, dk2, labelled("new", true, ckoSecret)); errclass.Of(err) != errclass.DataLoss {
					t.Errorf("write to a truncated token: %v, want DataLoss", err)
				}
			}
		})
	}
}

// TestFindExcludeClasses: ExcludeClasses leaves the listed classes out without
// decoding, and does not change the plan of a label search.
func TestFindExcludeClasses(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	const ckoHWFeature = 5
	err := s.Batch(ctx, dk, func(tx *Tx) error {
		for i, c := range []uint{ckoSecret, ckoHWFeature, ckoSecret, ckoHWFeature} {
			if err := tx.Create(labelled(fmt.Sprintf("o-%d", i), false, c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Find(ctx, dk, Filter{})
	if err != nil || len(all) != 4 {
		t.Fatalf("Find everything: %v %v", all, err)
	}
	before := s.Stats().Decoded
	got, err := s.Find(ctx, dk, Filter{ExcludeClasses: []uint{ckoHWFeature}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint64{all[0], all[2]}; !slices.Equal(got, want) {
		t.Errorf("Find without HW features: %v, want %v", got, want)
	}
	if d := s.Stats().Decoded - before; d != 0 {
		t.Errorf("the class exclusion decoded %d objects", d)
	}
	got, err = s.Find(ctx, dk, Filter{ExcludeClasses: []uint{ckoHWFeature}, Attrs: map[uint32][]byte{ckaLabel: []byte("o-1")}})
	if err != nil || len(got) != 0 {
		t.Errorf("label of an excluded object: %v %v, want nothing", got, err)
	}
	if plan := queryPlan(t, s, dk, Filter{ExcludeClasses: []uint{ckoHWFeature}, Attrs: map[uint32][]byte{ckaLabel: []byte("o-1")}}, "handle"); !strings.Contains(plan, "object_label") {
		t.Errorf("a label search with an exclusion does not use the label index:\n%s", plan)
	}
}

// objectCount counts the stored objects, public and private.
func objectCount(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow(`SELECT count(*) FROM object`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
