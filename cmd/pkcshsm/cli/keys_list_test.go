package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// TestKeysListBlobPatterns: keys list --json reports, per secure key, the
// master key type and pattern of CKA_IBM_OPAQUE, CKA_IBM_OPAQUE_OLD and
// CKA_IBM_OPAQUE_REENC, each read from that blob. The key under test gets
// three blobs with three different (type, pattern) pairs, so a field read
// from the wrong attribute cannot pass.
func TestKeysListBlobPatterns(t *testing.T) {
	layout := newRoot(t)
	setupTokens(t)
	ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", "a")
	ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "ec", "--label", "e")
	ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", "plain")
	curAES := currentPattern(t, layout, "01.0033", mkvp.CCAAES)
	curAPKA := currentPattern(t, layout, "01.0033", mkvp.CCAAPKA)

	ctx := context.Background()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	q := apqn.MustParse("01.0033")
	newAES, err := h.LoadNew(ctx, q, mkvp.CCAAES, []byte("fedcba9876543210fedcba9876543210"), hsm.Part{})
	if err != nil {
		t.Fatal(err)
	}
	st, dk := userStore(t, layout)
	find := func(label string, class ck.ObjectClass) *store.Object {
		objs, err := st.List(ctx, dk, store.Filter{Classes: []uint{uint(class)}, Attrs: map[uint32][]byte{uint32(ck.CKA_LABEL): []byte(label)}})
		if err != nil || len(objs) != 1 {
			t.Fatalf("find %q: %v %d", label, err, len(objs))
		}
		return objs[0]
	}
	a, e := find("a", ck.CKO_SECRET_KEY), find("e", ck.CKO_PRIVATE_KEY)
	reenc, err := h.Reencipher(ctx, q, a.Attrs[uint32(ck.CKA_IBM_OPAQUE)], hsm.ToNew)
	if err != nil {
		t.Fatal(err)
	}
	a.Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)] = e.Attrs[uint32(ck.CKA_IBM_OPAQUE)] // an APKA blob
	a.Attrs[uint32(ck.CKA_IBM_OPAQUE_REENC)] = reenc
	if err := st.Update(ctx, dk, a); err != nil {
		t.Fatal(err)
	}
	h.Close()

	want := func(typ mkvp.Type, p mkvp.Pattern) *blobPattern {
		return &blobPattern{MKType: typ.LongName(), MKVP: p.String()}
	}
	seen := map[string]bool{}
	for _, r := range listKeys(t, "0") {
		if r.Class == "PUBLIC_KEY" {
			continue
		}
		seen[r.Label] = true
		if r.Blobs == nil || r.Blobs.Current == nil {
			t.Fatalf("key %q: no blobs reported: %+v", r.Label, r)
		}
		var w keyBlobs
		switch r.Label {
		case "a":
			w = keyBlobs{Current: want(mkvp.CCAAES, curAES), Old: want(mkvp.CCAAPKA, curAPKA), Reenc: want(mkvp.CCAAES, newAES)}
		case "e":
			w = keyBlobs{Current: want(mkvp.CCAAPKA, curAPKA)}
		case "plain":
			w = keyBlobs{Current: want(mkvp.CCAAES, curAES)}
		}
		for _, f := range []struct {
			name      string
			got, want *blobPattern
		}{{"current", r.Blobs.Current, w.Current}, {"old", r.Blobs.Old, w.Old}, {"reenc", r.Blobs.Reenc, w.Reenc}} {
			if (f.got == nil) != (f.want == nil) || f.got != nil && *f.got != *f.want {
				t.Errorf("key %q: %s blob = %+v, want %+v", r.Label, f.name, f.got, f.want)
			}
		}
	}
	if len(seen) != 3 {
		t.Fatalf("keys seen: %v", seen)
	}

	// A damaged blob is reported as such, not as a pattern.
	st2, dk2 := userStore(t, layout)
	objs, err := st2.List(ctx, dk2, store.Filter{Attrs: map[uint32][]byte{uint32(ck.CKA_LABEL): []byte("plain")}})
	if err != nil || len(objs) != 1 {
		t.Fatal(err, len(objs))
	}
	objs[0].Attrs[uint32(ck.CKA_IBM_OPAQUE_OLD)] = []byte("not a blob")
	if err := st2.Update(ctx, dk2, objs[0]); err != nil {
		t.Fatal(err)
	}
	for _, r := range listKeys(t, "0") {
		if r.Label == "plain" && r.Class != "PUBLIC_KEY" {
			if r.Blobs.Old == nil || r.Blobs.Old.Error == "" || r.Blobs.Old.MKVP != "" {
				t.Fatalf("damaged OLD blob reported as %+v", r.Blobs.Old)
			}
			if !strings.Contains(strings.ToLower(r.Blobs.Old.Error), "blob") {
				t.Errorf("error %q does not say what is wrong", r.Blobs.Old.Error)
			}
		}
	}
}
