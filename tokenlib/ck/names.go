package ck

import "fmt"

// unknownName formats a value the tables do not know, e.g. "CKR_0x80000123".
func unknownName(prefix string, v uint) string { return fmt.Sprintf("%s0x%08X", prefix, v) }

// RVName returns the name of rv, e.g. "CKR_PIN_INCORRECT".
func RVName(rv RV) string {
	if n, ok := namesRV[rv]; ok {
		return n
	}
	return unknownName("CKR_", uint(rv))
}

// AttributeName returns the name of a, e.g. "CKA_LABEL" or "CKA_IBM_OPAQUE".
func AttributeName(a Attribute) string {
	if n, ok := namesAttribute[a]; ok {
		return n
	}
	if n, ok := vendorAttributeNames[a]; ok {
		return n
	}
	return unknownName("CKA_", uint(a))
}

// ObjectClassName returns the name of c, e.g. "CKO_SECRET_KEY".
func ObjectClassName(c ObjectClass) string {
	if n, ok := namesObjectClass[c]; ok {
		return n
	}
	return unknownName("CKO_", uint(c))
}

// KeyTypeName returns the name of k, e.g. "CKK_AES".
func KeyTypeName(k KeyType) string {
	if n, ok := namesKeyType[k]; ok {
		return n
	}
	return unknownName("CKK_", uint(k))
}

// MechanismName returns the name of m, e.g. "CKM_AES_CBC_PAD".
func MechanismName(m Mechanism) string {
	if n, ok := namesMechanism[m]; ok {
		return n
	}
	return unknownName("CKM_", uint(m))
}

// UserTypeName returns the name of u, e.g. "CKU_USER".
func UserTypeName(u UserType) string {
	if n, ok := namesUserType[u]; ok {
		return n
	}
	return unknownName("CKU_", uint(u))
}

// StateName returns the name of a session state, e.g. "CKS_RW_USER_FUNCTIONS".
func StateName(s State) string {
	if n, ok := namesState[s]; ok {
		return n
	}
	return unknownName("CKS_", uint(s))
}

// CertificateTypeName returns the name of c, e.g. "CKC_X_509".
func CertificateTypeName(c CertificateType) string {
	if n, ok := namesCertificateType[c]; ok {
		return n
	}
	return unknownName("CKC_", uint(c))
}

// MGFName returns the name of g, e.g. "CKG_MGF1_SHA256".
func MGFName(g MGF) string {
	if n, ok := namesMGF[g]; ok {
		return n
	}
	return unknownName("CKG_", uint(g))
}

// HWFeatureName returns the name of h, e.g. "CKH_CLOCK" or
// "CKH_IBM_EP11_SESSION".
func HWFeatureName(h HWFeature) string {
	if n, ok := namesHWFeature[h]; ok {
		return n
	}
	if n, ok := vendorHWFeatureNames[h]; ok {
		return n
	}
	return unknownName("CKH_", uint(h))
}

// KDFName returns the name of d, e.g. "CKD_SHA256_KDF".
func KDFName(d KDF) string {
	if n, ok := namesKDF[d]; ok {
		return n
	}
	return unknownName("CKD_", uint(d))
}

// String returns the constant's name, see [RVName].
func (rv RV) String() string { return RVName(rv) }

// String returns the constant's name, see [AttributeName].
func (a Attribute) String() string { return AttributeName(a) }

// String returns the constant's name, see [ObjectClassName].
func (c ObjectClass) String() string { return ObjectClassName(c) }

// String returns the constant's name, see [KeyTypeName].
func (k KeyType) String() string { return KeyTypeName(k) }

// String returns the constant's name, see [MechanismName].
func (m Mechanism) String() string { return MechanismName(m) }

// String returns the constant's name, see [UserTypeName].
func (u UserType) String() string { return UserTypeName(u) }

// String returns the constant's name, see [StateName].
func (s State) String() string { return StateName(s) }

// String returns the constant's name, see [CertificateTypeName].
func (c CertificateType) String() string { return CertificateTypeName(c) }

// String returns the constant's name, see [MGFName].
func (g MGF) String() string { return MGFName(g) }

// String returns the constant's name, see [HWFeatureName].
func (h HWFeature) String() string { return HWFeatureName(h) }

// String returns the constant's name, see [KDFName].
func (d KDF) String() string { return KDFName(d) }

// RVByName looks up a CK_RV by its name, e.g. "CKR_PIN_INCORRECT".
func RVByName(name string) (RV, bool) { v, ok := valuesRV[name]; return v, ok }

// AttributeByName looks up an attribute type by name, including the IBM
// vendor attributes and deprecated aliases ("CKA_ECDSA_PARAMS").
func AttributeByName(name string) (Attribute, bool) {
	if v, ok := valuesAttribute[name]; ok {
		return v, true
	}
	for v, n := range vendorAttributeNames {
		if n == name {
			return v, true
		}
	}
	return 0, false
}

// ObjectClassByName looks up an object class by name, e.g. "CKO_PRIVATE_KEY".
func ObjectClassByName(name string) (ObjectClass, bool) {
	v, ok := valuesObjectClass[name]
	return v, ok
}

// KeyTypeByName looks up a key type by name, e.g. "CKK_AES".
func KeyTypeByName(name string) (KeyType, bool) { v, ok := valuesKeyType[name]; return v, ok }

// MechanismByName looks up a mechanism by name, e.g. "CKM_SHA256_RSA_PKCS".
func MechanismByName(name string) (Mechanism, bool) {
	v, ok := valuesMechanism[name]
	return v, ok
}
