package cli

import (
	"fmt"

	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// lostReason says why a key is LOST, or "" if it is not: it has a secure
// key (CKA_IBM_OPAQUE) whose master key is not set on the token's APQNs
// (neither CURRENT nor, on CCA, OLD), and no other blob of it is usable
// there either (no CKA_IBM_OPAQUE_OLD that restore-old could bring back,
// no CKA_IBM_OPAQUE_REENC that finalize would make current). Such a key
// cannot be used, re-enciphered or restored on this host until the
// security officer sets its master key again; a master key change of its
// type refuses to start while it exists.
func lostReason(av keyAttrs, queues []hsm.QueueInfo) string {
	blob := av[ck.CKA_IBM_OPAQUE]
	if len(blob) == 0 {
		return ""
	}
	cur, err := hsm.Inspect(blob)
	if err != nil {
		return "" // unreadable: reported as such, not as LOST
	}
	if usable(cur, queues) {
		return ""
	}
	for _, a := range []ck.Attribute{ck.CKA_IBM_OPAQUE_OLD, ck.CKA_IBM_OPAQUE_REENC} {
		if b := av[a]; len(b) > 0 {
			if info, err := hsm.Inspect(b); err == nil && usable(info, queues) {
				return ""
			}
		}
	}
	return fmt.Sprintf("its secure key is under %s %s, which no register of the token's APQNs holds, and no other blob of it is usable",
		cur.MKType.LongName(), cur.Pattern)
}
