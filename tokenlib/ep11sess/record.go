package ep11sess

import (
	"encoding/binary"
	"encoding/hex"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// PublicIDSize is the length of a session's public id: the first 16 bytes
// of its 32-byte EP11 session id, as upstream keeps it (never the whole
// id, so a reader of the object cannot log the session in again).
const PublicIDSize = 16

// PublicID identifies a stored EP11 session.
type PublicID [PublicIDSize]byte

func (id PublicID) String() string { return hex.EncodeToString(id[:]) }

// ParsePublicID reads 32 hex digits.
func ParsePublicID(s string) (PublicID, error) {
	var id PublicID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != PublicIDSize {
		return id, errclass.Newh(errclass.InvalidArgument, "give the 32 hex digits `pkcshsm ep11-session show` prints",
			"session id %q is not 32 hex digits", s)
	}
	copy(id[:], b)
	return id, nil
}

// Record is what the hidden session object of one PKCS#11 user session
// holds: who logged it in, when, on which APQNs, and the pin blobs to log
// it out with (the strict session's, and the VHSM session's it shares).
type Record struct {
	// Handle is the store handle of the object (not encoded).
	Handle  uint64
	ID      PublicID
	PID     int
	Created time.Time
	APQNs   []apqn.ID
	Strict  []byte // nil, or the strict session's pin blob
	VHSM    []byte // nil, or the VHSM session's pin blob
	Slot    uint32
	Program string
}

// The record encoding, all integers big-endian:
//
//	"EP11S" version(1)=1 slot(4) id(16) pid(4) created(8, Unix seconds)
//	nAPQN(2) nAPQN × {card(1) domain(2)} strictLen(1) strict
//	vhsmLen(1) vhsm programLen(1) program
//
// Pin blob lengths are 0 or hsm.PinBlobSize.
const (
	recordMagic   = "EP11S"
	recordVersion = 1
	maxAPQNs      = 256
	maxProgram    = 64
)

// Encode renders r.
func (r Record) Encode() []byte {
	be := binary.BigEndian
	out := append([]byte(recordMagic), recordVersion)
	out = be.AppendUint32(out, r.Slot)
	out = append(out, r.ID[:]...)
	out = be.AppendUint32(out, uint32(r.PID))
	out = be.AppendUint64(out, uint64(r.Created.Unix()))
	out = be.AppendUint16(out, uint16(len(r.APQNs)))
	for _, q := range r.APQNs {
		out = append(out, q.Card)
		out = be.AppendUint16(out, q.Domain)
	}
	out = append(out, byte(len(r.Strict)))
	out = append(out, r.Strict...)
	out = append(out, byte(len(r.VHSM)))
	out = append(out, r.VHSM...)
	p := r.Program
	if len(p) > maxProgram {
		p = p[:maxProgram]
	}
	out = append(out, byte(len(p)))
	return append(out, p...)
}

func errRecord(format string, args ...any) error {
	return errclass.Newh(errclass.DataLoss, "remove the session with `pkcshsm ep11-session logout --id ID --force`",
		"EP11 session object is corrupt: "+format, args...)
}

// DecodeRecord parses an encoded record. Anything but exactly one record
// of this version is DataLoss.
func DecodeRecord(b []byte) (Record, error) {
	var r Record
	be := binary.BigEndian
	take := func(n int) ([]byte, bool) {
		if n < 0 || len(b) < n {
			return nil, false
		}
		v := b[:n]
		b = b[n:]
		return v, true
	}
	head, ok := take(len(recordMagic) + 1 + 4 + PublicIDSize + 4 + 8 + 2)
	if !ok || string(head[:5]) != recordMagic {
		return r, errRecord("no record header")
	}
	if head[5] != recordVersion {
		return r, errRecord("record version %d, this library reads %d", head[5], recordVersion)
	}
	h := head[6:]
	r.Slot = be.Uint32(h)
	copy(r.ID[:], h[4:20])
	pid := be.Uint32(h[20:])
	if pid == 0 || pid > 1<<22 {
		return r, errRecord("pid %d out of range", pid)
	}
	r.PID = int(pid)
	sec := int64(be.Uint64(h[24:]))
	if sec < 0 || sec > 1<<40 {
		return r, errRecord("creation time out of range")
	}
	r.Created = time.Unix(sec, 0).UTC()
	n := int(be.Uint16(h[32:]))
	if n > maxAPQNs {
		return r, errRecord("%d APQNs, at most %d", n, maxAPQNs)
	}
	qs, ok := take(3 * n)
	if !ok {
		return r, errRecord("truncated APQN list")
	}
	for i := 0; i < n; i++ {
		q := apqn.ID{Card: qs[3*i], Domain: be.Uint16(qs[3*i+1:])}
		if len(r.APQNs) > 0 && r.APQNs[len(r.APQNs)-1].Compare(q) >= 0 {
			return r, errRecord("APQNs not in ascending order")
		}
		r.APQNs = append(r.APQNs, q)
	}
	for _, dst := range []*[]byte{&r.Strict, &r.VHSM} {
		l, ok := take(1)
		if !ok || (l[0] != 0 && l[0] != hsm.PinBlobSize) {
			return r, errRecord("bad pin blob length")
		}
		v, _ := take(int(l[0]))
		if len(v) > 0 {
			*dst = append([]byte(nil), v...)
		}
	}
	if r.Strict == nil && r.VHSM == nil {
		return r, errRecord("no pin blob")
	}
	l, ok := take(1)
	if !ok || int(l[0]) > maxProgram {
		return r, errRecord("bad program name length")
	}
	p, ok := take(int(l[0]))
	if !ok {
		return r, errRecord("truncated program name")
	}
	for _, c := range p {
		if c < 0x20 || c > 0x7e {
			return r, errRecord("program name is not printable")
		}
	}
	r.Program = string(p)
	if len(b) != 0 {
		return r, errRecord("%d bytes of trailing data", len(b))
	}
	return r, nil
}
