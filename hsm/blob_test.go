package hsm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func testAEAD(t testing.TB) cipher.AEAD {
	t.Helper()
	c, err := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(c)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func pat(t testing.TB, n int, b byte) mkvp.Pattern {
	t.Helper()
	p, err := mkvp.New(bytes.Repeat([]byte{b}, n))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// blobCases covers every layout with the offsets the reference documents.
func blobCases(t testing.TB) []struct {
	name      string
	b         Blob
	patAt     int
	firstByte byte
} {
	cca := pat(t, 8, 0xa5)
	ep := pat(t, 16, 0x5a)
	return []struct {
		name      string
		b         Blob
		patAt     int
		firstByte byte
	}{
		{"des-data", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCASYM, cca, KeyDES3, 192, [SessionIDSize]byte{}}, LayoutCCADESData, nil}, 8, 0x01},
		{"aes-data", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyAES, 256, [SessionIDSize]byte{}}, LayoutCCAAESData, nil}, 8, 0x01},
		{"aes-cipher", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyAES, 128, [SessionIDSize]byte{}}, LayoutCCAAESCipher, nil}, 10, 0x01},
		{"hmac", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyHMAC, 2432, [SessionIDSize]byte{}}, LayoutCCAHMAC, nil}, 10, 0x01},
		{"ecc", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAPKA, cca, KeyEC, 384, [SessionIDSize]byte{}}, LayoutCCAECC, nil}, 24, 0x1f},
		{"rsa-me", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAPKA, cca, KeyRSA, 2048, [SessionIDSize]byte{}}, LayoutCCARSAME, nil}, 112, 0x1f},
		{"rsa-crt", Blob{BlobInfo{apqn.ModeCCA, mkvp.CCAAPKA, cca, KeyRSA, 4096, [SessionIDSize]byte{}}, LayoutCCARSACRT, nil}, 124, 0x1f},
		{"ep11-aes", Blob{BlobInfo{apqn.ModeEP11, mkvp.EP11WK, ep, KeyAES, 256, [SessionIDSize]byte{}}, LayoutEP11, nil}, 32, 0x00},
		{"ep11-rsa", Blob{BlobInfo{apqn.ModeEP11, mkvp.EP11WK, ep, KeyRSA, 3072, [SessionIDSize]byte{}}, LayoutEP11, nil}, 32, 0x00},
		// Session-bound: the session field starts like a CCA DES DATA
		// token (0x01, byte 4 zero), and must still read as EP11.
		{"ep11-bound", Blob{BlobInfo{apqn.ModeEP11, mkvp.EP11WK, ep, KeyAES, 256, [SessionIDSize]byte{0x01, 0x02, 0x03, 0x04, 0x00, 0x06}}, LayoutEP11, nil}, 32, 0x01},
	}
}

func TestSealOpenLayouts(t *testing.T) {
	aead := testAEAD(t)
	material := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range blobCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := SealBlob(tc.b.BlobInfo, tc.b.Layout, aead, rand.Reader, material)
			if err != nil {
				t.Fatal(err)
			}
			if raw[0] != tc.firstByte {
				t.Errorf("byte 0 = %#x, want %#x", raw[0], tc.firstByte)
			}
			if got := raw[tc.patAt : tc.patAt+tc.b.Pattern.Len()]; !bytes.Equal(got, tc.b.Pattern.Bytes()) {
				t.Errorf("pattern at %d = %x, want %x", tc.patAt, got, tc.b.Pattern.Bytes())
			}
			switch tc.b.Layout {
			case LayoutEP11:
				if v := binary.BigEndian.Uint16(raw[64:]); v != 0x1234 {
					t.Errorf("EP11 version magic = %#x", v)
				}
				if !bytes.Equal(raw[:32], tc.b.Session[:]) {
					t.Errorf("EP11 session field %x, want %x", raw[:32], tc.b.Session[:])
				}
				// openCryptoki reads the boolean attributes as the 32-bit word at 52.
				if binary.BigEndian.Uint32(raw[52:]) == 0 {
					t.Error("EP11 attribute word at 52 is zero")
				}
			case LayoutCCAAESData:
				if raw[4] != 0x04 {
					t.Errorf("AES DATA version = %#x", raw[4])
				}
			case LayoutCCAAESCipher, LayoutCCAHMAC:
				if raw[4] != 0x05 || int(binary.BigEndian.Uint16(raw[2:])) != len(raw) {
					t.Errorf("VLSC version %#x length %d of %d", raw[4], binary.BigEndian.Uint16(raw[2:]), len(raw))
				}
				alg, kt := byte(0x02), uint16(0x0001)
				if tc.b.Layout == LayoutCCAHMAC {
					alg, kt = 0x03, 0x0002
					if raw[8] != 0x03 || raw[26] != 0x02 || raw[27] != 0x02 || raw[28] != 0x00 ||
						int(binary.BigEndian.Uint16(raw[38:])) != tc.b.Bits {
						t.Errorf("HMAC token fields: %x", raw[:44])
					}
				}
				if raw[41] != alg || binary.BigEndian.Uint16(raw[42:]) != kt {
					t.Errorf("VLSC algorithm %#x key type %#x", raw[41], binary.BigEndian.Uint16(raw[42:]))
				}
			case LayoutCCARSACRT, LayoutCCARSAME:
				sec := int(binary.BigEndian.Uint16(raw[10:]))
				if raw[8+sec] != 0x04 {
					t.Errorf("public section id %#x follows the private section", raw[8+sec])
				}
				want := map[Layout]byte{LayoutCCARSAME: 0x30, LayoutCCARSACRT: 0x31}[tc.b.Layout]
				if raw[8] != want {
					t.Errorf("RSA section id %#x, want %#x", raw[8], want)
				}
			case LayoutCCAECC:
				if raw[8] != 0x20 || raw[12] != 0x01 || raw[18] != 0x08 || int(binary.BigEndian.Uint16(raw[20:])) != tc.b.Bits {
					t.Errorf("ECC section %#x wrapping %#x format %#x bits %d", raw[8], raw[12], raw[18], binary.BigEndian.Uint16(raw[20:]))
				}
			case LayoutCCADESData:
				if raw[4] != 0x00 || len(raw) < 64 {
					t.Errorf("DES DATA version %#x", raw[4])
				}
			}
			info, err := Inspect(raw)
			if err != nil {
				t.Fatal(err)
			}
			if info != tc.b.BlobInfo {
				t.Errorf("Inspect = %+v, want %+v", info, tc.b.BlobInfo)
			}
			_, got, err := OpenBlob(raw, aead)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, material) {
				t.Error("material did not round trip")
			}
			// Every single-byte change outside the payload breaks either the
			// parse or the authentication.
			for i := range raw {
				bad := bytes.Clone(raw)
				bad[i] ^= 0x01
				if _, _, err := OpenBlob(bad, aead); !errors.Is(err, ErrBadBlob) {
					t.Fatalf("flipping byte %d: err = %v, want ErrBadBlob", i, err)
				}
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"spki", []byte{0x30, 0x82, 0x01, 0x22}},
		{"short-data", []byte{0x01, 0, 0, 0, 0x04, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}},
		{"public-rsa", append([]byte{0x1e, 0, 0, 0, 0, 0, 0, 0, 0x04}, make([]byte, 20)...)},
		{"garbage", bytes.Repeat([]byte{0xff}, 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(tc.raw)
			if !errors.Is(err, ErrBadBlob) || errclass.Of(err) != errclass.InvalidArgument {
				t.Fatalf("err = %v, want ErrBadBlob (invalid argument)", err)
			}
		})
	}
}

func TestEncodeRejectsMismatch(t *testing.T) {
	cca := pat(t, 8, 1)
	for _, b := range []Blob{
		{BlobInfo{apqn.ModeEP11, mkvp.CCAAES, cca, KeyAES, 256, [SessionIDSize]byte{}}, LayoutCCAAESData, nil},
		{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyAES, 100, [SessionIDSize]byte{}}, LayoutCCAAESData, nil},
		{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyEC, 256, [SessionIDSize]byte{}}, LayoutCCAAESData, nil},
		{BlobInfo{apqn.ModeEP11, mkvp.EP11WK, cca, KeyAES, 256, [SessionIDSize]byte{}}, LayoutEP11, nil},
		{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyAES, 256, [SessionIDSize]byte{}}, Layout(99), nil},
		{BlobInfo{apqn.ModeCCA, mkvp.CCAAES, cca, KeyAES, 256, [SessionIDSize]byte{7}}, LayoutCCAAESData, nil},
		{BlobInfo{apqn.ModeEP11, mkvp.EP11WK, pat(t, 16, 2), KeyAES, 256, [SessionIDSize]byte{0x30, 1}}, LayoutEP11, nil},
	} {
		if _, err := EncodeBlob(b); errclass.Of(err) != errclass.InvalidArgument {
			t.Errorf("EncodeBlob(%+v) err = %v, want invalid argument", b, err)
		}
	}
}

func FuzzDecodeBlob(f *testing.F) {
	aead := testAEAD(f)
	for _, tc := range blobCases(f) {
		raw, err := SealBlob(tc.b.BlobInfo, tc.b.Layout, aead, rand.Reader, []byte("seed material 16"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte{0x01, 0, 0, 0, 0x05})
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := DecodeBlob(raw)
		if err != nil {
			if !errors.Is(err, ErrBadBlob) {
				t.Fatalf("error without ErrBadBlob: %v", err)
			}
			return
		}
		enc, err := EncodeBlob(b)
		if err != nil {
			t.Fatalf("decoded blob does not encode: %v", err)
		}
		if !bytes.Equal(enc, raw) {
			t.Fatalf("encode(decode(x)) != x\n x=%x\n y=%x", raw, enc)
		}
		b2, err := DecodeBlob(enc)
		if err != nil {
			t.Fatal(err)
		}
		if b2.BlobInfo != b.BlobInfo || b2.Layout != b.Layout || !bytes.Equal(b2.Sealed, b.Sealed) {
			t.Fatalf("decode(encode(b)) != b")
		}
	})
}
