package tokenlib

import (
	"crypto"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// Mechanism is a CK_MECHANISM: the type and its parameter, already decoded
// from the C structure by the caller. Param is nil, []byte (an IV for CBC
// modes), *GCMParams, *PSSParams or *OAEPParams.
type Mechanism struct {
	Type  ck.Mechanism
	Param any
}

// GCMParams is CK_GCM_PARAMS.
type GCMParams struct {
	IV      []byte
	AAD     []byte
	TagBits uint
}

// PSSParams is CK_RSA_PKCS_PSS_PARAMS.
type PSSParams struct {
	Hash    ck.Mechanism
	MGF     ck.MGF
	SaltLen uint
}

// OAEPParams is CK_RSA_PKCS_OAEP_PARAMS. Source is CKZ_DATA_SPECIFIED or 0.
type OAEPParams struct {
	Hash       ck.Mechanism
	MGF        ck.MGF
	Source     uint
	SourceData []byte
}

// MechanismInfo is CK_MECHANISM_INFO. Key sizes are in bytes for symmetric
// keys and in bits for RSA and EC keys, as PKCS#11 specifies.
type MechanismInfo struct {
	MinKeySize, MaxKeySize uint
	Flags                  ck.Flags
}

// mechSpec describes one mechanism the engine implements.
type mechSpec struct {
	info    MechanismInfo
	keyType ck.KeyType    // key type it works with (0: none, digests)
	hsmMech hsm.Mechanism // backend mechanism (0: software only)
	hash    crypto.Hash   // hash applied in software before signing
}

const (
	hw     = ck.CKF_HW
	encdec = ck.CKF_ENCRYPT | ck.CKF_DECRYPT
	sigver = ck.CKF_SIGN | ck.CKF_VERIFY
	ecf    = ck.CKF_EC_F_P | ck.CKF_EC_NAMEDCURVE | ck.CKF_EC_UNCOMPRESS
)

// mechanisms is what both token types implement. hmacMax and the flags
// differ per type, see mechanismsFor.
var mechanisms = map[ck.Mechanism]mechSpec{
	ck.CKM_AES_KEY_GEN:            {MechanismInfo{16, 32, hw | ck.CKF_GENERATE}, ck.CKK_AES, 0, 0},
	ck.CKM_AES_ECB:                {MechanismInfo{16, 32, hw | encdec}, ck.CKK_AES, hsm.MechAESECB, 0},
	ck.CKM_AES_CBC:                {MechanismInfo{16, 32, hw | encdec}, ck.CKK_AES, hsm.MechAESCBC, 0},
	ck.CKM_AES_CBC_PAD:            {MechanismInfo{16, 32, hw | encdec}, ck.CKK_AES, hsm.MechAESCBCPad, 0},
	ck.CKM_AES_GCM:                {MechanismInfo{16, 32, hw | encdec}, ck.CKK_AES, hsm.MechAESGCM, 0},
	ck.CKM_AES_KEY_WRAP:           {MechanismInfo{16, 32, hw | ck.CKF_WRAP | ck.CKF_UNWRAP}, ck.CKK_AES, hsm.MechAESKW, 0},
	ck.CKM_AES_KEY_WRAP_PAD:       {MechanismInfo{16, 32, hw | ck.CKF_WRAP | ck.CKF_UNWRAP}, ck.CKK_AES, hsm.MechAESKWP, 0},
	ck.CKM_DES3_KEY_GEN:           {MechanismInfo{24, 24, hw | ck.CKF_GENERATE}, ck.CKK_DES3, 0, 0},
	ck.CKM_DES3_CBC:               {MechanismInfo{24, 24, hw | encdec}, ck.CKK_DES3, hsm.MechDES3CBC, 0},
	ck.CKM_DES3_ECB:               {MechanismInfo{24, 24, hw | encdec}, ck.CKK_DES3, hsm.MechDES3ECB, 0},
	ck.CKM_GENERIC_SECRET_KEY_GEN: {MechanismInfo{10, 304, hw | ck.CKF_GENERATE}, ck.CKK_GENERIC_SECRET, 0, 0},
	ck.CKM_SHA256_HMAC:            {MechanismInfo{10, 304, hw | sigver}, ck.CKK_GENERIC_SECRET, hsm.MechHMACSHA256, 0},
	ck.CKM_EC_KEY_PAIR_GEN:        {MechanismInfo{256, 384, hw | ck.CKF_GENERATE_KEY_PAIR | ecf}, ck.CKK_EC, 0, 0},
	ck.CKM_ECDSA:                  {MechanismInfo{256, 384, hw | sigver | ecf}, ck.CKK_EC, hsm.MechECDSA, 0},
	ck.CKM_ECDSA_SHA256:           {MechanismInfo{256, 384, hw | sigver | ecf}, ck.CKK_EC, hsm.MechECDSA, crypto.SHA256},
	ck.CKM_ECDSA_SHA384:           {MechanismInfo{256, 384, hw | sigver | ecf}, ck.CKK_EC, hsm.MechECDSA, crypto.SHA384},
	ck.CKM_RSA_PKCS_KEY_PAIR_GEN:  {MechanismInfo{2048, 4096, hw | ck.CKF_GENERATE_KEY_PAIR}, ck.CKK_RSA, 0, 0},
	ck.CKM_RSA_PKCS:               {MechanismInfo{2048, 4096, hw | sigver}, ck.CKK_RSA, hsm.MechRSAPKCS, 0},
	ck.CKM_SHA256_RSA_PKCS:        {MechanismInfo{2048, 4096, hw | sigver}, ck.CKK_RSA, hsm.MechRSAPKCS, crypto.SHA256},
	ck.CKM_RSA_PKCS_PSS:           {MechanismInfo{2048, 4096, hw | sigver}, ck.CKK_RSA, hsm.MechRSAPSS, 0},
	ck.CKM_SHA256_RSA_PKCS_PSS:    {MechanismInfo{2048, 4096, hw | sigver}, ck.CKK_RSA, hsm.MechRSAPSS, crypto.SHA256},
	ck.CKM_RSA_PKCS_OAEP:          {MechanismInfo{2048, 4096, hw | encdec}, ck.CKK_RSA, hsm.MechRSAOAEP, 0},
	ck.CKM_SHA_1:                  {MechanismInfo{0, 0, ck.CKF_DIGEST}, 0, 0, crypto.SHA1},
	ck.CKM_SHA256:                 {MechanismInfo{0, 0, ck.CKF_DIGEST}, 0, 0, crypto.SHA256},
	ck.CKM_SHA384:                 {MechanismInfo{0, 0, ck.CKF_DIGEST}, 0, 0, crypto.SHA384},
	ck.CKM_SHA512:                 {MechanismInfo{0, 0, ck.CKF_DIGEST}, 0, 0, crypto.SHA512},
}

// mechanismsFor returns the mechanism table of a token type. CCA HMAC keys
// are limited to 2048 bits (256 bytes) by the CCA HMAC key token; EP11
// takes the full PKCS#11 range.
func mechanismsFor(tt TokenType) map[ck.Mechanism]mechSpec {
	out := make(map[ck.Mechanism]mechSpec, len(mechanisms))
	for m, s := range mechanisms {
		if tt == TokenCCA && s.keyType == ck.CKK_GENERIC_SECRET {
			s.info.MaxKeySize = 256
		}
		out[m] = s
	}
	return out
}

func sortedMechs(m map[ck.Mechanism]mechSpec) []ck.Mechanism {
	out := make([]ck.Mechanism, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hashMechs maps PKCS#11 hash mechanisms (in PSS/OAEP parameters) to Go.
var hashMechs = map[ck.Mechanism]crypto.Hash{
	ck.CKM_SHA_1: crypto.SHA1, ck.CKM_SHA256: crypto.SHA256,
	ck.CKM_SHA384: crypto.SHA384, ck.CKM_SHA512: crypto.SHA512,
}

var mgfHash = map[ck.MGF]crypto.Hash{
	ck.CKG_MGF1_SHA1: crypto.SHA1, ck.CKG_MGF1_SHA256: crypto.SHA256,
	ck.CKG_MGF1_SHA384: crypto.SHA384, ck.CKG_MGF1_SHA512: crypto.SHA512,
}

func paramErr(m ck.Mechanism, format string, args ...any) error {
	return newErrh(ck.CKR_MECHANISM_PARAM_INVALID, errclass.InvalidArgument,
		"check the mechanism parameter against PKCS#11 for "+m.String(), format, args...)
}

// hsmParams converts the PKCS#11 parameter of m into backend parameters.
func hsmParams(m Mechanism, spec mechSpec) (hsm.Params, error) {
	var p hsm.Params
	switch m.Type {
	case ck.CKM_AES_ECB, ck.CKM_DES3_ECB, ck.CKM_AES_KEY_WRAP, ck.CKM_AES_KEY_WRAP_PAD, ck.CKM_SHA256_HMAC,
		ck.CKM_ECDSA, ck.CKM_ECDSA_SHA256, ck.CKM_ECDSA_SHA384:
		// No parameter, or an optional IV for key wrap that must be the default.
		if b, ok := m.Param.([]byte); ok && len(b) > 0 {
			return p, paramErr(m.Type, "%v takes no parameter", m.Type)
		} else if m.Param != nil && !ok {
			return p, paramErr(m.Type, "%v takes no parameter", m.Type)
		}
	case ck.CKM_AES_CBC, ck.CKM_AES_CBC_PAD, ck.CKM_DES3_CBC:
		iv, ok := m.Param.([]byte)
		want := 16
		if m.Type == ck.CKM_DES3_CBC {
			want = 8
		}
		if !ok || len(iv) != want {
			return p, paramErr(m.Type, "%v needs a %d-byte IV as parameter", m.Type, want)
		}
		p.IV = iv
	case ck.CKM_AES_GCM:
		g, ok := m.Param.(*GCMParams)
		if !ok || g == nil {
			return p, paramErr(m.Type, "CKM_AES_GCM needs CK_GCM_PARAMS")
		}
		if len(g.IV) == 0 || len(g.IV) > 256 {
			return p, paramErr(m.Type, "GCM IV length %d is invalid", len(g.IV))
		}
		if g.TagBits != 0 && (g.TagBits < 96 || g.TagBits > 128 || g.TagBits%8 != 0) {
			return p, paramErr(m.Type, "GCM tag length of %d bits is not supported (96..128, multiple of 8)", g.TagBits)
		}
		p.IV, p.AAD, p.TagBits = g.IV, g.AAD, int(g.TagBits)
		if p.TagBits == 0 {
			p.TagBits = 128
		}
	case ck.CKM_RSA_PKCS, ck.CKM_SHA256_RSA_PKCS:
		if m.Param != nil {
			if b, ok := m.Param.([]byte); !ok || len(b) > 0 {
				return p, paramErr(m.Type, "%v takes no parameter", m.Type)
			}
		}
		p.Hash = spec.hash
	case ck.CKM_RSA_PKCS_PSS, ck.CKM_SHA256_RSA_PKCS_PSS:
		s, ok := m.Param.(*PSSParams)
		if !ok || s == nil {
			return p, paramErr(m.Type, "%v needs CK_RSA_PKCS_PSS_PARAMS", m.Type)
		}
		h, ok := hashMechs[s.Hash]
		if !ok || mgfHash[s.MGF] != h {
			return p, paramErr(m.Type, "PSS hash %v with MGF %v is not supported (MGF1 of the same hash)", s.Hash, s.MGF)
		}
		if spec.hash != 0 && h != spec.hash {
			return p, paramErr(m.Type, "%v requires hashAlg %v", m.Type, ck.CKM_SHA256)
		}
		if s.SaltLen > 512 {
			return p, paramErr(m.Type, "PSS salt length %d is too long", s.SaltLen)
		}
		p.Hash, p.SaltLen = h, int(s.SaltLen)
	case ck.CKM_RSA_PKCS_OAEP:
		o, ok := m.Param.(*OAEPParams)
		if !ok || o == nil {
			return p, paramErr(m.Type, "CKM_RSA_PKCS_OAEP needs CK_RSA_PKCS_OAEP_PARAMS")
		}
		h, ok := hashMechs[o.Hash]
		if !ok || mgfHash[o.MGF] != h {
			return p, paramErr(m.Type, "OAEP hash %v with MGF %v is not supported (MGF1 of the same hash)", o.Hash, o.MGF)
		}
		if o.Source != 0 && o.Source != ck.CKZ_DATA_SPECIFIED {
			return p, paramErr(m.Type, "OAEP source %d is not CKZ_DATA_SPECIFIED", o.Source)
		}
		p.Hash, p.Label = h, o.SourceData
	}
	return p, nil
}
