package cca

import (
	"fmt"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Return and reason codes the project can meet, with the meaning
// openCryptoki's CCA token gives them (host-libraries.md §1.15, from
// cca_specific.c and cca_mkchange.c, and IBM's "Reason codes that
// accompany return code 4/8"). Return code 4 is a warning or a failed
// verification, 8 an error, 12 and 16 environment errors.

// reasonOldMK (return code 0) says a key under the OLD master key was
// used: success (IBM, cited in opencryptoki-mkchange.md §4.6).
const reasonOldMK = 10001

type codeClass struct {
	sentinel error          // matched with errors.Is, or nil
	class    errclass.Class // used when sentinel is nil
	meaning  string
	hint     string
}

var (
	sigInvalid = codeClass{sentinel: hsm.ErrSignature, meaning: "the signature or MAC does not verify"}
	keySize    = codeClass{class: errclass.InvalidArgument, meaning: "the key size is not supported by the adapter",
		hint: "use a key size the adapter supports (AES 128/192/256, RSA 2048-4096, EC P-256/P-384)"}
	curve = codeClass{class: errclass.InvalidArgument, meaning: "the adapter does not support this elliptic curve",
		hint: "use P-256 or P-384, or update the CCA firmware"}
)

// verbCodes are meanings that depend on the verb.
var verbCodes = map[string]map[Codes]codeClass{
	"CSNDDSV": {{4, 429}: sigInvalid, {8, 72}: sigInvalid, {12, 769}: sigInvalid},
	"CSNBHMV": {{4, 429}: sigInvalid, {4, 1}: sigInvalid},
	"CSNBSAD": {{8, 2947}: {sentinel: hsm.ErrBadData, meaning: "the GCM authentication tag does not match"}},
	"CSNDPKD": {
		{8, 2053}: {sentinel: hsm.ErrBadData, meaning: "the OAEP encoding of the ciphertext is invalid"},
		{8, 2054}: {sentinel: hsm.ErrBadData, meaning: "the OAEP encoding of the ciphertext is invalid"},
	},
	"CSNDPKB": {{8, 760}: keySize},
	"CSNDPKG": {{8, 121}: keySize},
}

// anyVerbCodes apply to every verb.
var anyVerbCodes = map[Codes]codeClass{
	{8, 48}: {sentinel: hsm.ErrWrongMK, meaning: "the key's master key verification pattern matches neither the CURRENT nor the OLD master key of the APQN",
		hint: "re-encipher the key with pkcshsm_mk_change, or use an APQN whose CURRENT master key enciphers it"},
	{8, 24}: {sentinel: hsm.ErrWrongMK, meaning: "the master key verification pattern of the key is not valid on the APQN",
		hint: "re-encipher the key with pkcshsm_mk_change, or use an APQN whose CURRENT master key enciphers it"},
	{8, 12}: {sentinel: hsm.ErrBadBlob, meaning: "the token-validation value of an external key token is not valid"},
	{8, 29}: {sentinel: hsm.ErrBadBlob, meaning: "the token-validation value of an internal key token is not valid"},
	{8, 25}: {sentinel: hsm.ErrBadData, meaning: "the text length is not valid"},
	{8, 34}: {class: errclass.Internal, meaning: "the library refused a rule-array keyword combination",
		hint: "pkcshsm and the CCA host library disagree about the verb; report it with the library version"},
	{8, 770}:  keySize,
	{8, 874}:  curve,
	{8, 2158}: curve,
	{8, 6015}: curve,
	{8, 6017}: curve,
	{8, 90}: {class: errclass.PermissionDenied, meaning: "an access control point of the adapter's role forbids this verb",
		hint: "enable the access control point in the domain's default role with the TKE"},
	{8, 33}: {class: errclass.Internal, meaning: "the library refused a rule-array keyword",
		hint: "pkcshsm and the CCA host library disagree about the verb; report it with the library version"},
	{8, 35}: {class: errclass.Internal, meaning: "the library refused the rule-array count",
		hint: "pkcshsm and the CCA host library disagree about the verb; report it with the library version"},
	{8, 72}: {class: errclass.Internal, meaning: "a length or buffer was refused",
		hint: "pkcshsm and the CCA host library disagree about a buffer size; report it with the library version"},
	{16, 336}: {sentinel: hsm.ErrOffline, meaning: "the adapter lock could not be taken"},
}

// codeError turns a failed verb call into an error naming the verb, what
// it worked on (the APQN) and the codes, with the class of the situation
// and a hint.
func codeError(verb, where string, c Codes) error {
	cc, ok := verbCodes[verb][c]
	if !ok {
		cc, ok = anyVerbCodes[c]
	}
	if !ok {
		switch {
		case c.Return >= 12:
			cc = codeClass{sentinel: hsm.ErrOffline, meaning: "the adapter or the host library is not available",
				hint: "check the adapter with lszcrypt, that the zcrypt driver is loaded (modprobe z90crypt) and that this user may open /dev/z90crypt"}
		default:
			cc = codeClass{class: errclass.Internal, meaning: "unexpected codes",
				hint: "look the codes up in IBM's CCA Basic Services Reference, \"Return codes and reason codes\""}
		}
	}
	msg := fmt.Sprintf("%s on %s: return code %d, reason code %d: %s", verb, where, c.Return, c.Reason, cc.meaning)
	var err error
	if cc.sentinel != nil {
		err = errclass.New(errclass.Of(cc.sentinel), "%s: %w", msg, cc.sentinel)
	} else {
		err = errclass.New(cc.class, "%s", msg)
	}
	if cc.hint != "" {
		err = errclass.WithHint(err, cc.hint)
	}
	return err
}
