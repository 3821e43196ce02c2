package state

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func pattern(t testing.TB, typ mkvp.Type, s string) mkvp.Pattern {
	t.Helper()
	p, _, err := mkvp.Parse(typ, s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sampleOp(t testing.TB, apqns string, types ...mkvp.Type) *Op {
	t.Helper()
	l, err := apqn.ParseList(apqns)
	if err != nil {
		t.Fatal(err)
	}
	op := &Op{APQNs: l, New: map[mkvp.Type]mkvp.Pattern{}}
	for _, typ := range types {
		op.New[typ] = pattern(t, typ, strings.Repeat("A1", typ.Size()))
	}
	return op
}

func TestID(t *testing.T) {
	seen := map[ID]bool{}
	for range 1000 {
		id, err := NewID()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseID(string(id)); err != nil {
			t.Fatalf("NewID gave invalid %q: %v", id, err)
		}
		seen[id] = true
	}
	if len(seen) < 990 {
		t.Fatalf("only %d distinct ids out of 1000", len(seen))
	}
	for _, bad := range []string{"", "abc", "abcdefg", "../abc", "ab/cde", "abc de", "abc-de", "abcd\x00e", "abcdé", ".lock0"} {
		if _, err := ParseID(bad); err == nil || errclass.Of(err) != errclass.InvalidArgument || errclass.Hint(err) == "" {
			t.Errorf("ParseID(%q) = %v", bad, err)
		}
	}
}

func TestConflicts(t *testing.T) {
	a := sampleOp(t, "01.0033,02.0033", mkvp.CCAAES, mkvp.CCAAPKA)
	a.ID = "aaaaaa"
	cases := []struct {
		name string
		b    *Op
		want int
	}{
		{"same APQN same type", sampleOp(t, "02.0033", mkvp.CCAAES), 1},
		{"both types both APQNs", sampleOp(t, "01.0033,02.0033", mkvp.CCAAES, mkvp.CCAAPKA), 4},
		{"same APQN other type", sampleOp(t, "01.0033", mkvp.CCASYM), 0},
		{"other APQN same type", sampleOp(t, "03.0033", mkvp.CCAAES), 0},
		{"EP11 on same APQN", sampleOp(t, "01.0033", mkvp.EP11WK), 0},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.b.Conflicts(a)
			if len(got) != tt.want {
				t.Fatalf("conflicts = %v, want %d", got, tt.want)
			}
			if tt.want > 0 && !strings.Contains(got[0].String(), "operation 'aaaaaa' also affects APQN") {
				t.Fatalf("message %q", got[0])
			}
		})
	}
}

func TestStateMachine(t *testing.T) {
	allowed := map[[2]State]bool{}
	for from, tos := range transitions {
		for _, to := range tos {
			allowed[[2]State{from, to}] = true
		}
	}
	states := []State{Initial, Reenciphering, Reenciphered, Finalizing, Canceling, Error}
	for _, from := range states {
		for _, to := range states {
			want := from == to || allowed[[2]State{from, to}]
			if CanMove(from, to) != want {
				t.Errorf("CanMove(%s, %s) = %v", from, to, !want)
			}
		}
	}
	// Every state but the terminal-by-removal ones has a way forward.
	for _, s := range states {
		if len(transitions[s]) == 0 {
			t.Errorf("state %s has no way out", s)
		}
	}
	op := sampleOp(t, "01.0001", mkvp.CCAAES)
	op.ID = "abcdef"
	if err := op.Move(Finalizing, time.Now()); errclass.Of(err) != errclass.FailedPrecondition {
		t.Fatalf("INITIAL→FINALIZING: %v", err)
	}
	if Reenciphered.Text() != "Key objects have been re-enciphered,\nnew master key(s) can now be set/activated" || State(7).Text() != "Unknown" {
		t.Fatal("state texts")
	}
}

func TestCodec(t *testing.T) {
	op := sampleOp(t, "06.0033,0e.0033", mkvp.EP11WK)
	op.ID = "uNA5QP"
	op.State = Reenciphered
	op.UID = 0
	op.Slots = []Slot{{ID: 4, Label: "ep11", Serial: "93AADFK7", TokenType: "ep11",
		Current: map[mkvp.Type]mkvp.Pattern{mkvp.EP11WK: pattern(t, mkvp.EP11WK, "8B991263E3A8F4E4BE0D5EC8F0A4DF9E")}}}
	op.Transitions = []Transition{{Initial, time.Unix(1700000000, 0).UTC()}, {Reenciphered, time.Unix(1700000100, 0).UTC()}}
	raw, err := Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Encode(back)
	if !bytes.Equal(raw, again) {
		t.Fatalf("round trip differs:\n%s\n%s", raw, again)
	}
	if back.Slots[0].Current[mkvp.EP11WK] != op.Slots[0].Current[mkvp.EP11WK] || back.Updated() != op.Transitions[1].At {
		t.Fatal("fields lost")
	}
	corrupt := map[string][]byte{
		"empty":         nil,
		"truncated":     raw[:len(raw)/2],
		"no trailer":    raw[:bytes.LastIndex(raw, []byte(sumPrefix))],
		"flipped bit":   flip(raw, len(raw)/2),
		"wrong magic":   bytes.Replace(raw, []byte(magic), []byte("opencryptoki-op-xx"), 1),
		"version 3":     resum(bytes.Replace(raw, []byte(magic+" 2"), []byte(magic+" 3"), 1)),
		"version 0":     resum(bytes.Replace(raw, []byte(magic+" 2"), []byte(magic+" 0"), 1)),
		"v1 with gen":   resum(bytes.Replace(bytes.Replace(raw, []byte(magic+" 2"), []byte(magic+" 1"), 1), []byte(`"uid": 0,`), []byte(`"uid": 0, "gen": 4,`), 1)),
		"unknown field": resum(bytes.Replace(raw, []byte(`"id":`), []byte(`"color": 1, "id":`), 1)),
		"bad state":     resum(bytes.Replace(raw, []byte(`"REENCIPHERED"`), []byte(`"DONE"`), 1)),
		"bad id":        resum(bytes.Replace(raw, []byte(`"uNA5QP"`), []byte(`"../../x"`), 1)),
		"dup apqn":      resum(bytes.Replace(raw, []byte(`"0E.0033"`), []byte(`"06.0033"`), 1)),
		"short mkvp":    resum(bytes.Replace(raw, []byte(`"8B991263E3A8F4E4BE0D5EC8F0A4DF9E"`), []byte(`"8B99"`), 1)),
	}
	for name, in := range corrupt {
		t.Run(name, func(t *testing.T) {
			if op, err := Decode(in); err == nil || op != nil || errclass.Of(err) != errclass.DataLoss {
				t.Fatalf("Decode = %v, %v; want a data loss error", op, err)
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x20
	return c
}

// resum recomputes the checksum so the test reaches the later checks.
func resum(raw []byte) []byte {
	i := bytes.LastIndex(raw, []byte(sumPrefix))
	var b bytes.Buffer
	b.Write(raw[:i])
	sum := sha256sum(raw[:i])
	b.WriteString(sumPrefix + sum + "\n")
	return b.Bytes()
}

func FuzzDecode(f *testing.F) {
	op := &Op{ID: "abcDEF", State: Canceling, APQNs: apqn.List{apqn.MustParse("01.0001")},
		New: map[mkvp.Type]mkvp.Pattern{mkvp.CCASYM: mustPattern(mkvp.CCASYM)}}
	raw, err := Encode(op)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(magic + " 1\n{}" + sumPrefix + strings.Repeat("0", 64) + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		op, err := Decode(in)
		if err != nil {
			if op != nil || errclass.Of(err) != errclass.DataLoss {
				t.Fatalf("failed decode returned %v, class %v", op, errclass.Of(err))
			}
			return
		}
		out, err := Encode(op)
		if err != nil {
			t.Fatalf("decoded op does not encode: %v", err)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("re-encoded op does not decode: %v", err)
		}
		if out2, _ := Encode(back); !bytes.Equal(out, out2) {
			t.Fatal("encoding not stable")
		}
	})
}

func mustPattern(typ mkvp.Type) mkvp.Pattern {
	p, err := mkvp.New(bytes.Repeat([]byte{0x5a}, typ.Size()))
	if err != nil {
		panic(err)
	}
	return p
}

func openDir(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := Open(path, Options{Logger: zerolog.New(zerolog.NewTestWriter(t)), LockTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// snapshot returns the names and contents of the directory's files.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, dir)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDirLifecycle(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "HSM_MK_CHANGE")
	d := openDir(t, path)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != dirMode {
		t.Fatalf("dir mode = %v, %v", fi.Mode(), err)
	}
	op, err := d.Create(ctx, sampleOp(t, "01.0033,02.0033", mkvp.CCAAES))
	if err != nil {
		t.Fatal(err)
	}
	if op.State != Initial || op.Created().IsZero() || op.UID != os.Getuid() {
		t.Fatalf("created %+v", op)
	}
	if fi, _ := os.Stat(filepath.Join(path, string(op.ID))); fi.Mode().Perm() != fileMode {
		t.Fatalf("file mode %v", fi.Mode())
	}
	// A disjoint operation runs side by side, an intersecting one is refused
	// and changes nothing.
	if _, err := d.Create(ctx, sampleOp(t, "01.0033", mkvp.CCAAPKA)); err != nil {
		t.Fatalf("disjoint type refused: %v", err)
	}
	before := snapshot(t, path)
	_, err = d.Create(ctx, sampleOp(t, "02.0033,03.0033", mkvp.CCAAES))
	var ce *ConflictError
	if !errors.As(err, &ce) || errclass.Of(err) != errclass.Conflict || len(ce.Conflicts) != 1 || ce.Conflicts[0].Other != op.ID {
		t.Fatalf("intersecting create: %v", err)
	}
	if after := snapshot(t, path); len(after) != len(before) {
		t.Fatalf("refused create changed the directory: %v", after)
	}
	// Update enforces the state machine.
	if _, err := d.Update(ctx, op.ID, func(o *Op) error { return o.Move(Finalizing, time.Now()) }); errclass.Of(err) != errclass.FailedPrecondition {
		t.Fatalf("INITIAL→FINALIZING: %v", err)
	}
	if _, err := d.Update(ctx, op.ID, func(o *Op) error { o.State = Finalizing; return nil }); errclass.Of(err) != errclass.FailedPrecondition {
		t.Fatalf("raw state jump: %v", err)
	}
	up, err := d.Update(ctx, op.ID, func(o *Op) error {
		o.Slots = []Slot{{ID: 2, Label: "cca", TokenType: "cca"}}
		return o.Move(Reenciphering, time.Now())
	})
	if err != nil || up.State != Reenciphering || len(up.Transitions) != 2 {
		t.Fatalf("update: %+v %v", up, err)
	}
	loaded, err := d.Load(ctx, op.ID)
	if err != nil || loaded.State != Reenciphering || loaded.Slots[0].Label != "cca" {
		t.Fatalf("load: %+v %v", loaded, err)
	}
	ops, broken, err := d.List(ctx)
	if err != nil || len(ops) != 2 || len(broken) != 0 || ops[0].ID != op.ID {
		t.Fatalf("list: %v %v %v", ops, broken, err)
	}
	if err := d.Remove(ctx, op.ID, Canceled); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Load(ctx, op.ID); errclass.Of(err) != errclass.NotFound || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("load removed: %v", err)
	}
	hist, skipped, err := d.History(ctx)
	if err != nil || skipped != 0 || len(hist) != 1 || hist[0].Outcome != Canceled || hist[0].Op.ID != op.ID {
		t.Fatalf("history: %+v %d %v", hist, skipped, err)
	}
	for _, bad := range []ID{"../etc", "abc"} {
		if _, err := d.Load(ctx, bad); errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("Load(%q) = %v", bad, err)
		}
		if err := d.Remove(ctx, bad, Canceled); errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("Remove(%q) = %v", bad, err)
		}
	}
}

func TestSymlinksRefused(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o750)
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, Options{}); errclass.Of(err) != errclass.PermissionDenied {
		t.Fatalf("symlinked directory: %v", err)
	}
	d := openDir(t, real)
	target := filepath.Join(base, "elsewhere")
	os.WriteFile(target, []byte("x"), 0o600)
	os.Symlink(target, filepath.Join(real, "Ab1234"))
	if _, err := d.Load(context.Background(), "Ab1234"); errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("symlinked operation file: %v", err)
	}
	// A symlinked lock file is refused too.
	other := filepath.Join(base, "other")
	os.Mkdir(other, 0o750)
	os.Symlink(target, filepath.Join(other, lockName))
	if _, err := Open(other, Options{}); errclass.Of(err) != errclass.PermissionDenied {
		t.Fatalf("symlinked lock file: %v", err)
	}
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ops")
	if _, err := Open(path, Options{ReadOnly: true}); errclass.Of(err) != errclass.NotFound {
		t.Fatalf("read-only open of a missing dir: %v", err)
	}
	w := openDir(t, path)
	op, err := w.Create(ctx, sampleOp(t, "01.0001", mkvp.EP11WK))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ops, _, err := r.List(ctx)
	if err != nil || len(ops) != 1 || ops[0].ID != op.ID {
		t.Fatalf("read-only list: %v %v", ops, err)
	}
	if _, err := r.Update(ctx, op.ID, func(*Op) error { return nil }); err == nil {
		t.Fatal("read-only update succeeded")
	}
}

// Every state names exactly the commands that complete it, an ERROR only
// the one that failed, and the states in which setting the new master
// keys would lose keys are flagged.
func TestCompletesAndSetLosesKeys(t *testing.T) {
	via := func(states ...State) *Op {
		op := sampleOp(t, "01.0001", mkvp.CCAAES)
		op.ID = "abcdef"
		if err := op.Move(Initial, time.Now()); err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if err := op.Move(s, time.Now()); err != nil {
				t.Fatalf("move to %s: %v", s, err)
			}
		}
		return op
	}
	cases := []struct {
		name  string
		op    *Op
		next  []Action
		loses bool
	}{
		{"initial", via(), []Action{ActCancel}, true},
		{"reenciphering", via(Reenciphering), []Action{ActCancel}, true},
		{"reenciphered", via(Reenciphering, Reenciphered), []Action{ActFinalize, ActCancel}, false},
		{"finalizing", via(Reenciphering, Reenciphered, Finalizing), []Action{ActFinalize}, false},
		{"canceling", via(Reenciphering, Reenciphered, Canceling), []Action{ActCancel}, true},
		{"error of finalize", via(Reenciphering, Reenciphered, Finalizing, Error), []Action{ActFinalize}, false},
		{"error of cancel", via(Reenciphering, Canceling, Error), []Action{ActCancel}, true},
		{"error of unknown origin", &Op{State: Error}, []Action{ActFinalize, ActCancel}, true},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.op.Completes(); !slices.Equal(got, tt.next) {
				t.Errorf("Completes = %v, want %v", got, tt.next)
			}
			if got := tt.op.SetLosesKeys(); got != tt.loses {
				t.Errorf("SetLosesKeys = %v, want %v", got, tt.loses)
			}
		})
	}
	// An ERROR goes back only where it came from.
	fe := via(Reenciphering, Reenciphered, Finalizing, Error)
	if fe.CanMove(Canceling) || !fe.CanMove(Finalizing) {
		t.Error("an ERROR of a finalize may move to CANCELING, or not back to FINALIZING")
	}
	if err := fe.Move(Canceling, time.Now()); errclass.Of(err) != errclass.FailedPrecondition {
		t.Errorf("Move(CANCELING) from an ERROR of a finalize: %v", err)
	}
	ce := via(Reenciphering, Canceling, Error)
	if ce.CanMove(Finalizing) || !ce.CanMove(Canceling) {
		t.Error("an ERROR of a cancel may move to FINALIZING, or not back to CANCELING")
	}
}
