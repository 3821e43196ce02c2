package tokenlib

import (
	"bytes"
	"context"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestStoredUlongsAreLittleEndian: a token database holds CK_ULONG values
// little-endian on every host, and the engine reads them back in the
// host's order. Run on s390x (scripts/test-s390x.sh) this is the test that
// a database written on x86-64 reads the same there.
func TestStoredUlongsAreLittleEndian(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	o := genAES(t, l, h, "byte-order", true)
	ctx := context.Background()
	tok := l.slots[slotCCA]
	so, err := tok.db.st.Get(ctx, tok.dataKey, uint64(o))
	must(t, err)
	le := func(v uint64) []byte {
		return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24), byte(v >> 32), byte(v >> 40), byte(v >> 48), byte(v >> 56)}
	}
	for _, c := range []struct {
		a    ck.Attribute
		want uint64
	}{
		{ck.CKA_CLASS, uint64(ck.CKO_SECRET_KEY)},
		{ck.CKA_KEY_TYPE, uint64(ck.CKK_AES)},
		{ck.CKA_VALUE_LEN, 32},
		{ck.CKA_KEY_GEN_MECHANISM, uint64(ck.CKM_AES_KEY_GEN)},
	} {
		if got := so.Attrs[uint32(c.a)]; !bytes.Equal(got, le(c.want)) {
			t.Errorf("stored %v = % x, want little-endian % x", c.a, got, le(c.want))
		}
		if v, ok := DecodeUlong(getAttr(t, l, h, o, c.a)); !ok || uint64(v) != c.want {
			t.Errorf("C_GetAttributeValue %v = %d, want %d", c.a, v, c.want)
		}
	}
	// A search by a CK_ULONG value finds the key (the filter compares the
	// stored form).
	found := find(t, l, h, Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_LABEL, []byte("byte-order")))
	if len(found) != 1 || found[0] != o {
		t.Fatalf("find by CKA_KEY_TYPE: %v, want [%d]", found, o)
	}
}
