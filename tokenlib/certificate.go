package tokenlib

import (
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/certobj"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// certDefaults fills in the attributes of a certificate the template left
// out (PKCS#11 v2.40 §4.6: public, not trusted, category unspecified).
func certDefaults(t template) {
	def := func(a ck.Attribute, v []byte) {
		if !t.has(a) {
			t[a] = v
		}
	}
	def(ck.CKA_PRIVATE, boolBytes(false))
	def(ck.CKA_TRUSTED, boolBytes(false))
	def(ck.CKA_CERTIFICATE_CATEGORY, ulongBytes(0))
	def(ck.CKA_ID, []byte{})
	def(ck.CKA_START_DATE, []byte{})
	def(ck.CKA_END_DATE, []byte{})
	def(ck.CKA_URL, []byte{})
	def(ck.CKA_HASH_OF_SUBJECT_PUBLIC_KEY, []byte{})
	def(ck.CKA_HASH_OF_ISSUER_PUBLIC_KEY, []byte{})
	def(ck.CKA_JAVA_MIDP_SECURITY_DOMAIN, ulongBytes(0))
	def(ck.CKA_NAME_HASH_ALGORITHM, ulongBytes(uint(ck.CKM_SHA_1)))
}

// completeCertificate checks a certificate template and adds what the
// token derives from CKA_VALUE: CKA_SUBJECT, CKA_ISSUER and
// CKA_SERIAL_NUMBER where the template left them out (values the
// application gives are kept as given, as the specification allows),
// CKA_CHECK_VALUE and CKA_PUBLIC_KEY_INFO.
func completeCertificate(tmpl template) error {
	ct, ok := tmpl.ulong(ck.CKA_CERTIFICATE_TYPE)
	if !ok {
		return incomplete(ck.CKA_CERTIFICATE_TYPE, "certificates need CKA_CERTIFICATE_TYPE CKC_X_509")
	}
	if ck.CertificateType(ct) != ck.CKC_X_509 {
		return newErrh(ck.CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument,
			"the token stores X.509 certificates (CKC_X_509) only", "certificate type %s is not supported", ck.CertificateTypeName(ck.CertificateType(ct)))
	}
	der := tmpl[ck.CKA_VALUE]
	if len(der) == 0 {
		if len(tmpl[ck.CKA_URL]) > 0 {
			return valueInvalid(ck.CKA_URL, "certificates by URL are not supported; give the DER encoding in CKA_VALUE")
		}
		return incomplete(ck.CKA_VALUE, "give the DER encoding of the certificate")
	}
	x, err := certobj.ParseX509(der)
	if err != nil {
		return valueInvalid(ck.CKA_VALUE, "%v", err)
	}
	for a, v := range map[ck.Attribute][]byte{ck.CKA_SUBJECT: x.Subject, ck.CKA_ISSUER: x.Issuer, ck.CKA_SERIAL_NUMBER: x.Serial} {
		if !tmpl.has(a) {
			tmpl[a] = v
		}
	}
	tmpl[ck.CKA_CHECK_VALUE] = x.CheckValue
	tmpl[ck.CKA_PUBLIC_KEY_INFO] = x.SPKI
	return nil
}

// checkValues checks the values of the enumerated attributes of
// certificates and NSS trust objects in a template (create, copy or set).
func checkValues(c ck.ObjectClass, t template) error {
	for a := range t {
		v, _ := t.ulong(a)
		switch {
		case a == ck.CKA_CERTIFICATE_CATEGORY && !certobj.ValidCategory(v):
			return valueInvalid(a, "%d is not a category (0 unspecified, 1 token user, 2 authority, 3 other entity)", v)
		case a == ck.CKA_JAVA_MIDP_SECURITY_DOMAIN && !certobj.ValidMIDPDomain(v):
			return valueInvalid(a, "%d is not a security domain (0..3)", v)
		case c == ck.CKO_NSS_TRUST && attrKinds[a] == kindUlong && !certobj.ValidTrust(v):
			return valueInvalid(a, "%#x is not a CK_TRUST value of NSS", v)
		}
	}
	return nil
}

// checkTrusted refuses CKA_TRUSTED TRUE from anyone but the security
// officer (PKCS#11 v2.40 §4.6.2, §4.7): only the SO vouches for a
// certificate or a wrapping key.
func (t *token) checkTrusted(tmpl template) error {
	if tmpl.boolOr(ck.CKA_TRUSTED, false) && t.login != ck.CKU_SO {
		return newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.PermissionDenied,
			"log in as the security officer to mark an object trusted", "only the security officer can set CKA_TRUSTED TRUE")
	}
	return nil
}
