package cli

import (
	"encoding/hex"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func newKeysCommand(g *globalOptions) *cobra.Command {
	c := &cobra.Command{Use: "keys", Short: "Key commands", Args: cobra.NoArgs}
	c.AddCommand(newKeysListCommand(g), newKeysGenerateCommand(g), newKeysRestoreOldCommand(g), newKeysDeleteCommand(g))
	return c
}

// userSession opens a R/W session on slot and logs the USER in with a PIN
// read from the prompter.
// openUser opens the token library and a USER session on slot (asking for
// the PIN). The caller closes the library.
func (g *globalOptions) openUser(cmd *cobra.Command, slot uint) (*tokenlib.Library, tokenlib.SessionHandle, error) {
	lib, err := g.open(cmd)
	if err != nil {
		return nil, 0, err
	}
	h, err := g.userSession(cmd, lib, slot)
	if err != nil {
		lib.Close()
		return nil, 0, err
	}
	return lib, h, nil
}

func (g *globalOptions) userSession(cmd *cobra.Command, lib *tokenlib.Library, slot uint) (tokenlib.SessionHandle, error) {
	h, err := lib.OpenSession(tokenlib.SlotID(slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return 0, fmt.Errorf("slot %d: %w", slot, err)
	}
	pin, err := g.prompter(cmd).PIN("Enter the USER PIN: ")
	if err != nil {
		return 0, err
	}
	defer clear(pin)
	if err := lib.Login(h, ck.CKU_USER, pin); err != nil {
		return 0, fmt.Errorf("slot %d: USER login: %w", slot, err)
	}
	return h, nil
}

// keyRecord is what `keys list` shows about one key.
type keyRecord struct {
	Handle      uint   `json:"handle"`
	Class       string `json:"class"`
	KeyType     string `json:"key_type"`
	Bits        int    `json:"bits,omitempty"`
	Label       string `json:"label"`
	ID          string `json:"id,omitempty"`
	CheckValue  string `json:"check_value,omitempty"`
	Sensitive   bool   `json:"sensitive"`
	Extractable bool   `json:"extractable"`
	Local       bool   `json:"local"`
	HasReenc    bool   `json:"has_reenc_blob"`
	HasOld      bool   `json:"has_old_blob"`
	// Filled with --hsm-mkvp, for keys with a secure key.
	MKType string `json:"mk_type,omitempty"`
	MKVP   string `json:"mkvp,omitempty"`
	Match  string `json:"mkvp_match,omitempty"`
	// What each blob attribute's header says (keys_list.go).
	Blobs *keyBlobs `json:"blobs,omitempty"`
}

var keyClasses = []ck.ObjectClass{ck.CKO_SECRET_KEY, ck.CKO_PRIVATE_KEY, ck.CKO_PUBLIC_KEY}

// findKeys returns every key object visible in the session, in handle order.
func findKeys(lib *tokenlib.Library, h tokenlib.SessionHandle, extra ...tokenlib.Attribute) ([]tokenlib.ObjectHandle, error) {
	var all []tokenlib.ObjectHandle
	for _, c := range keyClasses {
		tmpl := append([]tokenlib.Attribute{tokenlib.Ulong(ck.CKA_CLASS, uint(c))}, extra...)
		if err := lib.FindObjectsInit(h, tmpl); err != nil {
			return nil, err
		}
		for {
			hs, err := lib.FindObjects(h, 256)
			if err != nil {
				return nil, err
			}
			if len(hs) == 0 {
				break
			}
			all = append(all, hs...)
		}
		if err := lib.FindObjectsFinal(h); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// attr reads one attribute; absent attributes read as nil.
func attr(lib *tokenlib.Library, h tokenlib.SessionHandle, o tokenlib.ObjectHandle, a ck.Attribute) []byte {
	v, err := lib.GetAttributes(h, o, a)
	if err != nil {
		return nil
	}
	return v[0]
}

func attrBool(lib *tokenlib.Library, h tokenlib.SessionHandle, o tokenlib.ObjectHandle, a ck.Attribute) bool {
	b, _ := tokenlib.DecodeBool(attr(lib, h, o, a))
	return b
}

// describeKey makes the record of key o from its attributes av
// (readKeyAttrs).
func describeKey(lib *tokenlib.Library, h tokenlib.SessionHandle, o tokenlib.ObjectHandle, av keyAttrs) keyRecord {
	// attr and attrBool read av here, not the library: one
	// C_GetAttributeValue per key instead of one per attribute.
	attr := func(_ *tokenlib.Library, _ tokenlib.SessionHandle, _ tokenlib.ObjectHandle, a ck.Attribute) []byte {
		return av[a]
	}
	attrBool := func(lib *tokenlib.Library, h tokenlib.SessionHandle, o tokenlib.ObjectHandle, a ck.Attribute) bool {
		b, _ := tokenlib.DecodeBool(attr(lib, h, o, a))
		return b
	}
	cls, _ := tokenlib.DecodeUlong(attr(lib, h, o, ck.CKA_CLASS))
	kt, _ := tokenlib.DecodeUlong(attr(lib, h, o, ck.CKA_KEY_TYPE))
	r := keyRecord{
		Handle:      uint(o),
		Class:       shortName(ck.ObjectClass(cls).String(), "CKO_"),
		KeyType:     shortName(ck.KeyType(kt).String(), "CKK_"),
		Label:       string(attr(lib, h, o, ck.CKA_LABEL)),
		ID:          hex.EncodeToString(attr(lib, h, o, ck.CKA_ID)),
		CheckValue:  hex.EncodeToString(attr(lib, h, o, ck.CKA_CHECK_VALUE)),
		Sensitive:   attrBool(lib, h, o, ck.CKA_SENSITIVE),
		Extractable: attrBool(lib, h, o, ck.CKA_EXTRACTABLE),
		Local:       attrBool(lib, h, o, ck.CKA_LOCAL),
		HasReenc:    len(attr(lib, h, o, ck.CKA_IBM_OPAQUE_REENC)) > 0,
		HasOld:      len(attr(lib, h, o, ck.CKA_IBM_OPAQUE_OLD)) > 0,
	}
	if n, ok := tokenlib.DecodeUlong(attr(lib, h, o, ck.CKA_VALUE_LEN)); ok {
		r.Bits = int(n) * 8
	} else if n, ok := tokenlib.DecodeUlong(attr(lib, h, o, ck.CKA_MODULUS_BITS)); ok {
		r.Bits = int(n)
	} else if m := attr(lib, h, o, ck.CKA_MODULUS); len(m) > 0 {
		r.Bits = len(m) * 8
	} else if bits, ok := tokenlib.ECCurveBits(attr(lib, h, o, ck.CKA_EC_PARAMS)); ok {
		r.Bits = bits
	}
	return r
}

func shortName(s, prefix string) string {
	if len(s) > len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}
