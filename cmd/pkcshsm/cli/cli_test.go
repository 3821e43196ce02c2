package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

func listKeys(t *testing.T, slot string) []keyRecord {
	t.Helper()
	out := ok(t, lines(userPIN), "keys", "list", "--slot", slot, "--hsm-mkvp", "--json")
	var recs []keyRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, out)
	}
	return recs
}

// currentPattern reads the simulator's CURRENT pattern of t on q.
func currentPattern(t *testing.T, layout paths.Layout, q string, mt mkvp.Type) mkvp.Pattern {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	qi, err := h.Queue(context.Background(), apqn.MustParse(q))
	if err != nil {
		t.Fatal(err)
	}
	return qi.MK[mt].Current.Pattern
}

func TestTokenLifecycleAndKeys(t *testing.T) {
	layout := newRoot(t)
	out := ok(t, "", "slots")
	if strings.Count(out, "uninitialized") != 2 {
		t.Fatalf("slots before init:\n%s", out)
	}
	setupTokens(t)
	out = ok(t, "", "slots")
	if strings.Count(out, "initialized") != 2 || strings.Contains(out, "uninitialized") || strings.Contains(out, "not set") {
		t.Fatalf("slots after init:\n%s", out)
	}
	out = ok(t, "", "mechanisms", "--slot", "1")
	if !strings.Contains(out, "CKM_AES_GCM") || !strings.Contains(out, "generate_key_pair") {
		t.Fatalf("mechanisms:\n%s", out)
	}
	gens := [][]string{
		{"--type", "aes", "--label", "aes1"},
		{"--type", "aes", "--bits", "128", "--label", "aes2", "--id", "0a0b"},
		{"--type", "des3", "--label", "des"},
		{"--type", "hmac", "--bits", "512", "--label", "mac"},
		{"--type", "ec", "--curve", "P-384", "--label", "ec1"},
		{"--type", "rsa", "--bits", "2048", "--label", "rsa1"},
	}
	want := map[string]mkvp.Type{"aes1": mkvp.CCAAES, "aes2": mkvp.CCAAES, "des": mkvp.CCASYM, "mac": mkvp.CCAAES, "ec1": mkvp.CCAAPKA, "rsa1": mkvp.CCAAPKA}
	for _, slot := range []string{"0", "1"} {
		for _, g := range gens {
			ok(t, lines(userPIN), append([]string{"keys", "generate", "--slot", slot}, g...)...)
		}
		recs := listKeys(t, slot)
		if len(recs) != 8 { // 4 secret keys, 2 key pairs
			t.Fatalf("slot %s: %d keys listed: %+v", slot, len(recs), recs)
		}
		for _, r := range recs {
			if r.Class == "PUBLIC_KEY" {
				continue
			}
			if (r.KeyType == "AES" || r.KeyType == "DES3") && len(r.CheckValue) != 6 {
				t.Errorf("key %q has check value %q", r.Label, r.CheckValue)
			}
			mt, q := want[r.Label], "01.0033"
			if slot == "1" {
				mt, q = mkvp.EP11WK, "06.0033"
			}
			cur := currentPattern(t, layout, q, mt)
			if r.MKVP != cur.String() || r.Match != "CURRENT" || r.MKType != mt.LongName() {
				t.Errorf("slot %s key %q: %s %s %s, want %s %s CURRENT", slot, r.Label, r.MKType, r.MKVP, r.Match, mt.LongName(), cur)
			}
		}
	}
	// The table form names the same pattern.
	out = ok(t, lines(userPIN), "keys", "list", "--slot", "1", "--hsm-mkvp")
	if !strings.Contains(out, currentPattern(t, layout, "06.0033", mkvp.EP11WK).String()) || !strings.Contains(out, "8 keys") {
		t.Fatalf("table:\n%s", out)
	}
}

func TestWrongPINIsCounted(t *testing.T) {
	newRoot(t)
	setupTokens(t)
	r := pkcshsm(t, lines("99999999"), "keys", "list", "--slot", "0")
	if r.code != 7 || !strings.Contains(r.stderr, "error:") || !strings.Contains(r.stderr, "CKR_PIN_INCORRECT") && !strings.Contains(r.stderr, "PIN") {
		t.Fatalf("wrong PIN: exit %d\n%s", r.code, r.stderr)
	}
	if out := ok(t, "", "slots"); !strings.Contains(out, "set (1 wrong)") {
		t.Fatalf("failure not counted:\n%s", out)
	}
	ok(t, lines(userPIN), "keys", "list", "--slot", "0")
	if out := ok(t, "", "slots"); strings.Contains(out, "wrong") {
		t.Fatalf("success did not reset the counter:\n%s", out)
	}
}

func TestPINChange(t *testing.T) {
	newRoot(t)
	setupTokens(t)
	ok(t, lines(userPIN, "11223344", "11223344"), "pin", "change", "--slot", "1")
	ok(t, lines("11223344"), "keys", "list", "--slot", "1")
	if r := pkcshsm(t, lines(userPIN), "keys", "list", "--slot", "1"); r.code != 7 {
		t.Fatalf("old PIN still works: %d", r.code)
	}
	ok(t, lines(soPIN, "44332211", "44332211"), "pin", "change", "--slot", "1", "--so")
	ok(t, lines("44332211", "55667788", "55667788"), "pin", "set", "--slot", "1")
	// Mismatched new PINs change nothing.
	r := pkcshsm(t, lines("55667788", "12121212", "34343434"), "pin", "change", "--slot", "1")
	if r.code != 2 || !strings.Contains(r.stderr, "do not match") {
		t.Fatalf("mismatch: %d %s", r.code, r.stderr)
	}
	ok(t, lines("55667788"), "keys", "list", "--slot", "1")
}

func TestBadInput(t *testing.T) {
	newRoot(t)
	setupTokens(t)
	ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", "keep")
	cases := []struct {
		name  string
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"unknown command", "", []string{"frobnicate"}, 2, "unknown command"},
		{"missing slot", "", []string{"keys", "list"}, 2, "required flag"},
		{"bad slot", lines(userPIN), []string{"keys", "list", "--slot", "9"}, 3, "slot 9 is not configured"},
		{"bad key type", lines(userPIN), []string{"keys", "generate", "--slot", "0", "--type", "blowfish", "--label", "x"}, 2, "unknown key type"},
		{"bad AES size", lines(userPIN), []string{"keys", "generate", "--slot", "0", "--type", "aes", "--bits", "100", "--label", "x"}, 2, "128, 192 or 256"},
		{"bad curve", lines(userPIN), []string{"keys", "generate", "--slot", "0", "--type", "ec", "--curve", "P-521", "--label", "x"}, 2, "not supported"},
		{"bad id", lines(userPIN), []string{"keys", "generate", "--slot", "0", "--type", "aes", "--label", "x", "--id", "zz"}, 2, "invalid --id"},
		{"long label", lines(soPIN), []string{"token", "init", "--slot", "0", "--label", strings.Repeat("x", 33), "--yes"}, 2, "invalid token label"},
		{"no PIN", "", []string{"keys", "list", "--slot", "0"}, 9, "end of input"},
		{"reinit declined", lines("n"), []string{"token", "init", "--slot", "0", "--label", "new"}, 9, "aborted"},
		{"reinit wrong SO PIN", lines("y", "00000000"), []string{"token", "init", "--slot", "0", "--label", "new"}, 7, "PIN"},
		{"restore without selection", lines(userPIN), []string{"keys", "restore-old", "--slot", "0"}, 2, "exactly one of"},
		{"restore key without old", lines(userPIN), []string{"keys", "restore-old", "--slot", "0", "--label", "keep", "--yes"}, 4, "has no CKA_IBM_OPAQUE_OLD"},
		{"restore all without old", lines(userPIN), []string{"keys", "restore-old", "--slot", "0", "--all", "--yes"}, 4, "no key in slot 0 has CKA_IBM_OPAQUE_OLD"},
		{"restore no match", lines(userPIN), []string{"keys", "restore-old", "--slot", "0", "--label", "nope", "--yes"}, 3, "no key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := pkcshsm(t, c.stdin, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.msg) || !strings.Contains(r.stderr, "pkcshsm: error:") {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, c.code, r.stderr)
			}
			if strings.Contains(r.stderr, userPIN) || strings.Contains(r.stdout, userPIN) {
				t.Fatal("PIN echoed")
			}
		})
	}
	// Nothing changed: the one key is still there, the token still has
	// its label.
	recs := listKeys(t, "0")
	if len(recs) != 1 || recs[0].Label != "keep" {
		t.Fatalf("bad input changed the keys: %+v", recs)
	}
	if out := ok(t, "", "slots"); !strings.Contains(out, "tok0") {
		t.Fatalf("bad input changed the token:\n%s", out)
	}
}

// TestRestoreOld walks the adapters' AES master key through four values
// outside any master key change (K0 -> K1 -> K2 -> K3, each activated on
// both APQNs), making keys on the way, so that the token holds keys that
// are usable (under K3 CURRENT or K2 OLD) and keys that are not (K0, K1).
// restore-old must restore only where the current secure key is unusable
// and the old one usable, refuse the rest with the reason, restore a
// usable key only with --force, and report unusable keys that have no old
// blob.
func TestRestoreOld(t *testing.T) {
	layout := newRoot(t)
	setupTokens(t)
	o, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx := context.Background()
	setAES := func(n byte) {
		for _, q := range []string{"01.0033", "02.0033"} {
			if _, err := o.LoadNew(ctx, apqn.MustParse(q), mkvp.CCAAES, bytes.Repeat([]byte{n}, 32), hsm.Part{}); err != nil {
				t.Fatal(err)
			}
			if err := o.Set(ctx, apqn.MustParse(q), mkvp.CCAAES); err != nil {
				t.Fatal(err)
			}
		}
	}
	gen := func(label string) {
		ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", label)
	}
	gen("lost") // under K0
	setAES(1)
	gen("stale") // under K1
	setAES(2)
	gen("fine") // under K2
	setAES(3)   // CURRENT K3, OLD K2: "fine" still works, "lost" and "stale" do not

	st, dk := userStore(t, layout)
	find := func(label string) *store.Object {
		objs, err := st.List(ctx, dk, store.Filter{Attrs: map[uint32][]byte{uint32(ck.CKA_LABEL): []byte(label)}})
		if err != nil || len(objs) > 1 {
			t.Fatalf("find %q: %v %d", label, err, len(objs))
		}
		if len(objs) == 0 {
			return nil
		}
		return objs[0]
	}
	blob := func(o *store.Object, a ck.Attribute) string { return string(o.Attrs[uint32(a)]) }
	// As if "stale" went through a change whose previous key is under K2,
	// and "fine" through one whose previous key is under K1.
	stale, fine := find("stale"), find("fine")
	staleCur, fineCur := blob(stale, ck.CKA_IBM_OPAQUE), blob(fine, ck.CKA_IBM_OPAQUE)
	stale.Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)] = []byte(fineCur)
	fine.Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)] = []byte(staleCur)
	for _, obj := range []*store.Object{stale, fine} {
		if err := st.Update(ctx, dk, obj); err != nil {
			t.Fatal(err)
		}
	}

	// An explicit selection of a usable key is refused, with the reason.
	r := pkcshsm(t, lines(userPIN), "keys", "restore-old", "--slot", "0", "--label", "fine", "--yes")
	if r.code != 4 || !strings.Contains(r.stderr, "is usable; restoring would only help after a rollback") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("restore of a usable key: exit %d\n%s", r.code, r.stderr)
	}
	if blob(find("fine"), ck.CKA_IBM_OPAQUE) != fineCur {
		t.Fatal("refused restore changed the key")
	}

	// --all lists what it will and will not do, and why, before asking;
	// declined, nothing changes.
	r = pkcshsm(t, lines(userPIN, "n"), "keys", "restore-old", "--slot", "0", "--all")
	if r.code != 9 {
		t.Fatalf("declined restore: exit %d %s", r.code, r.stderr)
	}
	for _, want := range []string{
		`  LOST          key `,
		`"lost": no old secure key, and the current one (CCA AES `,
		"1 key cannot be used and has no old secure key to restore (LOST above)",
		"have the security officer set that master key again",
		`  restore       key `,
		`"stale": current secure key (CCA AES `,
		`  keep          key `,
		`"fine": the current secure key (CCA AES `,
		"Will restore the old secure key of 1 key; 2 other keys are not restored.",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("restore --all plan lacks %q:\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "Restore the old secure key of 1 key? [y/N] ") {
		t.Errorf("question: %s", r.stderr)
	}
	if blob(find("stale"), ck.CKA_IBM_OPAQUE) != staleCur {
		t.Fatal("declined restore changed the key")
	}

	// It restores what it can, but a LOST key remains: not a success.
	r = pkcshsm(t, lines(userPIN, "y"), "keys", "restore-old", "--slot", "0", "--all")
	if r.code != 4 || !strings.Contains(r.stdout, "Restored the old secure key of 1 key in slot 0.") ||
		!strings.Contains(r.stderr, "1 key in slot 0 remain LOST") || !strings.Contains(r.stderr, "pkcshsm keys delete --slot 0 --lost") {
		t.Fatalf("restore with a LOST key left: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := find("stale"); blob(got, ck.CKA_IBM_OPAQUE) != fineCur || got.Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)] != nil {
		t.Fatal("the unusable key did not get its usable old blob")
	}
	if got := find("fine"); blob(got, ck.CKA_IBM_OPAQUE) != fineCur || blob(got, ck.CKA_IBM_OPAQUE_OLD) != staleCur {
		t.Fatal("a usable key was restored without --force")
	}

	// --force restores a usable key, after a warning.
	r = pkcshsm(t, lines(userPIN), "keys", "restore-old", "--slot", "0", "--label", "fine", "--force", "--yes")
	if r.code != 0 || !strings.Contains(r.stderr, "WARNING: --force restores 1 key whose current secure key works") {
		t.Fatalf("forced restore: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if blob(find("fine"), ck.CKA_IBM_OPAQUE) != staleCur {
		t.Fatal("forced restore did not restore")
	}

	// keys list --lost shows the LOST keys, only them, and exits 4: "lost",
	// and "fine", which the forced restore put under the stale master key
	// without an old blob; "stale" works.
	r = pkcshsm(t, lines(userPIN), "keys", "list", "--slot", "0", "--lost", "--json")
	var lost []keyRecord
	if r.code != 4 || json.Unmarshal([]byte(r.stdout), &lost) != nil || len(lost) != 2 || lost[0].Label != "lost" || lost[1].Label != "fine" ||
		!strings.Contains(r.stderr, "slot 0 has 2 keys LOST") {
		t.Fatalf("keys list --lost: exit %d (%d keys)\n%s\n%s", r.code, len(lost), r.stdout, r.stderr)
	}
	// keys delete --lost names it, asks, and a "no" deletes nothing.
	r = pkcshsm(t, lines(userPIN, "n"), "keys", "delete", "--slot", "0", "--lost")
	if r.code != 9 || !strings.Contains(r.stdout, `"lost": LOST, its secure key is under CCA AES`) ||
		!strings.Contains(r.stderr, "Destroy 2 keys in slot 0? This cannot be undone. [y/N] ") || find("lost") == nil {
		t.Fatalf("declined delete: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	out := ok(t, lines(userPIN, "y"), "keys", "delete", "--slot", "0", "--lost")
	if !strings.Contains(out, "Deleted 2 keys in slot 0.") || find("lost") != nil || find("fine") != nil || find("stale") == nil {
		t.Fatalf("delete --lost:\n%s", out)
	}
	if out := ok(t, lines(userPIN), "keys", "list", "--slot", "0", "--lost"); !strings.Contains(out, "0 keys LOST") {
		t.Fatalf("keys list --lost after the delete:\n%s", out)
	}
	// By handle, with --yes.
	out = ok(t, lines(userPIN), "keys", "delete", "--slot", "0", "--handle", fmt.Sprint(find("stale").Handle), "--yes")
	if !strings.Contains(out, "Deleted 1 key in slot 0.") || find("stale") != nil {
		t.Fatalf("delete --handle:\n%s", out)
	}
	for _, bad := range [][]string{
		{"keys", "delete", "--slot", "0"},
		{"keys", "delete", "--slot", "0", "--lost", "--label", "x"},
		{"keys", "delete", "--slot", "0", "--handle", "x1"},
	} {
		if r := pkcshsm(t, lines(userPIN), bad...); r.code != 2 || !strings.Contains(r.stderr, "hint:") {
			t.Errorf("%v: exit %d\n%s", bad, r.code, r.stderr)
		}
	}
}

// TestHSMMKVPAfterSet: after the officer activates a new AES master key on
// one APQN, keys list shows the per-APQN registers; after both, OLD.
func TestHSMMKVPAfterSet(t *testing.T) {
	layout := newRoot(t)
	setupTokens(t)
	ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", "k")
	o, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ctx := context.Background()
	set := func(q string) {
		// The same new key on both APQNs, as a TKE loads a domain group.
		key := []byte("0123456789abcdef0123456789abcdef")
		if _, err := o.LoadNew(ctx, apqn.MustParse(q), mkvp.CCAAES, key, hsm.Part{}); err != nil {
			t.Fatal(err)
		}
		if err := o.Set(ctx, apqn.MustParse(q), mkvp.CCAAES); err != nil {
			t.Fatal(err)
		}
	}
	set("02.0033")
	// The APQNs now disagree: the token refuses to use them, and says why.
	r := pkcshsm(t, lines(userPIN), "keys", "list", "--slot", "0", "--hsm-mkvp")
	if r.code == 0 || !strings.Contains(r.stderr, "02.0033") {
		t.Fatalf("disagreeing APQNs: exit %d\n%s", r.code, r.stderr)
	}
	set("01.0033")
	recs := listKeys(t, "0")
	if len(recs) != 1 || recs[0].Match != "OLD" {
		t.Fatalf("after set on both APQNs: %+v", recs)
	}
}
