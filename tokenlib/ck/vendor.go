package ck

// IBM vendor-defined values used by the CCA and EP11 tokens (openCryptoki
// numbering, so tools that know openCryptoki print them correctly).
const (
	// CKA_IBM_OPAQUE holds the secure key blob, enciphered under the
	// current HSM master key.
	CKA_IBM_OPAQUE Attribute = CKA_VENDOR_DEFINED + 0x00000001
	// CKA_IBM_OPAQUE_REENC holds the blob re-enciphered under the new
	// master key while a master key change is in progress.
	CKA_IBM_OPAQUE_REENC Attribute = CKA_VENDOR_DEFINED + 0x00000003
	// CKA_IBM_OPAQUE_OLD holds the blob under the previous master key
	// after a master key change was finalized.
	CKA_IBM_OPAQUE_OLD Attribute = CKA_VENDOR_DEFINED + 0x00000004
	// CKA_HIDDEN marks openCryptoki-internal objects (EP11 session and
	// VHSM PIN objects) that C_FindObjects never returns.
	CKA_HIDDEN Attribute = CKA_VENDOR_DEFINED + 0x01000000

	// CKH_IBM_EP11_SESSION is the hardware feature type of an EP11
	// STRICT_MODE session object.
	CKH_IBM_EP11_SESSION HWFeature = CKH_VENDOR_DEFINED + 0x00000001
	// CKH_IBM_EP11_VHSMPIN is the hardware feature type of the EP11
	// VHSM PIN object.
	CKH_IBM_EP11_VHSMPIN HWFeature = CKH_VENDOR_DEFINED + 0x00000002
	// CKH_IBM_EP11_FIPSPIN is the hardware feature type of the EP11 FIPS
	// session PIN object.
	CKH_IBM_EP11_FIPSPIN HWFeature = CKH_VENDOR_DEFINED + 0x00000003
)

var vendorAttributeNames = map[Attribute]string{
	CKA_IBM_OPAQUE:       "CKA_IBM_OPAQUE",
	CKA_IBM_OPAQUE_REENC: "CKA_IBM_OPAQUE_REENC",
	CKA_IBM_OPAQUE_OLD:   "CKA_IBM_OPAQUE_OLD",
	CKA_HIDDEN:           "CKA_HIDDEN",
}

var vendorHWFeatureNames = map[HWFeature]string{
	CKH_IBM_EP11_SESSION: "CKH_IBM_EP11_SESSION",
	CKH_IBM_EP11_VHSMPIN: "CKH_IBM_EP11_VHSMPIN",
	CKH_IBM_EP11_FIPSPIN: "CKH_IBM_EP11_FIPSPIN",
}

// NSS vendor-defined values (NSS's pkcs11n.h, vendor offset 0x4E534350
// "NSCP"): the trust object NSS stores next to a certificate, and the
// certificate's e-mail address attribute NSS sends with S/MIME
// certificates.
const (
	nssVendor = 0x4E534350

	// CKO_NSS_TRUST is NSS's trust object: how far a certificate
	// (named by issuer and serial number, and its hashes) is trusted for
	// each purpose.
	CKO_NSS_TRUST ObjectClass = CKO_VENDOR_DEFINED | nssVendor + 3

	// CKA_NSS_EMAIL is the e-mail address of a certificate's subject.
	CKA_NSS_EMAIL Attribute = CKA_VENDOR_DEFINED | nssVendor + 2

	// CKA_TRUST is the base of the trust attributes (CK_TRUST values, a
	// CK_ULONG each, except CKA_TRUST_STEP_UP_APPROVED, a CK_BBOOL).
	CKA_TRUST                   Attribute = CKA_VENDOR_DEFINED | nssVendor + 0x2000
	CKA_TRUST_DIGITAL_SIGNATURE Attribute = CKA_TRUST + 1
	CKA_TRUST_NON_REPUDIATION   Attribute = CKA_TRUST + 2
	CKA_TRUST_KEY_ENCIPHERMENT  Attribute = CKA_TRUST + 3
	CKA_TRUST_DATA_ENCIPHERMENT Attribute = CKA_TRUST + 4
	CKA_TRUST_KEY_AGREEMENT     Attribute = CKA_TRUST + 5
	CKA_TRUST_KEY_CERT_SIGN     Attribute = CKA_TRUST + 6
	CKA_TRUST_CRL_SIGN          Attribute = CKA_TRUST + 7
	CKA_TRUST_SERVER_AUTH       Attribute = CKA_TRUST + 8
	CKA_TRUST_CLIENT_AUTH       Attribute = CKA_TRUST + 9
	CKA_TRUST_CODE_SIGNING      Attribute = CKA_TRUST + 10
	CKA_TRUST_EMAIL_PROTECTION  Attribute = CKA_TRUST + 11
	CKA_TRUST_IPSEC_END_SYSTEM  Attribute = CKA_TRUST + 12
	CKA_TRUST_IPSEC_TUNNEL      Attribute = CKA_TRUST + 13
	CKA_TRUST_IPSEC_USER        Attribute = CKA_TRUST + 14
	CKA_TRUST_TIME_STAMPING     Attribute = CKA_TRUST + 15
	CKA_TRUST_STEP_UP_APPROVED  Attribute = CKA_TRUST + 16
	CKA_CERT_SHA1_HASH          Attribute = CKA_TRUST + 100
	CKA_CERT_MD5_HASH           Attribute = CKA_TRUST + 101

	// CK_TRUST values.
	CKT_NSS                   uint = 0x80000000 | nssVendor
	CKT_NSS_TRUSTED           uint = CKT_NSS + 1
	CKT_NSS_TRUSTED_DELEGATOR uint = CKT_NSS + 2
	CKT_NSS_MUST_VERIFY_TRUST uint = CKT_NSS + 3
	CKT_NSS_MUST_VERIFY       uint = CKT_NSS + 4 // old name, treated as unknown
	CKT_NSS_TRUST_UNKNOWN     uint = CKT_NSS + 5
	CKT_NSS_NOT_TRUSTED       uint = CKT_NSS + 10
	CKT_NSS_VALID_DELEGATOR   uint = CKT_NSS + 11
)

// NSSTrustPurposes are the CK_TRUST-valued attributes of a CKO_NSS_TRUST
// object.
var NSSTrustPurposes = []Attribute{CKA_TRUST_DIGITAL_SIGNATURE, CKA_TRUST_NON_REPUDIATION,
	CKA_TRUST_KEY_ENCIPHERMENT, CKA_TRUST_DATA_ENCIPHERMENT, CKA_TRUST_KEY_AGREEMENT,
	CKA_TRUST_KEY_CERT_SIGN, CKA_TRUST_CRL_SIGN, CKA_TRUST_SERVER_AUTH, CKA_TRUST_CLIENT_AUTH,
	CKA_TRUST_CODE_SIGNING, CKA_TRUST_EMAIL_PROTECTION, CKA_TRUST_IPSEC_END_SYSTEM,
	CKA_TRUST_IPSEC_TUNNEL, CKA_TRUST_IPSEC_USER, CKA_TRUST_TIME_STAMPING}

func init() {
	namesObjectClass[CKO_NSS_TRUST] = "CKO_NSS_TRUST"
	vendorAttributeNames[CKA_NSS_EMAIL] = "CKA_NSS_EMAIL"
	vendorAttributeNames[CKA_TRUST_STEP_UP_APPROVED] = "CKA_TRUST_STEP_UP_APPROVED"
	vendorAttributeNames[CKA_CERT_SHA1_HASH] = "CKA_CERT_SHA1_HASH"
	vendorAttributeNames[CKA_CERT_MD5_HASH] = "CKA_CERT_MD5_HASH"
	names := []string{"DIGITAL_SIGNATURE", "NON_REPUDIATION", "KEY_ENCIPHERMENT", "DATA_ENCIPHERMENT",
		"KEY_AGREEMENT", "KEY_CERT_SIGN", "CRL_SIGN", "SERVER_AUTH", "CLIENT_AUTH", "CODE_SIGNING",
		"EMAIL_PROTECTION", "IPSEC_END_SYSTEM", "IPSEC_TUNNEL", "IPSEC_USER", "TIME_STAMPING"}
	for i, a := range NSSTrustPurposes {
		vendorAttributeNames[a] = "CKA_TRUST_" + names[i]
	}
}
