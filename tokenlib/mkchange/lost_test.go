package mkchange

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// TestFindLost: keys under a pattern that is neither the token's current
// one nor the operation's new one are counted and the first max named by
// handle and label (read with the key, since the blob rows do not hold
// it); keys of another type are not judged; a damaged blob list stops the
// check with data loss naming the key.
func TestFindLost(t *testing.T) {
	f := newFixture(t)
	var keys []uint64
	var first *store.Object
	for i := range 3 {
		o := f.key(cca1, hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}, fmt.Sprint("aes-", i), i != 1)
		keys = append(keys, o.Handle)
		if i == 0 {
			first = o
		}
	}
	f.key(cca1, hsm.KeySpec{Type: hsm.KeyDES3, Bits: 192}, "des", true)
	newAES := f.loadNew(mkvp.CCAAES, cca1, cca2)
	op := &state.Op{ID: "Lost01", APQNs: apqn.List{cca1, cca2}, New: map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: newAES}}
	tok := Token{Slot: 2, Type: config.TypeCCA, APQNs: []apqn.ID{cca1, cca2}}
	info, err := hsm.Inspect(f.get(first)[attrOpaque])
	if err != nil {
		t.Fatal(err)
	}
	// Judged against their real current pattern: none lost.
	if lost, n, err := tok.FindLost(f.ctx, f.st, f.dk, op, map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: info.Pattern}, 10); err != nil || n != 0 || len(lost) != 0 {
		t.Fatalf("keys under the current pattern: %v, %d, %v", lost, n, err)
	}
	// Against another current pattern: the three AES keys are lost.
	other := mustPattern(mkvp.CCAAES, "0102030405060708")
	lost, n, err := tok.FindLost(f.ctx, f.st, f.dk, op, map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: other}, 2)
	if err != nil || n != 3 || len(lost) != 2 {
		t.Fatalf("keys under an unknown pattern: %v, %d, %v; want 3 counted, 2 named", lost, n, err)
	}
	for i, k := range lost {
		if k.Handle != keys[i] || k.Label != fmt.Sprintf("label %q", fmt.Sprint("aes-", i)) || k.MKType != mkvp.CCAAES || k.Pattern != info.Pattern {
			t.Fatalf("lost key %d: %+v", i, k)
		}
	}
	// A damaged blob list: data loss naming the key.
	db, err := sql.Open("sqlite", f.st.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE blob SET blobs = substr(blobs, 1, length(blobs) - 1) || CASE WHEN substr(blobs, -1) = X'00' THEN X'01' ELSE X'00' END WHERE handle = ?`, keys[2]); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, _, err := tok.FindLost(f.ctx, f.st, f.dk, op, map[mkvp.Type]mkvp.Pattern{mkvp.CCAAES: other}, 2); errclass.Of(err) != errclass.DataLoss || !strings.Contains(err.Error(), fmt.Sprint(keys[2])) {
		t.Fatalf("damaged blob list: %v", err)
	}
}
