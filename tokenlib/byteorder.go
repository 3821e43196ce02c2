package tokenlib

import (
	"encoding/binary"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Byte order of stored attributes.
//
// PKCS#11 hands a CK_ULONG attribute value over as the 8 bytes of a C
// unsigned long in the host's byte order, and the engine keeps it so in
// memory: the C module passes values through unchanged. A token database,
// though, is a file that outlives a host: it is backed up, restored,
// inspected on another machine. Its rows hold every CK_ULONG value
// little-endian, whatever the host, so that a database written on x86-64
// reads the same on the big-endian s390x, where IBM's adapters live.
// toStore and fromStore convert; on a little-endian host both are
// identities. Byte arrays, booleans and dates have no byte order.

// hostLittleEndian is the byte order of this host.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// storedValue returns the stored form of attribute a's value v.
func storedValue(a ck.Attribute, v []byte) []byte {
	if hostLittleEndian || attrKinds[a] != kindUlong || len(v) != ulongSize {
		return v
	}
	return binary.LittleEndian.AppendUint64(nil, binary.NativeEndian.Uint64(v))
}

// memoryValue returns the engine's (host order) form of a stored value.
func memoryValue(a ck.Attribute, v []byte) []byte {
	if hostLittleEndian || attrKinds[a] != kindUlong || len(v) != ulongSize {
		return v
	}
	return binary.NativeEndian.AppendUint64(nil, binary.LittleEndian.Uint64(v))
}
