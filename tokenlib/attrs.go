package tokenlib

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Attribute is one entry of a PKCS#11 template: the attribute type and its
// value in the C representation of the platform (CK_BBOOL one byte,
// CK_ULONG eight bytes in native byte order), so the C layer copies values
// without converting them.
type Attribute struct {
	Type  ck.Attribute
	Value []byte
}

// Bool returns a CK_BBOOL attribute.
func Bool(t ck.Attribute, v bool) Attribute { return Attribute{Type: t, Value: boolBytes(v)} }

// Ulong returns a CK_ULONG attribute.
func Ulong(t ck.Attribute, v uint) Attribute { return Attribute{Type: t, Value: ulongBytes(v)} }

// Bytes returns a byte-array attribute (a copy of v).
func Bytes(t ck.Attribute, v []byte) Attribute { return Attribute{Type: t, Value: slices.Clone(v)} }

// String returns a byte-array attribute holding s (labels, IDs).
func String(t ck.Attribute, s string) Attribute { return Attribute{Type: t, Value: []byte(s)} }

// ulongSize is sizeof(CK_ULONG) on the platforms we build for (LP64).
const ulongSize = 8

func boolBytes(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

func ulongBytes(v uint) []byte {
	b := make([]byte, ulongSize)
	binary.NativeEndian.PutUint64(b, uint64(v))
	return b
}

// DecodeUlong reads a CK_ULONG attribute value.
func DecodeUlong(b []byte) (uint, bool) {
	if len(b) != ulongSize {
		return 0, false
	}
	return uint(binary.NativeEndian.Uint64(b)), true
}

// DecodeBool reads a CK_BBOOL attribute value.
func DecodeBool(b []byte) (bool, bool) {
	if len(b) != 1 || b[0] > 1 {
		return false, false
	}
	return b[0] == 1, true
}

// attrKind says how an attribute's value is shaped.
type attrKind uint8

const (
	kindBytes attrKind = iota + 1
	kindBool
	kindUlong
	kindDate // CK_DATE: 8 ASCII digits or empty
)

// attrKinds lists every attribute the engine knows. Anything else in a
// template is CKR_ATTRIBUTE_TYPE_INVALID.
var attrKinds = map[ck.Attribute]attrKind{
	ck.CKA_CLASS: kindUlong, ck.CKA_TOKEN: kindBool, ck.CKA_PRIVATE: kindBool,
	ck.CKA_LABEL: kindBytes, ck.CKA_APPLICATION: kindBytes, ck.CKA_VALUE: kindBytes,
	ck.CKA_OBJECT_ID: kindBytes, ck.CKA_KEY_TYPE: kindUlong, ck.CKA_ID: kindBytes,
	ck.CKA_SUBJECT: kindBytes, ck.CKA_SENSITIVE: kindBool, ck.CKA_ENCRYPT: kindBool,
	ck.CKA_DECRYPT: kindBool, ck.CKA_WRAP: kindBool, ck.CKA_UNWRAP: kindBool,
	ck.CKA_SIGN: kindBool, ck.CKA_SIGN_RECOVER: kindBool, ck.CKA_VERIFY: kindBool,
	ck.CKA_VERIFY_RECOVER: kindBool, ck.CKA_DERIVE: kindBool, ck.CKA_START_DATE: kindDate,
	ck.CKA_END_DATE: kindDate, ck.CKA_MODULUS: kindBytes, ck.CKA_MODULUS_BITS: kindUlong,
	ck.CKA_PUBLIC_EXPONENT: kindBytes, ck.CKA_PRIVATE_EXPONENT: kindBytes,
	ck.CKA_PRIME_1: kindBytes, ck.CKA_PRIME_2: kindBytes, ck.CKA_EXPONENT_1: kindBytes,
	ck.CKA_EXPONENT_2: kindBytes, ck.CKA_COEFFICIENT: kindBytes, ck.CKA_VALUE_LEN: kindUlong,
	ck.CKA_EXTRACTABLE: kindBool, ck.CKA_LOCAL: kindBool, ck.CKA_NEVER_EXTRACTABLE: kindBool,
	ck.CKA_ALWAYS_SENSITIVE: kindBool, ck.CKA_KEY_GEN_MECHANISM: kindUlong,
	ck.CKA_MODIFIABLE: kindBool, ck.CKA_COPYABLE: kindBool, ck.CKA_DESTROYABLE: kindBool,
	ck.CKA_EC_PARAMS: kindBytes, ck.CKA_EC_POINT: kindBytes, ck.CKA_ALWAYS_AUTHENTICATE: kindBool,
	ck.CKA_WRAP_WITH_TRUSTED: kindBool, ck.CKA_TRUSTED: kindBool, CKA_UNIQUE_ID: kindBytes,
	ck.CKA_CHECK_VALUE: kindBytes, ck.CKA_PUBLIC_KEY_INFO: kindBytes,
	ck.CKA_IBM_OPAQUE: kindBytes, ck.CKA_IBM_OPAQUE_REENC: kindBytes, ck.CKA_IBM_OPAQUE_OLD: kindBytes,
	// Certificates (CKC_X_509) and NSS trust objects.
	ck.CKA_CERTIFICATE_TYPE: kindUlong, ck.CKA_ISSUER: kindBytes, ck.CKA_SERIAL_NUMBER: kindBytes,
	ck.CKA_CERTIFICATE_CATEGORY: kindUlong, ck.CKA_JAVA_MIDP_SECURITY_DOMAIN: kindUlong, ck.CKA_URL: kindBytes,
	ck.CKA_HASH_OF_SUBJECT_PUBLIC_KEY: kindBytes, ck.CKA_HASH_OF_ISSUER_PUBLIC_KEY: kindBytes,
	ck.CKA_NAME_HASH_ALGORITHM: kindUlong, ck.CKA_NSS_EMAIL: kindBytes,
	ck.CKA_CERT_SHA1_HASH: kindBytes, ck.CKA_CERT_MD5_HASH: kindBytes, ck.CKA_TRUST_STEP_UP_APPROVED: kindBool,
}

func init() {
	for _, a := range ck.NSSTrustPurposes {
		attrKinds[a] = kindUlong
	}
}

// attrName names an attribute for messages.
func attrName(t ck.Attribute) string { return fmt.Sprint(t) }

// CKA_UNIQUE_ID is PKCS#11 v3.0 (ck holds the v2.40 header): a token-assigned,
// read-only, unique identifier of an object.
const CKA_UNIQUE_ID ck.Attribute = 0x00000004

// template is a validated, decoded template: at most one value per type,
// each of the right shape.
type template map[ck.Attribute][]byte

// parseTemplate checks the shape of every attribute of attrs. It never
// panics, whatever the input.
func parseTemplate(attrs []Attribute) (template, error) {
	t := make(template, len(attrs))
	for _, a := range attrs {
		kind, ok := attrKinds[a.Type]
		if !ok {
			return nil, newErrh(ck.CKR_ATTRIBUTE_TYPE_INVALID, errclass.InvalidArgument,
				"remove the attribute from the template", "%s is not supported by this token", attrName(a.Type))
		}
		if _, dup := t[a.Type]; dup {
			return nil, newErr(ck.CKR_TEMPLATE_INCONSISTENT, errclass.InvalidArgument,
				"%s appears twice in the template", attrName(a.Type))
		}
		switch kind {
		case kindBool:
			if _, ok := DecodeBool(a.Value); !ok {
				return nil, newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
					"a CK_BBOOL is one byte, 0 or 1", "%s has an invalid boolean value (%d bytes)", attrName(a.Type), len(a.Value))
			}
		case kindUlong:
			if _, ok := DecodeUlong(a.Value); !ok {
				return nil, newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
					"a CK_ULONG is 8 bytes in native byte order", "%s has an invalid integer value (%d bytes)", attrName(a.Type), len(a.Value))
			}
		case kindDate:
			if !validDate(a.Value) {
				return nil, newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
					"a CK_DATE is YYYYMMDD in ASCII digits, or empty", "%s is not a valid date", attrName(a.Type))
			}
		}
		t[a.Type] = slices.Clone(a.Value)
	}
	return t, nil
}

func validDate(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if len(b) != 8 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (t template) has(a ck.Attribute) bool { _, ok := t[a]; return ok }

// boolOr returns the boolean value of a, or def when absent.
func (t template) boolOr(a ck.Attribute, def bool) bool {
	if v, ok := t[a]; ok {
		b, _ := DecodeBool(v)
		return b
	}
	return def
}

// ulong returns the CK_ULONG value of a.
func (t template) ulong(a ck.Attribute) (uint, bool) {
	v, ok := t[a]
	if !ok {
		return 0, false
	}
	return DecodeUlong(v)
}

func (t template) clone() template { return maps.Clone(t) }

// matches reports whether every attribute of q is in t with the same value.
func (t template) matches(q template) bool {
	for k, v := range q {
		have, ok := t[k]
		if !ok || string(have) != string(v) {
			return false
		}
	}
	return true
}
