package ep11sess

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
)

func sampleRecord() Record {
	pb := bytes.Repeat([]byte{0xab}, 80)
	return Record{ID: PublicID{1, 2, 3}, PID: 4242, Created: time.Unix(1700000000, 0).UTC(),
		APQNs: []apqn.ID{apqn.MustParse("06.0033"), apqn.MustParse("0e.0033")}, Strict: pb, Slot: 3, Program: "p11load"}
}

func TestRecordRoundTrip(t *testing.T) {
	r := sampleRecord()
	got, err := DecodeRecord(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %+v, want %+v", got, r)
	}
	enc := r.Encode()
	for name, b := range map[string][]byte{
		"truncated":  enc[:len(enc)-1],
		"trailing":   append(bytes.Clone(enc), 0),
		"magic":      append([]byte("XP11S"), enc[5:]...),
		"version":    append(append([]byte("EP11S"), 2), enc[6:]...),
		"no blobs":   Record{ID: r.ID, PID: 1, Created: r.Created}.Encode(),
		"zero pid":   Record{PID: 0, Created: r.Created, VHSM: r.Strict}.Encode(),
		"apqn order": Record{PID: 1, Created: r.Created, VHSM: r.Strict, APQNs: []apqn.ID{r.APQNs[1], r.APQNs[0]}}.Encode(),
	} {
		if _, err := DecodeRecord(b); errclass.Of(err) != errclass.DataLoss {
			t.Errorf("%s: err = %v, want DataLoss", name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleRecord().Encode())
	r := sampleRecord()
	r.VHSM, r.Strict, r.APQNs = r.Strict, nil, nil
	f.Add(r.Encode())
	f.Add([]byte("EP11S\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if errclass.Of(err) != errclass.DataLoss {
				t.Fatalf("error of class %s: %v", errclass.Of(err), err)
			}
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		if enc := r.Encode(); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n%x\n%x", enc, b)
		}
	})
}
