package tokenlib

import (
	"testing"

	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
)

// TestMKNewKeyLearnsOperation: a process that has not reconciled since an
// operation began (stopped, or its agent behind) still gives a key it makes
// now the blob under the new master key; the operation is active in the
// token from then on.
func TestMKNewKeyLearnsOperation(t *testing.T) {
	layout := writeTestRoot(t)
	o := officer(t, layout)
	cur := currentMK(t, o, cca1, mkvp.CCAAES)
	l := newMKLib(t, layout, slotCCA)
	h := userSession(t, l, slotCCA)
	before := genAES(t, l, h, "before", true)
	wantBlobs(t, l, h, before, cur, mkvp.Pattern{}, mkvp.Pattern{})

	newP := loadNew(t, o, mkvp.CCAAES, cca1, cca2)
	op := createOp(t, opsDir(t, layout), mkvp.CCAAES, newP, state.Reenciphered, cca1, cca2)
	// No reconcile: the library has not seen the operation.
	for _, token := range []bool{true, false} {
		k := genAES(t, l, h, "after", token)
		wantBlobs(t, l, h, k, cur, newP, mkvp.Pattern{})
		must(t, aesRoundTrip(l, h, k))
	}
	if ids := activeOpIDs(l, slotCCA); len(ids) != 1 || ids[0] != op.ID {
		t.Fatalf("active operations %v, want [%s]", ids, op.ID)
	}
}
