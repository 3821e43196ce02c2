package tokenlib

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// ObjectHandle is a CK_OBJECT_HANDLE. Token objects keep the handle the
// store gave them, so every process uses the same number for the same
// object; session objects get handles from a separate range.
type ObjectHandle uint

// sessionObjectBase is the first session object handle. Store handles of
// token objects stay below it.
const sessionObjectBase ObjectHandle = 0x4000_0000

// object is one PKCS#11 object as the engine sees it: all attributes in C
// representation, including the secure key blob in CKA_IBM_OPAQUE.
type object struct {
	handle  ObjectHandle
	attrs   template
	session SessionHandle // the creating session, for session objects
	version uint64        // store version, for token objects
}

func (o *object) class() ck.ObjectClass {
	v, _ := o.attrs.ulong(ck.CKA_CLASS)
	return ck.ObjectClass(v)
}

func (o *object) keyType() ck.KeyType {
	v, _ := o.attrs.ulong(ck.CKA_KEY_TYPE)
	return ck.KeyType(v)
}

func (o *object) isToken() bool   { return o.attrs.boolOr(ck.CKA_TOKEN, false) }
func (o *object) isPrivate() bool { return o.attrs.boolOr(ck.CKA_PRIVATE, true) }
func (o *object) flag(a ck.Attribute) bool {
	return o.attrs.boolOr(a, false)
}
func (o *object) label() string { return string(o.attrs[ck.CKA_LABEL]) }

func (o *object) isKey() bool {
	switch o.class() {
	case ck.CKO_SECRET_KEY, ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY:
		return true
	}
	return false
}

// clone returns a deep enough copy: the attribute map is new, values are
// shared (they are never modified in place).
func (o *object) clone() *object {
	c := *o
	c.attrs = o.attrs.clone()
	return &c
}

type attrSet map[ck.Attribute]bool

func setOf(as ...ck.Attribute) attrSet {
	s := make(attrSet, len(as))
	for _, a := range as {
		s[a] = true
	}
	return s
}

var (
	commonAttrs = setOf(ck.CKA_CLASS, ck.CKA_TOKEN, ck.CKA_PRIVATE, ck.CKA_MODIFIABLE, ck.CKA_LABEL,
		ck.CKA_COPYABLE, ck.CKA_DESTROYABLE, CKA_UNIQUE_ID)
	dataAttrs = setOf(ck.CKA_APPLICATION, ck.CKA_OBJECT_ID, ck.CKA_VALUE)
	keyAttrs  = setOf(ck.CKA_KEY_TYPE, ck.CKA_ID, ck.CKA_START_DATE, ck.CKA_END_DATE, ck.CKA_DERIVE,
		ck.CKA_LOCAL, ck.CKA_KEY_GEN_MECHANISM, ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD)
	secretAttrs = setOf(ck.CKA_SENSITIVE, ck.CKA_ENCRYPT, ck.CKA_DECRYPT, ck.CKA_SIGN, ck.CKA_VERIFY,
		ck.CKA_WRAP, ck.CKA_UNWRAP, ck.CKA_EXTRACTABLE, ck.CKA_ALWAYS_SENSITIVE, ck.CKA_NEVER_EXTRACTABLE,
		ck.CKA_CHECK_VALUE, ck.CKA_WRAP_WITH_TRUSTED, ck.CKA_TRUSTED, ck.CKA_VALUE, ck.CKA_VALUE_LEN)
	publicKeyAttrs = setOf(ck.CKA_SUBJECT, ck.CKA_ENCRYPT, ck.CKA_VERIFY, ck.CKA_VERIFY_RECOVER, ck.CKA_WRAP,
		ck.CKA_TRUSTED, ck.CKA_PUBLIC_KEY_INFO, ck.CKA_MODULUS, ck.CKA_MODULUS_BITS, ck.CKA_PUBLIC_EXPONENT,
		ck.CKA_EC_PARAMS, ck.CKA_EC_POINT)
	privateAttrs = setOf(ck.CKA_SUBJECT, ck.CKA_SENSITIVE, ck.CKA_DECRYPT, ck.CKA_SIGN, ck.CKA_SIGN_RECOVER,
		ck.CKA_UNWRAP, ck.CKA_EXTRACTABLE, ck.CKA_ALWAYS_SENSITIVE, ck.CKA_NEVER_EXTRACTABLE,
		ck.CKA_WRAP_WITH_TRUSTED, ck.CKA_ALWAYS_AUTHENTICATE, ck.CKA_PUBLIC_KEY_INFO, ck.CKA_MODULUS,
		ck.CKA_PUBLIC_EXPONENT, ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2, ck.CKA_EXPONENT_1,
		ck.CKA_EXPONENT_2, ck.CKA_COEFFICIENT, ck.CKA_EC_PARAMS, ck.CKA_VALUE)

	// certAttrs are the attributes of X.509 certificate objects
	// (PKCS#11 v2.40 §4.6), plus NSS's e-mail address.
	certAttrs = setOf(ck.CKA_CERTIFICATE_TYPE, ck.CKA_TRUSTED, ck.CKA_CERTIFICATE_CATEGORY, ck.CKA_CHECK_VALUE,
		ck.CKA_START_DATE, ck.CKA_END_DATE, ck.CKA_PUBLIC_KEY_INFO, ck.CKA_SUBJECT, ck.CKA_ID, ck.CKA_ISSUER,
		ck.CKA_SERIAL_NUMBER, ck.CKA_VALUE, ck.CKA_URL, ck.CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
		ck.CKA_HASH_OF_ISSUER_PUBLIC_KEY, ck.CKA_JAVA_MIDP_SECURITY_DOMAIN, ck.CKA_NAME_HASH_ALGORITHM,
		ck.CKA_NSS_EMAIL)
	// trustAttrs are the attributes of NSS trust objects (CKO_NSS_TRUST).
	trustAttrs = setOf(append([]ck.Attribute{ck.CKA_ISSUER, ck.CKA_SERIAL_NUMBER, ck.CKA_CERT_SHA1_HASH,
		ck.CKA_CERT_MD5_HASH, ck.CKA_TRUST_STEP_UP_APPROVED}, ck.NSSTrustPurposes...)...)

	// tokenSet are attributes only the token sets; in a template they are
	// CKR_ATTRIBUTE_READ_ONLY.
	tokenSet = setOf(CKA_UNIQUE_ID, ck.CKA_LOCAL, ck.CKA_KEY_GEN_MECHANISM, ck.CKA_ALWAYS_SENSITIVE,
		ck.CKA_NEVER_EXTRACTABLE, ck.CKA_IBM_OPAQUE, ck.CKA_IBM_OPAQUE_REENC, ck.CKA_IBM_OPAQUE_OLD,
		ck.CKA_CHECK_VALUE, ck.CKA_PUBLIC_KEY_INFO)

	// keyMaterial is clear key material: accepted for import, never stored,
	// never returned (CKR_ATTRIBUTE_SENSITIVE).
	keyMaterial = setOf(ck.CKA_VALUE, ck.CKA_PRIVATE_EXPONENT, ck.CKA_PRIME_1, ck.CKA_PRIME_2,
		ck.CKA_EXPONENT_1, ck.CKA_EXPONENT_2, ck.CKA_COEFFICIENT)

	// modifiable are the attributes SetAttributeValue may change (subject to
	// CKA_MODIFIABLE and the one-way rules). CopyObject additionally accepts
	// CKA_TOKEN and CKA_PRIVATE.
	modifiable = setOf(ck.CKA_LABEL, ck.CKA_ID, ck.CKA_SUBJECT, ck.CKA_START_DATE, ck.CKA_END_DATE,
		ck.CKA_DERIVE, ck.CKA_ENCRYPT, ck.CKA_DECRYPT, ck.CKA_SIGN, ck.CKA_VERIFY, ck.CKA_WRAP,
		ck.CKA_UNWRAP, ck.CKA_SIGN_RECOVER, ck.CKA_VERIFY_RECOVER, ck.CKA_SENSITIVE, ck.CKA_EXTRACTABLE,
		ck.CKA_TRUSTED, ck.CKA_WRAP_WITH_TRUSTED, ck.CKA_COPYABLE, ck.CKA_DESTROYABLE,
		ck.CKA_APPLICATION, ck.CKA_OBJECT_ID, ck.CKA_ALWAYS_AUTHENTICATE)
)

// allowed reports whether attribute a belongs to objects of class c.
func allowed(c ck.ObjectClass, a ck.Attribute) bool {
	if commonAttrs[a] {
		return true
	}
	switch c {
	case ck.CKO_DATA:
		return dataAttrs[a]
	case ck.CKO_SECRET_KEY:
		return keyAttrs[a] || secretAttrs[a]
	case ck.CKO_PUBLIC_KEY:
		return keyAttrs[a] || publicKeyAttrs[a]
	case ck.CKO_PRIVATE_KEY:
		return keyAttrs[a] || privateAttrs[a]
	case ck.CKO_CERTIFICATE:
		return certAttrs[a]
	case ck.CKO_NSS_TRUST:
		return trustAttrs[a]
	}
	return false
}

// classModifiable are the attributes that SetAttributeValue and
// CopyObject may change only on objects of one class, besides those of
// modifiable: the value of a data object (a key's CKA_VALUE is key
// material, a certificate's is fixed), the names of a certificate, every
// trust setting of an NSS trust object.
func classModifiable(c ck.ObjectClass, a ck.Attribute) bool {
	switch c {
	case ck.CKO_DATA:
		return a == ck.CKA_VALUE
	case ck.CKO_CERTIFICATE:
		switch a {
		case ck.CKA_ISSUER, ck.CKA_SERIAL_NUMBER, ck.CKA_CERTIFICATE_CATEGORY, ck.CKA_NSS_EMAIL,
			ck.CKA_JAVA_MIDP_SECURITY_DOMAIN:
			return true
		}
	case ck.CKO_NSS_TRUST:
		return trustAttrs[a]
	}
	return false
}

// checkClass returns the class of t, or the PKCS#11 error for a missing or
// unsupported class.
func checkClass(t template) (ck.ObjectClass, error) {
	v, ok := t.ulong(ck.CKA_CLASS)
	if !ok {
		return 0, newErrh(ck.CKR_TEMPLATE_INCOMPLETE, errclass.InvalidArgument,
			"add CKA_CLASS to the template", "the template has no CKA_CLASS")
	}
	c := ck.ObjectClass(v)
	switch c {
	case ck.CKO_DATA, ck.CKO_SECRET_KEY, ck.CKO_PUBLIC_KEY, ck.CKO_PRIVATE_KEY, ck.CKO_CERTIFICATE, ck.CKO_NSS_TRUST:
		return c, nil
	}
	return 0, newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
		"use CKO_DATA, CKO_SECRET_KEY, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_CERTIFICATE or CKO_NSS_TRUST",
		"objects of class %v are not supported", c)
}

// checkAttrs rejects attributes that do not belong to class c, and those only
// the token sets.
func checkAttrs(c ck.ObjectClass, t template, extra attrSet) error {
	for a := range t {
		if extra[a] {
			continue
		}
		if !allowed(c, a) {
			return newErrh(ck.CKR_ATTRIBUTE_TYPE_INVALID, errclass.InvalidArgument,
				"remove it from the template", "%s is not an attribute of %v objects", attrName(a), c)
		}
		if tokenSet[a] {
			return newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
				"remove it from the template; the token sets it", "%s is read-only", attrName(a))
		}
	}
	return nil
}

// objectDefaults fills in every attribute the engine keeps for objects of
// class c that the template left out, following the PKCS#11 defaults (or the
// token's where PKCS#11 leaves them open), and sets the protection flags of
// secret and private keys to what the token really does (see keyFlags).
func objectDefaults(t template, c ck.ObjectClass) error {
	def := func(a ck.Attribute, v []byte) {
		if !t.has(a) {
			t[a] = v
		}
	}
	def(ck.CKA_TOKEN, boolBytes(false))
	def(ck.CKA_MODIFIABLE, boolBytes(true))
	def(ck.CKA_COPYABLE, boolBytes(true))
	def(ck.CKA_DESTROYABLE, boolBytes(true))
	def(ck.CKA_LABEL, []byte{})
	t[CKA_UNIQUE_ID] = newUniqueID()
	switch c {
	case ck.CKO_DATA:
		def(ck.CKA_PRIVATE, boolBytes(false))
		def(ck.CKA_APPLICATION, []byte{})
		def(ck.CKA_OBJECT_ID, []byte{})
		def(ck.CKA_VALUE, []byte{})
		return nil
	case ck.CKO_CERTIFICATE:
		certDefaults(t)
		return nil
	case ck.CKO_NSS_TRUST:
		def(ck.CKA_PRIVATE, boolBytes(false))
		return nil
	case ck.CKO_PUBLIC_KEY:
		def(ck.CKA_PRIVATE, boolBytes(false))
	default:
		def(ck.CKA_PRIVATE, boolBytes(true))
	}
	def(ck.CKA_ID, []byte{})
	def(ck.CKA_START_DATE, []byte{})
	def(ck.CKA_END_DATE, []byte{})
	def(ck.CKA_DERIVE, boolBytes(false))
	def(ck.CKA_LOCAL, boolBytes(false))
	def(ck.CKA_KEY_GEN_MECHANISM, ulongBytes(uint(ck.CK_UNAVAILABLE_INFORMATION)))
	switch c {
	case ck.CKO_SECRET_KEY, ck.CKO_PRIVATE_KEY:
		if err := keyFlags(t, c); err != nil {
			return err
		}
		def(ck.CKA_DECRYPT, boolBytes(true))
		def(ck.CKA_SIGN, boolBytes(true))
		def(ck.CKA_UNWRAP, boolBytes(true))
		def(ck.CKA_WRAP_WITH_TRUSTED, boolBytes(false))
	}
	switch c {
	case ck.CKO_SECRET_KEY, ck.CKO_PUBLIC_KEY:
		def(ck.CKA_ENCRYPT, boolBytes(true))
		def(ck.CKA_VERIFY, boolBytes(true))
		def(ck.CKA_WRAP, boolBytes(true))
		def(ck.CKA_TRUSTED, boolBytes(false))
	}
	switch c {
	case ck.CKO_PUBLIC_KEY:
		def(ck.CKA_SUBJECT, []byte{})
		def(ck.CKA_VERIFY_RECOVER, boolBytes(false))
	case ck.CKO_PRIVATE_KEY:
		def(ck.CKA_SUBJECT, []byte{})
		def(ck.CKA_SIGN_RECOVER, boolBytes(false))
		def(ck.CKA_ALWAYS_AUTHENTICATE, boolBytes(false))
	}
	return nil
}

// keyFlags sets the protection flags of a new secret or private key to
// what the token does with it, whatever the template asked:
//
//   - CKA_SENSITIVE and CKA_ALWAYS_SENSITIVE are TRUE: the engine keeps only
//     the secure key blob, so no clear value can ever be read. A template
//     asking CKA_SENSITIVE FALSE (pkcs11-tool does, unless --sensitive) gets
//     a sensitive key all the same, which says so, rather than a key that
//     claims to be readable and then refuses every read (which makes Java's
//     SunPKCS11 and NSS try to read it). libpkcshsm(3) documents the
//     override.
//   - CKA_EXTRACTABLE is what C_WrapKey allows: secret keys can be wrapped
//     (default TRUE, FALSE on request); private keys cannot (always FALSE;
//     asking TRUE is CKR_ATTRIBUTE_VALUE_INVALID).
//   - CKA_NEVER_EXTRACTABLE is the opposite of CKA_EXTRACTABLE at creation
//     and never changes afterwards (CKA_EXTRACTABLE can only become FALSE).
func keyFlags(t template, c ck.ObjectClass) error {
	extractable := true
	if c == ck.CKO_PRIVATE_KEY {
		if t.boolOr(ck.CKA_EXTRACTABLE, false) {
			return newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
				"leave CKA_EXTRACTABLE out or set it FALSE: this token wraps secret keys only",
				"CKA_EXTRACTABLE TRUE: private keys of this token cannot be wrapped")
		}
		extractable = false
	} else {
		extractable = t.boolOr(ck.CKA_EXTRACTABLE, true)
	}
	t[ck.CKA_SENSITIVE] = boolBytes(true)
	t[ck.CKA_ALWAYS_SENSITIVE] = boolBytes(true)
	t[ck.CKA_EXTRACTABLE] = boolBytes(extractable)
	t[ck.CKA_NEVER_EXTRACTABLE] = boolBytes(!extractable)
	return nil
}

// keyFlagsView returns the protection flags of a stored secret or private
// key as keyFlags would have set them. Keys stored before the engine set
// them (CKA_SENSITIVE FALSE, a private key CKA_EXTRACTABLE TRUE) are
// reported as the token treats them; nil for other objects.
func keyFlagsView(o *object) map[ck.Attribute][]byte {
	c := o.class()
	if c != ck.CKO_SECRET_KEY && c != ck.CKO_PRIVATE_KEY {
		return nil
	}
	extractable := c == ck.CKO_SECRET_KEY && o.attrs.boolOr(ck.CKA_EXTRACTABLE, true)
	never := !extractable && o.attrs.boolOr(ck.CKA_NEVER_EXTRACTABLE, c == ck.CKO_PRIVATE_KEY)
	return map[ck.Attribute][]byte{
		ck.CKA_SENSITIVE:         boolBytes(true),
		ck.CKA_ALWAYS_SENSITIVE:  boolBytes(true),
		ck.CKA_EXTRACTABLE:       boolBytes(extractable),
		ck.CKA_NEVER_EXTRACTABLE: boolBytes(never),
	}
}

// markGenerated sets what a key made on the token (generated, not imported)
// carries: CKA_LOCAL and the generation mechanism.
func markGenerated(t template, m ck.Mechanism) {
	t[ck.CKA_LOCAL] = boolBytes(true)
	t[ck.CKA_KEY_GEN_MECHANISM] = ulongBytes(uint(m))
}

func newUniqueID() []byte {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return []byte(hex.EncodeToString(b[:]))
}

// setAttrs applies a SetAttributeValue (or CopyObject) template to a copy of
// o's attributes, enforcing read-only attributes and the one-way flags. It
// returns the new attribute set; o is not changed.
func setAttrs(o *object, t template, copying bool) (template, error) {
	if !copying && !o.flag(ck.CKA_MODIFIABLE) {
		return nil, newErrh(ck.CKR_ACTION_PROHIBITED, errclass.FailedPrecondition,
			"the object was created with CKA_MODIFIABLE false; copy it instead", "the object cannot be modified")
	}
	c := o.class()
	out := o.attrs.clone()
	for a, v := range t {
		if !allowed(c, a) {
			return nil, newErr(ck.CKR_ATTRIBUTE_TYPE_INVALID, errclass.InvalidArgument,
				"%s is not an attribute of %v objects", attrName(a), c)
		}
		ok := modifiable[a] || classModifiable(c, a) ||
			(copying && (a == ck.CKA_TOKEN || a == ck.CKA_PRIVATE || a == ck.CKA_MODIFIABLE))
		if !ok {
			if string(out[a]) == string(v) && !(a == ck.CKA_VALUE && c != ck.CKO_CERTIFICATE) && !keyMaterial[a] {
				continue // setting the value it already has is harmless
			}
			return nil, newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
				"this attribute is fixed when the object is created", "%s cannot be changed", attrName(a))
		}
		nb, _ := DecodeBool(v)
		switch a {
		case ck.CKA_SENSITIVE:
			if o.flag(ck.CKA_SENSITIVE) && !nb {
				return nil, newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
					"a sensitive key stays sensitive", "CKA_SENSITIVE cannot be changed from true to false")
			}
		case ck.CKA_EXTRACTABLE:
			if !o.attrs.boolOr(ck.CKA_EXTRACTABLE, true) && nb {
				return nil, newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
					"a non-extractable key stays non-extractable", "CKA_EXTRACTABLE cannot be changed from false to true")
			}
		case ck.CKA_COPYABLE, ck.CKA_DESTROYABLE:
			if !o.attrs.boolOr(a, true) && nb {
				return nil, newErr(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
					"%s cannot be changed from false to true", attrName(a))
			}
		case ck.CKA_MODIFIABLE:
			if !o.attrs.boolOr(a, true) && nb {
				return nil, newErr(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
					"CKA_MODIFIABLE cannot be changed from false to true")
			}
		}
		out[a] = v
	}
	return out, nil
}
