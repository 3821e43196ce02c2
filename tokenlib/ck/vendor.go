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
