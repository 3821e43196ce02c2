package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func TestSysfsRoundTrip(t *testing.T) {
	h, dir := newSim(t)
	_, err := h.LoadNew(bg, ccaIDs[0], mkvp.CCAAES, nil, hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LoadNew(bg, ccaIDs[0], mkvp.CCAAPKA, nil, hsm.Part{Index: 1, Total: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LoadNew(bg, ep11IDs[0], mkvp.EP11WK, nil, hsm.Part{}); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(bg, func(tx *Tx) error { return tx.SetOnline(ep11IDs[1], false) }); err != nil {
		t.Fatal(err)
	}
	bus := apqn.Bus{Root: filepath.Join(dir, "sys")}
	if bus.Root != h.SysfsRoot() {
		t.Fatalf("SysfsRoot = %s", h.SysfsRoot())
	}
	qs, err := bus.Queues()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 4 {
		t.Fatalf("bus has %d queues, want 4", len(qs))
	}
	for _, bq := range qs {
		info, err := h.Queue(bg, bq.ID)
		if err != nil {
			t.Fatal(err)
		}
		if bq.Card.Mode != info.Mode || bq.Usable() != info.Online {
			t.Errorf("%s: sysfs mode %s usable %v, backend %s online %v", bq.ID, bq.Card.Mode, bq.Usable(), info.Mode, info.Online)
		}
		wantFn := map[apqn.Mode]uint32{apqn.ModeCCA: 0x10000000, apqn.ModeEP11: 0x04000000}[info.Mode]
		if bq.Card.Functions != wantFn || bq.Card.Generation != 8 {
			t.Errorf("%s: functions %#x generation %d", bq.ID, bq.Card.Functions, bq.Card.Generation)
		}
		m, err := bus.MKVPs(bq.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range m.Lines {
			mt, _ := mkvp.ParseType(l.Key)
			r := info.MK[mt]
			reg := map[string]hsm.Register{"NEW": r.New, "CUR": r.Current, "OLD": r.Old}[l.Register]
			if !info.Online {
				if l.State != apqn.StateUnknown {
					t.Errorf("%s offline: %s %s state %s, want - -", bq.ID, l.Key, l.Register, l.State)
				}
				continue
			}
			if l.State != reg.State {
				t.Errorf("%s %s %s: sysfs %s, backend %s", bq.ID, l.Key, l.Register, l.State, reg.State)
			}
			if !reg.Pattern.IsZero() && !bytes.HasPrefix(l.Pattern, reg.Pattern.Bytes()) {
				t.Errorf("%s %s %s: sysfs pattern %x, backend %s", bq.ID, l.Key, l.Register, l.Pattern, reg.Pattern)
			}
		}
	}
	// The kernel's links in bus/ap/devices.
	for _, name := range []string{"card01", "01.0033", "0e.0033", "card0e"} {
		p := filepath.Join(dir, "sys", "bus", "ap", "devices", name)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s is not a symlink: %v", p, err)
		}
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			t.Fatalf("%s does not resolve to a directory: %v", p, err)
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "sys", "bus", "ap", "devices", "0e.0033", "mkvps"))
	if err != nil || string(raw) != "WK CUR: - -\nWK NEW: - -\n" {
		t.Fatalf("offline EP11 mkvps = %q (%v)", raw, err)
	}
}

func TestInitRejects(t *testing.T) {
	a, b := apqn.MustParse("01.0001"), apqn.MustParse("01.0002")
	cases := []struct {
		name string
		topo Topology
		want string
	}{
		{"empty", Topology{}, "empty topology"},
		{"empty group", Topology{Groups: []Group{{Mode: apqn.ModeCCA}}}, "no APQNs"},
		{"duplicate", Topology{Groups: []Group{{Mode: apqn.ModeCCA, APQNs: []apqn.ID{a, a}}}}, "more than once"},
		{"both modes", Topology{Groups: []Group{{Mode: apqn.ModeCCA, APQNs: []apqn.ID{a}}, {Mode: apqn.ModeEP11, APQNs: []apqn.ID{a}}}}, "both CCA and EP11"},
		{"card in both modes", Topology{Groups: []Group{{Mode: apqn.ModeCCA, APQNs: []apqn.ID{a}}, {Mode: apqn.ModeEP11, APQNs: []apqn.ID{b}}}}, "cannot be both"},
		{"accelerator", Topology{Groups: []Group{{Mode: apqn.ModeAccel, APQNs: []apqn.ID{a}}}}, "cannot be simulated"},
		{"card type", Topology{Groups: []Group{{Mode: apqn.ModeCCA, APQNs: []apqn.ID{a}, CardType: "CEX8P"}}}, "not a CCA-Coproc card"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sim")
			err := Init(dir, c.topo)
			if errclass.Of(err) != errclass.InvalidArgument || !strings.Contains(err.Error(), c.want) || errclass.Hint(err) == "" {
				t.Fatalf("err = %v (hint %q), want invalid argument mentioning %q with a hint", err, errclass.Hint(err), c.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a rejected topology created %s", dir)
			}
		})
	}
}

func TestInitExisting(t *testing.T) {
	h, dir := newSim(t)
	before := snapshotDir(t, dir)
	err := Init(dir, testTopology())
	if errclass.Of(err) != errclass.Conflict {
		t.Fatalf("second Init: %v, want conflict", err)
	}
	if after := snapshotDir(t, dir); !equalSnap(before, after) {
		t.Fatal("refused Init changed the directory")
	}
	old := mustQueue(t, h, ccaIDs[0]).MK[mkvp.CCAAES].Current.Pattern
	topo := testTopology()
	topo.Force = true
	if err := Init(dir, topo); err != nil {
		t.Fatal(err)
	}
	// The open handle sees the new simulator at its next call.
	if now := mustQueue(t, h, ccaIDs[0]).MK[mkvp.CCAAES].Current.Pattern; now == old {
		t.Fatal("forced Init kept the old master key (or the open handle did not reload)")
	}
}

func TestSeedAndGroups(t *testing.T) {
	topo := testTopology()
	topo.Seed = []byte("seed")
	d1, d2 := t.TempDir(), t.TempDir()
	if err := Init(d1, topo); err != nil {
		t.Fatal(err)
	}
	if err := Init(d2, topo); err != nil {
		t.Fatal(err)
	}
	h1, h2 := openSim(t, d1), openSim(t, d2)
	for _, id := range append(append([]apqn.ID{}, ccaIDs...), ep11IDs...) {
		if a, b := mustQueue(t, h1, id), mustQueue(t, h2, id); a.MK[mkvp.CCAAES] != b.MK[mkvp.CCAAES] || a.MK[mkvp.EP11WK] != b.MK[mkvp.EP11WK] {
			t.Errorf("%s: the same seed gave different keys", id)
		}
	}
	// One group shares its keys; types and groups differ.
	c0, c1 := mustQueue(t, h1, ccaIDs[0]), mustQueue(t, h1, ccaIDs[1])
	if c0.MK[mkvp.CCAAES] != c1.MK[mkvp.CCAAES] || c0.MK[mkvp.CCASYM] != c1.MK[mkvp.CCASYM] {
		t.Error("APQNs of one group have different keys")
	}
	if c0.MK[mkvp.CCAAES].Current.Pattern == c0.MK[mkvp.CCAAPKA].Current.Pattern {
		t.Error("AES and APKA share a key")
	}
}

func mustQueue(t *testing.T, h *HSM, id apqn.ID) hsm.QueueInfo {
	t.Helper()
	q, err := h.Queue(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestOtherHandleSeesChange: a second handle (as another process would)
// sees an officer step at its next operation.
func TestOtherHandleSeesChange(t *testing.T) {
	officer, dir := newSim(t)
	app := openSim(t, dir)
	key, err := app.GenerateKey(bg, ep11IDs[0], hsm.KeySpec{Type: hsm.KeyAES, Bits: 256})
	if err != nil {
		t.Fatal(err)
	}
	p, err := officer.LoadNew(bg, ep11IDs[0], mkvp.EP11WK, nil, hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustQueue(t, app, ep11IDs[0]).MK[mkvp.EP11WK].New; got.State != apqn.StateUncommitted || got.Pattern != p {
		t.Fatalf("app sees NEW %+v after load, want uncommitted %s", got, p)
	}
	if err := officer.Commit(bg, ep11IDs[0]); err != nil {
		t.Fatal(err)
	}
	renc, err := app.Reencipher(bg, ep11IDs[0], key, hsm.ToNew)
	if err != nil {
		t.Fatal(err)
	}
	if err := officer.Set(bg, ep11IDs[0], mkvp.EP11WK); err != nil {
		t.Fatal(err)
	}
	_, err = app.Encrypt(bg, ep11IDs[0], key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
	if !errors.Is(err, hsm.ErrWrongMK) {
		t.Fatalf("old EP11 key after set in another handle: %v, want ErrWrongMK", err)
	}
	if _, err := app.Encrypt(bg, ep11IDs[0], renc, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
		t.Fatalf("re-enciphered key after set: %v", err)
	}
}

func TestCorruptState(t *testing.T) {
	cases := []struct {
		name   string
		mangle func([]byte) []byte
		class  errclass.Class
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)-5] ^= 1; return b }, errclass.DataLoss},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, errclass.DataLoss},
		{"empty", func([]byte) []byte { return nil }, errclass.DataLoss},
		{"other magic", func(b []byte) []byte { return append([]byte("x"), b...) }, errclass.DataLoss},
		{"future version", func(b []byte) []byte { return bytes.Replace(b, []byte(" v1 "), []byte(" v9 "), 1) }, errclass.FailedPrecondition},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, dir := newSim(t)
			path := filepath.Join(dir, "state")
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, c.mangle(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(dir, Options{})
			if errclass.Of(err) != c.class || !strings.Contains(err.Error(), path) || errclass.Hint(err) == "" {
				t.Fatalf("Open: %v, want %s naming %s with a hint", err, c.class, path)
			}
			// An open handle notices at its next reload; officer steps refuse.
			if err := h.ClearNew(bg, ccaIDs[0], mkvp.CCAAES); errclass.Of(err) != c.class {
				t.Fatalf("ClearNew on corrupt state: %v", err)
			}
			h.gen.bump()
			if _, err := h.Queues(bg); errclass.Of(err) != c.class {
				t.Fatalf("Queues after a reload of corrupt state: %v", err)
			}
		})
	}
	if _, err := Open(t.TempDir(), Options{}); errclass.Of(err) != errclass.NotFound || errclass.Hint(err) == "" {
		t.Fatalf("Open of an empty directory: %v, want not found with a hint", err)
	}
}

func TestFaults(t *testing.T) {
	h, dir := newSim(t)
	other := openSim(t, dir)
	q := ccaIDs[1]
	key, err := h.GenerateKey(bg, q, hsm.KeySpec{Type: hsm.KeyAES, Bits: 128})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(x *HSM) error {
		_, err := x.Encrypt(bg, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
		return err
	}
	steps := []struct {
		name string
		tx   func(tx *Tx) error
		want []error // results of consecutive operations in the other handle
	}{
		{"offline", func(tx *Tx) error { return tx.SetOnline(q, false) }, []error{hsm.ErrOffline}},
		{"online", func(tx *Tx) error { return tx.SetOnline(q, true) }, []error{nil}},
		{"checkstop", func(tx *Tx) error { return tx.SetCheckstop(q, true) }, []error{hsm.ErrOffline}},
		{"clear", func(tx *Tx) error { return tx.ClearFaults(q) }, []error{nil}},
		{"fail after 2", func(tx *Tx) error { return tx.FailAfter(q, 2) }, []error{nil, nil, hsm.ErrOffline, hsm.ErrOffline}},
		{"clear again", func(tx *Tx) error { return tx.ClearFaults(q) }, []error{nil, nil, nil}},
	}
	for _, s := range steps {
		if err := h.Do(bg, s.tx); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for i, want := range s.want {
			err := enc(other)
			if want == nil && err != nil || want != nil && (!errors.Is(err, want) || errclass.Of(err) != errclass.Unavailable) {
				t.Fatalf("%s: operation %d: %v, want %v", s.name, i+1, err, want)
			}
		}
	}
	f, err := h.Faults(q)
	if err != nil || f != (Faults{Online: true, FailAfter: -1}) {
		t.Fatalf("Faults = %+v, %v", f, err)
	}
	// Latency is added to each operation and bounded by the context.
	if err := h.Do(bg, func(tx *Tx) error { return tx.SetLatency(q, time.Minute) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 20*time.Millisecond)
	defer cancel()
	if _, err := other.Encrypt(ctx, q, key, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); errclass.Of(err) != errclass.DeadlineExceeded {
		t.Fatalf("slow APQN with a deadline: %v, want deadline exceeded", err)
	}
	// Bad knob values change nothing.
	before := snapshotDir(t, dir)
	for _, bad := range []func(tx *Tx) error{
		func(tx *Tx) error { return tx.FailAfter(q, -1) },
		func(tx *Tx) error { return tx.SetLatency(q, -time.Second) },
		func(tx *Tx) error { return tx.SetOnline(apqn.MustParse("33.0001"), false) },
	} {
		if err := h.Do(bg, bad); err == nil {
			t.Fatal("bad fault knob accepted")
		}
	}
	if !equalSnap(before, snapshotDir(t, dir)) {
		t.Fatal("rejected knob changed the state directory")
	}
}

func TestTxAllOrNothing(t *testing.T) {
	h, dir := newSim(t)
	before := snapshotDir(t, dir)
	err := h.Do(bg, func(tx *Tx) error {
		if _, err := tx.LoadNew(ccaIDs[0], mkvp.CCAAES, nil, hsm.Part{}); err != nil {
			return err
		}
		return tx.Set(ccaIDs[1], mkvp.CCAAES) // NEW empty there
	})
	if !errors.Is(err, hsm.ErrRegisterState) {
		t.Fatalf("err = %v", err)
	}
	if !equalSnap(before, snapshotDir(t, dir)) {
		t.Fatal("failed transaction changed the state directory")
	}
	if r := mustQueue(t, h, ccaIDs[0]).MK[mkvp.CCAAES].New; r.State != apqn.StateEmpty {
		t.Fatalf("first step of a failed transaction applied: %+v", r)
	}
}

func TestStateFilePermissions(t *testing.T) {
	_, dir := newSim(t)
	fi, err := os.Stat(filepath.Join(dir, "state"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (%v), want 0600: it holds the clear master keys", fi.Mode(), err)
	}
}

// snapshotDir reads every file and link below dir.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			out[rel] = "link:" + l
			return err
		case fi.IsDir():
			out[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			out[rel] = fi.Mode().String() + ":" + string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func equalSnap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func FuzzDecodeState(f *testing.F) {
	st, err := newState(testTopology())
	if err != nil {
		f.Fatal(err)
	}
	raw, err := encodeState(st)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte("pkcshsm-sim-state v1 sha256:00\n{}"))
	f.Add([]byte(`{"version":1,"queues":[]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkStateDecode(t, raw)
		// The checksum stops most mutations at the header; also feed the
		// input as a body with a valid header, to reach the JSON decoder
		// and the validation.
		sum := sha256.Sum256(raw)
		checkStateDecode(t, append([]byte("pkcshsm-sim-state v1 sha256:"+hex.EncodeToString(sum[:])+"\n"), raw...))
	})
}

func checkStateDecode(t *testing.T, raw []byte) {
	{
		s, err := decodeState("state", raw)
		if err != nil {
			if c := errclass.Of(err); c != errclass.DataLoss && c != errclass.FailedPrecondition {
				t.Fatalf("error of class %s: %v", c, err)
			}
			return
		}
		enc, err := encodeState(s)
		if err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
		s2, err := decodeState("state", enc)
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		enc2, _ := encodeState(s2)
		if !bytes.Equal(enc, enc2) {
			t.Fatal("decode(encode(s)) != s")
		}
		_ = buildSnapshot(s, 0) // every valid state can be served
		for i := range s.Queues {
			if _, err := mkvpsText(&s.Queues[i]); err != nil {
				t.Fatalf("valid state renders no mkvps: %v", err)
			}
		}
	}
}

// TestNoRereadWithoutGeneration proves operations do not read the state
// file while the generation counter stands still, and do once it moves.
func TestNoRereadWithoutGeneration(t *testing.T) {
	h, dir := newSim(t)
	if _, err := h.Queue(bg, ccaIDs[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := h.GenerateKey(bg, ccaIDs[0], hsm.KeySpec{Type: hsm.KeyAES, Bits: 128}); err != nil {
			t.Fatalf("operation re-read the state file without a generation change: %v", err)
		}
	}
	h.gen.bump()
	if _, err := h.Queue(bg, ccaIDs[0]); errclass.Of(err) != errclass.DataLoss {
		t.Fatalf("after a generation change: %v, want data loss", err)
	}
}

func TestPatternOf(t *testing.T) {
	key := bytes.Repeat([]byte{0x11}, 32)
	sum := func(prefix byte, k []byte) []byte {
		h := sha256.Sum256(append([]byte{prefix}, k...))
		return h[:]
	}
	for _, c := range []struct {
		t    mkvp.Type
		key  []byte
		want []byte
		sys  int
	}{
		{mkvp.CCAAES, key, sum(0x01, key)[:8], 8},
		{mkvp.CCAAPKA, key, sum(0x01, key)[:8], 8},
		{mkvp.CCASYM, key[:24], sum(0x02, key[:24])[:8], 8},
		{mkvp.CCAASYM, key[:24], sum(0x03, key[:24])[:8], 16},
		{mkvp.EP11WK, key, sum(0x04, key)[:16], 32},
	} {
		if got := PatternOf(c.t, c.key); !bytes.Equal(got.Bytes(), c.want) {
			t.Errorf("%s pattern %s, want %x", c.t, got, c.want)
		}
		if s := sysfsPattern(c.t, c.key); len(s) != c.sys || !bytes.HasPrefix(s, c.want) {
			t.Errorf("%s sysfs pattern %x", c.t, s)
		}
	}
}
