package cabi_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/tokenlib/cabi/internal/ctest"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// fuzzReader hands out fuzz input; past the end it returns zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *fuzzReader) ulong() uint {
	var b [8]byte
	copy(b[:], r.bytes(8))
	return uint(binary.LittleEndian.Uint64(b[:]))
}

// A pointer/length pair of the fuzzed C memory: mode 0 is honest (the
// length is the buffer's), 1 is NULL with a length, 2 a real buffer with a
// length no caller can have (beyond the module's limits), so the module
// must refuse it without touching the memory.
func (r *fuzzReader) pair(m *module) (uintptr, uint) {
	mode := r.byte() % 4
	n := int(r.byte())
	switch mode {
	case 1:
		return 0, uint(n) + 1
	case 2:
		return m.alloc(8).P, 1<<24 + 1 + uint(n)
	case 3:
		return m.alloc(8).P, ctest.Unavailable
	}
	b := r.bytes(n)
	return m.bytes(b).P, uint(len(b))
}

// fuzzAttrTypes are attribute types the fuzzer picks from (plus raw ones).
var fuzzAttrTypes = []ck.Attribute{ck.CKA_CLASS, ck.CKA_KEY_TYPE, ck.CKA_TOKEN, ck.CKA_LABEL, ck.CKA_VALUE,
	ck.CKA_VALUE_LEN, ck.CKA_ENCRYPT, ck.CKA_DECRYPT, ck.CKA_SIGN, ck.CKA_ID, ck.CKA_PRIVATE, ck.CKA_SENSITIVE,
	ck.CKA_EXTRACTABLE, ck.CKA_MODULUS, ck.CKA_EC_PARAMS, ck.CKA_START_DATE, ck.CKA_IBM_OPAQUE, ck.CKA_APPLICATION}

func (r *fuzzReader) attrType() uint {
	c := r.byte()
	if int(c) < len(fuzzAttrTypes) {
		return uint(fuzzAttrTypes[c])
	}
	if c == 255 {
		return r.ulong()
	}
	return uint(c)
}

// template builds up to 7 attributes.
func (r *fuzzReader) template(m *module) (uintptr, uint) {
	n := int(r.byte() % 8)
	var as []ctest.Attr
	for range n {
		t := r.attrType()
		p, l := r.pair(m)
		as = append(as, ctest.Attr{Type: t, Value: p, Len: l})
	}
	if n == 0 && r.byte()%2 == 1 {
		return 0, uint(r.byte()) // NULL template, maybe with a count
	}
	return m.keep(ctest.PutAttrs(as)).P, uint(n)
}

var fuzzMechs = []ck.Mechanism{ck.CKM_AES_ECB, ck.CKM_AES_CBC, ck.CKM_AES_CBC_PAD, ck.CKM_AES_GCM, ck.CKM_AES_KEY_WRAP,
	ck.CKM_AES_KEY_WRAP_PAD, ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS, ck.CKM_RSA_PKCS_OAEP, ck.CKM_RSA_PKCS,
	ck.CKM_ECDSA, ck.CKM_ECDSA_SHA256, ck.CKM_SHA256, ck.CKM_SHA256_HMAC, ck.CKM_AES_KEY_GEN, ck.CKM_EC_KEY_PAIR_GEN}

// mechanism builds a CK_MECHANISM: raw parameter bytes, or a GCM, PSS or
// OAEP structure whose inner pointer/length pairs are fuzzed too.
func (r *fuzzReader) mechanism(m *module) (uintptr, ck.Mechanism) {
	c := r.byte()
	typ := fuzzMechs[int(c)%len(fuzzMechs)]
	if c == 255 {
		typ = ck.Mechanism(r.ulong())
	}
	var param uintptr
	var plen uint
	// A structure is only built for the mechanism that takes it: its
	// pointers are then the fuzzer's honest or NULL ones. Raw bytes never
	// have a structure's size, or the module would read garbage pointers,
	// a caller bug no library can detect.
	switch sizes := structSizes(typ); {
	case r.byte()%2 == 0 || len(sizes) == 0:
		param, plen = r.pair(m)
		if r.byte()%8 == 0 { // raw bytes of any size
			plen = uint(r.byte())
			p := m.alloc(int(plen) + 1)
			copy(p.Bytes(), r.bytes(int(plen)))
			param = p.P
		}
		if slices.Contains(sizes, plen) && param != 0 {
			p := m.alloc(int(plen) + 1)
			copy(p.Bytes(), r.bytes(int(plen)))
			param, plen = p.P, plen+1
		}
	case typ == ck.CKM_AES_GCM:
		iv, ivLen := r.pair(m)
		aad, aadLen := r.pair(m)
		tag := uintptr(r.byte())
		if r.byte()%2 == 0 {
			param, plen = m.keep(ctest.Words(iv, uintptr(ivLen), uintptr(ivLen*8), aad, uintptr(aadLen), tag)).P, ctest.SizeofGCM
		} else { // the v2.30 layout, without ulIvBits
			param, plen = m.keep(ctest.Words(iv, uintptr(ivLen), aad, uintptr(aadLen), tag)).P, 5*ctest.SizeofULong
		}
	case typ == ck.CKM_RSA_PKCS_OAEP:
		src, srcLen := r.pair(m)
		param = m.keep(ctest.Words(uintptr(ck.CKM_SHA256), uintptr(ck.CKG_MGF1_SHA256), uintptr(r.byte()%3), src, uintptr(srcLen))).P
		plen = ctest.SizeofOAEP
	default: // PSS
		hashes := []ck.Mechanism{ck.CKM_SHA256, ck.CKM_SHA_1, ck.CKM_SHA384, ck.CKM_MD5}
		mgfs := []ck.MGF{ck.CKG_MGF1_SHA256, ck.CKG_MGF1_SHA1, ck.CKG_MGF1_SHA384, 0}
		param = m.keep(ctest.Words(uintptr(hashes[r.byte()%4]), uintptr(mgfs[r.byte()%4]), uintptr(r.ulong()%1024))).P
		plen = ctest.SizeofPSS
	}
	return m.keep(ctest.PutMechanism(uint(typ), param, plen)).P, typ
}

// structSizes are the parameter sizes the module decodes as a structure
// for typ.
func structSizes(typ ck.Mechanism) []uint {
	switch typ {
	case ck.CKM_AES_GCM:
		return []uint{ctest.SizeofGCM, 5 * ctest.SizeofULong}
	case ck.CKM_RSA_PKCS_OAEP:
		return []uint{ctest.SizeofOAEP}
	case ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA1_RSA_PKCS_PSS, ck.CKM_SHA224_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS,
		ck.CKM_SHA384_RSA_PKCS_PSS, ck.CKM_SHA512_RSA_PKCS_PSS:
		return []uint{ctest.SizeofPSS}
	}
	return nil
}

// allowedFuzzRV are the results a call may have on fuzzed input: success
// or one of the argument, template and mechanism errors. Never
// CKR_GENERAL_ERROR (a recovered panic), CKR_FUNCTION_FAILED or
// CKR_DEVICE_ERROR.
var allowedFuzzRV = map[ck.RV]bool{
	ck.CKR_OK: true, ck.CKR_ARGUMENTS_BAD: true, ck.CKR_ATTRIBUTE_TYPE_INVALID: true, ck.CKR_ATTRIBUTE_VALUE_INVALID: true,
	ck.CKR_ATTRIBUTE_READ_ONLY: true, ck.CKR_ATTRIBUTE_SENSITIVE: true, ck.CKR_TEMPLATE_INCOMPLETE: true,
	ck.CKR_TEMPLATE_INCONSISTENT: true, ck.CKR_MECHANISM_INVALID: true, ck.CKR_MECHANISM_PARAM_INVALID: true,
	ck.CKR_KEY_TYPE_INCONSISTENT: true, ck.CKR_KEY_FUNCTION_NOT_PERMITTED: true, ck.CKR_KEY_SIZE_RANGE: true,
	ck.CKR_BUFFER_TOO_SMALL: true, ck.CKR_DOMAIN_PARAMS_INVALID: true, ck.CKR_CURVE_NOT_SUPPORTED: true,
	ck.CKR_OPERATION_ACTIVE: true, ck.CKR_DATA_LEN_RANGE: true, ck.CKR_DATA_INVALID: true, ck.CKR_KEY_HANDLE_INVALID: true,
	ck.CKR_USER_NOT_LOGGED_IN: true, ck.CKR_SESSION_READ_ONLY: true, ck.CKR_ENCRYPTED_DATA_INVALID: true,
	ck.CKR_ENCRYPTED_DATA_LEN_RANGE: true, ck.CKR_PIN_LEN_RANGE: true, ck.CKR_OBJECT_HANDLE_INVALID: true,
	ck.CKR_KEY_UNEXTRACTABLE: true, ck.CKR_KEY_NOT_WRAPPABLE: true, ck.CKR_WRAPPED_KEY_INVALID: true,
	ck.CKR_WRAPPED_KEY_LEN_RANGE: true, ck.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: true, ck.CKR_WRAPPING_KEY_TYPE_INCONSISTENT: true,
}

// FuzzTemplatesAndMechanisms drives fuzzed attribute templates and
// mechanism parameters, laid out in C memory, through the function list:
// C_CreateObject, C_FindObjectsInit, C_GetAttributeValue,
// C_SetAttributeValue, C_GenerateKey, the crypto Init functions and
// C_UnwrapKey. Every call must answer with a specification error (never
// a recovered panic), and the module must keep working.
func FuzzTemplatesAndMechanisms(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 2, 3, 0, 8, 1, 0, 1, 1})                                                                        // AES-ECB, class + token
	f.Add([]byte{3, 1, 0, 12, 'i', 'v', 'i', 'v', 'i', 'v', 'i', 'v', 'i', 'v', 'i', 'v', 0, 4, 'a', 'a', 'd', '!', 128}) // GCM
	f.Add([]byte{6, 2, 0, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0})                                                                 // PSS
	f.Add([]byte{8, 3, 1, 9, 2})                                                                                          // OAEP with a NULL source
	f.Add([]byte{1, 0, 2, 5, 3, 3, 1, 3, 4, 2, 7, 0})                                                                     // huge lengths
	f.Add([]byte{14, 0, 0, 0, 2, 5, 0, 8, 32, 0, 0, 0, 0, 0, 0, 0})                                                       // AES keygen with a template
	m := ready(f)
	h := m.user()
	aes := m.aesKey(h, false)
	ecPub, ecPriv := m.ecKeyPair(h)
	data := m.bytes(make([]byte, 64))
	out, outLen := m.alloc(1024), m.ulong(1024)
	info := m.alloc(ctest.SizeofSession)
	f.Fuzz(func(t *testing.T, in []byte) {
		// A call that does not return is a failure too: after 20 s the
		// goroutines are dumped (to $CABI_FUZZ_DUMP when set, the fuzz
		// coordinator drops a worker's stderr) and the process dies.
		watchdog := time.AfterFunc(20*time.Second, func() {
			buf := make([]byte, 1<<22)
			buf = buf[:runtime.Stack(buf, true)]
			if p := os.Getenv("CABI_FUZZ_DUMP"); p != "" {
				os.WriteFile(p, append([]byte(fmt.Sprintf("input %q\n", in)), buf...), 0o600)
			}
			panic(fmt.Sprintf("fuzz input %q hung for 20 s:\n%s", in, buf))
		})
		defer watchdog.Stop()
		r := &fuzzReader{b: in}
		base := len(m.mem)
		defer func() {
			for _, b := range m.mem[base:] {
				b.Free()
			}
			m.mem = m.mem[:base]
		}()
		check := func(what string, rv uint) ck.RV {
			if !allowedFuzzRV[ck.RV(rv)] {
				t.Fatalf("%s: %v%s", what, ck.RV(rv), m.panics())
			}
			for _, b := range m.mem {
				if b.Overrun() {
					t.Fatalf("%s wrote past the end of a %d-byte buffer", what, b.N)
				}
			}
			return ck.RV(rv)
		}
		mech, typ := r.mechanism(m)
		tmpl, n := r.template(m)
		ph := m.alloc(ctest.SizeofULong)

		if check("C_CreateObject", m.f.C_CreateObject(h, tmpl, uintptr(n), ph.P)) == ck.CKR_OK {
			check("C_DestroyObject", m.f.C_DestroyObject(h, uintptr(ctest.ULong(ph.P))))
		}
		if check("C_FindObjectsInit", m.f.C_FindObjectsInit(h, tmpl, uintptr(n))) == ck.CKR_OK {
			check("C_FindObjects", m.f.C_FindObjects(h, out.P, 8, outLen.P))
			check("C_FindObjectsFinal", m.f.C_FindObjectsFinal(h))
		}
		// Output templates: honest buffers (a caller's ulValueLen is its
		// buffer size), NULL values and short ones.
		if tmpl != 0 && n > 0 {
			type entry struct {
				p uintptr
				n uint
			}
			var out []entry
			for i := range int(n) {
				a := ctest.GetAttr(ctest.Mem{P: tmpl, N: int(n) * ctest.SizeofAttribute}, i)
				e := entry{0, a.Len}
				if a.Len > 4096 {
					e.n = 0
				}
				if a.Value != 0 {
					e.p = m.alloc(int(e.n)).P
				}
				out = append(out, e)
			}
			// Each call gets the buffers' true lengths again, as a caller
			// reusing a template must set them.
			for _, obj := range []uintptr{aes, ecPub, ecPriv} {
				for i, e := range out {
					ctest.SetWord(tmpl+uintptr(i*ctest.SizeofAttribute)+8, e.p)
					ctest.SetULong(tmpl+uintptr(i*ctest.SizeofAttribute)+16, e.n)
				}
				check("C_GetAttributeValue", m.f.C_GetAttributeValue(h, obj, tmpl, uintptr(n)))
			}
			// Reused without resetting: the CK_UNAVAILABLE_INFORMATION the
			// module wrote must not become a buffer length.
			check("C_GetAttributeValue again", m.f.C_GetAttributeValue(h, ecPub, tmpl, uintptr(n)))
		}
		check("C_SetAttributeValue", m.f.C_SetAttributeValue(h, aes, tmpl, uintptr(n)))

		switch typ {
		case ck.CKM_AES_KEY_GEN:
			if check("C_GenerateKey", m.f.C_GenerateKey(h, mech, tmpl, uintptr(n), ph.P)) == ck.CKR_OK {
				check("C_DestroyObject", m.f.C_DestroyObject(h, uintptr(ctest.ULong(ph.P))))
			}
		case ck.CKM_SHA256:
			if check("C_DigestInit", m.f.C_DigestInit(h, mech)) == ck.CKR_OK {
				ctest.SetULong(outLen.P, 1024)
				check("C_Digest", m.f.C_Digest(h, data.P, 64, out.P, outLen.P))
			}
		}
		for _, key := range []uintptr{aes, ecPriv, ecPub} {
			for _, op := range []struct {
				name string
				init func(uintptr, uintptr, uintptr) uint
				run  func() uint
			}{
				{"C_EncryptInit", m.f.C_EncryptInit, func() uint { return m.f.C_Encrypt(h, data.P, 64, out.P, outLen.P) }},
				{"C_DecryptInit", m.f.C_DecryptInit, func() uint { return m.f.C_Decrypt(h, data.P, 64, out.P, outLen.P) }},
				{"C_SignInit", m.f.C_SignInit, func() uint { return m.f.C_Sign(h, data.P, 32, out.P, outLen.P) }},
				{"C_VerifyInit", m.f.C_VerifyInit, func() uint { return m.f.C_Verify(h, data.P, 32, out.P, 64) }},
			} {
				if check(op.name, op.init(h, mech, key)) == ck.CKR_OK {
					ctest.SetULong(outLen.P, 1024)
					if rv := ck.RV(op.run()); rv != ck.CKR_SIGNATURE_INVALID && rv != ck.CKR_SIGNATURE_LEN_RANGE {
						check(op.name+" (run)", uint(rv))
					}
				}
			}
		}
		if check("C_UnwrapKey", m.f.C_UnwrapKey(h, mech, aes, data.P, 40, tmpl, uintptr(n), ph.P)) == ck.CKR_OK {
			check("C_DestroyObject", m.f.C_DestroyObject(h, uintptr(ctest.ULong(ph.P))))
		}
		// Nothing is left behind: no operation is active, the session works.
		wantRV(t, "C_GetSessionInfo", m.f.C_GetSessionInfo(h, info.P), ck.CKR_OK)
		wantRV(t, "C_FindObjectsInit", m.f.C_FindObjectsInit(h, 0, 0), ck.CKR_OK)
		wantRV(t, "C_FindObjectsFinal", m.f.C_FindObjectsFinal(h), ck.CKR_OK)
	})
}
