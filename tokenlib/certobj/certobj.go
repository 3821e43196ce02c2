// Package certobj derives the attributes of the token's certificate
// objects (CKO_CERTIFICATE of type CKC_X_509, PKCS#11 v2.40 §4.6) and
// checks the values of NSS's trust objects (CKO_NSS_TRUST, NSS's
// pkcs11n.h). Certificates and trust objects hold no secure key: the
// engine stores them like data objects, public by default, and a master
// key change never touches them (its passes select key classes only).
package certobj

import (
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// X509 is what the token reads from a certificate's DER encoding.
type X509 struct {
	Subject    []byte // DER Name
	Issuer     []byte // DER Name
	Serial     []byte // DER INTEGER, as NSS and openCryptoki store it
	SPKI       []byte // DER SubjectPublicKeyInfo (CKA_PUBLIC_KEY_INFO)
	CheckValue []byte // first 3 bytes of SHA-1 of the DER (CKA_CHECK_VALUE)
}

// ErrNotX509 is returned for a CKA_VALUE that is not one DER X.509
// certificate.
var ErrNotX509 = errors.New("CKA_VALUE is not a DER-encoded X.509 certificate")

// ParseX509 reads the attributes the token derives from der.
func ParseX509(der []byte) (X509, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return X509{}, fmt.Errorf("%w: %v", ErrNotX509, err)
	}
	sum := sha1.Sum(der)
	return X509{
		Subject:    slices.Clone(c.RawSubject),
		Issuer:     slices.Clone(c.RawIssuer),
		Serial:     derInteger(c.SerialNumber),
		SPKI:       slices.Clone(c.RawSubjectPublicKeyInfo),
		CheckValue: sum[:3],
	}, nil
}

// derInteger encodes n as a DER INTEGER.
func derInteger(n *big.Int) []byte {
	b, err := asn1.Marshal(n)
	if err != nil { // cannot happen for a non-nil *big.Int
		return nil
	}
	return b
}

// ValidCategory reports whether v is a CKA_CERTIFICATE_CATEGORY value:
// unspecified (0), token user (1), authority (2), other entity (3).
func ValidCategory(v uint) bool { return v <= 3 }

// ValidMIDPDomain reports whether v is a CKA_JAVA_MIDP_SECURITY_DOMAIN
// value: unspecified (0), manufacturer (1), operator (2), third party (3).
func ValidMIDPDomain(v uint) bool { return v <= 3 }

// ValidTrust reports whether v is a CK_TRUST value NSS writes.
func ValidTrust(v uint) bool {
	switch v {
	case ck.CKT_NSS_TRUSTED, ck.CKT_NSS_TRUSTED_DELEGATOR, ck.CKT_NSS_MUST_VERIFY_TRUST,
		ck.CKT_NSS_MUST_VERIFY, ck.CKT_NSS_TRUST_UNKNOWN, ck.CKT_NSS_NOT_TRUSTED, ck.CKT_NSS_VALID_DELEGATOR:
		return true
	}
	return false
}
