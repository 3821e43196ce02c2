package cli

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

type keysGenerateOptions struct {
	*globalOptions
	slot        uint
	keyType     string
	bits        int
	curve       string
	label       string
	id          string
	sensitive   bool
	extractable bool
}

func newKeysGenerateCommand(g *globalOptions) *cobra.Command {
	o := &keysGenerateOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "generate --slot N --type aes|des3|hmac|ec|rsa --label LABEL",
		Short: "Generate a secure key as a token object (asks for the USER PIN)",
		Long: `Generate a key in the HSM and store it as a private token object. Sizes:
aes --bits 128|192|256 (default 256), des3 (192), hmac --bits 80..2432 in
multiples of 8 (default 256), ec --curve P-256|P-384 (default P-256),
rsa --bits 2048|3072|4096 (default 2048). EC and RSA make a key pair.`,
		Args: cobra.NoArgs,
		RunE: o.run,
	}
	c.Flags().UintVar(&o.slot, "slot", 0, "slot number")
	c.Flags().StringVar(&o.keyType, "type", "", "key type: aes, des3, hmac, ec or rsa")
	c.Flags().IntVar(&o.bits, "bits", 0, "key size in bits (aes, hmac, rsa)")
	c.Flags().StringVar(&o.curve, "curve", "", "EC curve: P-256 or P-384")
	c.Flags().StringVar(&o.label, "label", "", "CKA_LABEL of the new key")
	c.Flags().StringVar(&o.id, "id", "", "CKA_ID of the new key, in hex")
	c.Flags().BoolVar(&o.sensitive, "sensitive", true, "CKA_SENSITIVE")
	c.Flags().BoolVar(&o.extractable, "extractable", false, "CKA_EXTRACTABLE (allows wrapping the key)")
	c.MarkFlagRequired("slot")
	c.MarkFlagRequired("type")
	c.MarkFlagRequired("label")
	return c
}

func badSize(format string, args ...any) error {
	return errclass.Newh(errclass.InvalidArgument, "see 'pkcshsm keys generate --help' for the sizes", format, args...)
}

func (o *keysGenerateOptions) run(cmd *cobra.Command, _ []string) error {
	id, err := hex.DecodeString(o.id)
	if err != nil {
		return errclass.Newh(errclass.InvalidArgument, "give the id as hex digits, e.g. --id 0a1b", "invalid --id %q", o.id)
	}
	if o.curve != "" && o.keyType != "ec" {
		return badSize("--curve is only for --type ec")
	}
	common := []tokenlib.Attribute{
		tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.Bool(ck.CKA_PRIVATE, true),
		tokenlib.String(ck.CKA_LABEL, o.label), tokenlib.Bytes(ck.CKA_ID, id),
	}
	secret := append(common[:len(common):len(common)], tokenlib.Bool(ck.CKA_SENSITIVE, o.sensitive), tokenlib.Bool(ck.CKA_EXTRACTABLE, o.extractable))
	var gen func(lib *tokenlib.Library, h tokenlib.SessionHandle) (string, error)
	secretGen := func(m ck.Mechanism, n int) func(*tokenlib.Library, tokenlib.SessionHandle) (string, error) {
		return func(lib *tokenlib.Library, h tokenlib.SessionHandle) (string, error) {
			o, err := lib.GenerateKey(h, tokenlib.Mechanism{Type: m}, append(secret, tokenlib.Ulong(ck.CKA_VALUE_LEN, uint(n))))
			return fmt.Sprintf("handle %d", o), err
		}
	}
	pairGen := func(m ck.Mechanism, pub []tokenlib.Attribute) func(*tokenlib.Library, tokenlib.SessionHandle) (string, error) {
		return func(lib *tokenlib.Library, h tokenlib.SessionHandle) (string, error) {
			pubT := append(append([]tokenlib.Attribute{}, common...), pub...)
			pubT[1] = tokenlib.Bool(ck.CKA_PRIVATE, false)
			pb, pv, err := lib.GenerateKeyPair(h, tokenlib.Mechanism{Type: m}, pubT, secret)
			return fmt.Sprintf("public key handle %d, private key handle %d", pb, pv), err
		}
	}
	switch o.keyType {
	case "aes":
		if o.bits == 0 {
			o.bits = 256
		}
		if o.bits != 128 && o.bits != 192 && o.bits != 256 {
			return badSize("AES keys have 128, 192 or 256 bits, not %d", o.bits)
		}
		gen = secretGen(ck.CKM_AES_KEY_GEN, o.bits/8)
	case "des3":
		if o.bits != 0 && o.bits != 192 {
			return badSize("DES3 keys have 192 bits, not %d", o.bits)
		}
		gen = secretGen(ck.CKM_DES3_KEY_GEN, 24)
	case "hmac":
		if o.bits == 0 {
			o.bits = 256
		}
		if o.bits < 80 || o.bits > 2432 || o.bits%8 != 0 {
			return badSize("HMAC keys have 80..2432 bits in multiples of 8, not %d", o.bits)
		}
		gen = secretGen(ck.CKM_GENERIC_SECRET_KEY_GEN, o.bits/8)
	case "ec":
		if o.bits != 0 {
			return badSize("EC keys take --curve, not --bits")
		}
		if o.curve == "" {
			o.curve = "P-256"
		}
		params, ok := tokenlib.ECParams(o.curve)
		if !ok {
			return badSize("curve %q is not supported; use P-256 or P-384", o.curve)
		}
		gen = pairGen(ck.CKM_EC_KEY_PAIR_GEN, []tokenlib.Attribute{tokenlib.Bytes(ck.CKA_EC_PARAMS, params)})
	case "rsa":
		if o.bits == 0 {
			o.bits = 2048
		}
		if o.bits != 2048 && o.bits != 3072 && o.bits != 4096 {
			return badSize("RSA keys have 2048, 3072 or 4096 bits, not %d", o.bits)
		}
		gen = pairGen(ck.CKM_RSA_PKCS_KEY_PAIR_GEN, []tokenlib.Attribute{tokenlib.Ulong(ck.CKA_MODULUS_BITS, uint(o.bits))})
	default:
		return errclass.Newh(errclass.InvalidArgument, "use --type aes, des3, hmac, ec or rsa", "unknown key type %q", o.keyType)
	}
	lib, h, err := o.openUser(cmd, o.slot)
	if err != nil {
		return err
	}
	defer lib.Close()
	what, err := gen(lib, h)
	if err != nil {
		return fmt.Errorf("slot %d: generate %s key: %w", o.slot, o.keyType, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Generated %s key %q in slot %d: %s.\n", o.keyType, o.label, o.slot, what)
	return nil
}
