package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Values of AES_KEY_MODE.
const (
	AESKeyModeData   = "DATA"   // CCA AES DATA key tokens (64 bytes, fixed)
	AESKeyModeCipher = "CIPHER" // CCA AES CIPHER key tokens (variable length)
)

// CCA is the parsed token configuration of a CCA slot (ccatok.conf).
type CCA struct {
	// File is the name the configuration was read from ("" for the
	// defaults of a slot without confname).
	File        string
	FileVersion string
	// APQNs is the allowlist; empty when APQNAny.
	APQNs apqn.List
	// APQNAny selects every online CCA APQN (the default).
	APQNAny bool
	// ExpectedMKVPs holds the expected current master key verification
	// patterns by type (mkvp.CCASYM, CCAAES, CCAAPKA); never nil. A type
	// that is absent is learned from the adapters when the token starts.
	ExpectedMKVPs map[mkvp.Type]mkvp.Pattern
	// ForceSensitive makes CKA_SENSITIVE default to TRUE for new secret keys.
	ForceSensitive bool
	// AESKeyMode is AESKeyModeData (default) or AESKeyModeCipher.
	AESKeyMode string
	// PKeyMode (DISABLED, DEFAULT, ENABLED) and MLDSAKeyMode (PURE,
	// PREHASH) are accepted for compatibility and have no effect: there is
	// no CPACF protected-key support and no ML-DSA here. "" if not given.
	PKeyMode     string
	MLDSAKeyMode string
}

// DefaultCCA returns the configuration of a CCA slot without confname:
// any APQN, AES DATA keys, no expected patterns.
func DefaultCCA() *CCA {
	return &CCA{APQNAny: true, AESKeyMode: AESKeyModeData, ExpectedMKVPs: map[mkvp.Type]mkvp.Pattern{}}
}

// LoadCCA reads and parses a CCA token configuration file.
func LoadCCA(path string) (*CCA, error) {
	data, err := readFile(path, "CCA token configuration file")
	if err != nil {
		return nil, err
	}
	return ParseCCA(path, data)
}

// ccaMKVPKeys are the EXPECTED_MKVPS keys, in Format order.
var ccaMKVPKeys = []struct {
	key string
	typ mkvp.Type
}{{"SYM", mkvp.CCASYM}, {"AES", mkvp.CCAAES}, {"APKA", mkvp.CCAAPKA}}

var ccaKeywords = []string{"APQN_ALLOWLIST", "APQN_ANY", "EXPECTED_MKVPS", "FORCE_SENSITIVE",
	"AES_KEY_MODE", "PKEY_MODE", "ML_DSA_KEY_MODE"}

// ParseCCA parses a CCA token configuration. Keywords are matched
// case-insensitively, enumerated values case-sensitively (as upstream).
func ParseCCA(name string, data []byte) (*CCA, error) {
	nodes, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	c := DefaultCCA()
	c.File = name
	c.APQNAny = false
	once := seen{}
	var anyLine, listLine int
	for _, n := range nodes {
		if n.kind == kFileVersion {
			c.FileVersion = n.str
			continue
		}
		kw := strings.ToUpper(n.key)
		if kw == "APQN_WHITELIST" {
			kw = "APQN_ALLOWLIST"
		}
		if n.kind == kStringConst || !slices.Contains(ccaKeywords, kw) {
			return nil, unknownKeyword(name, n, ccaKeywords)
		}
		if err := once.once(name, n, kw); err != nil {
			return nil, err
		}
		switch kw {
		case "APQN_ALLOWLIST":
			if n.kind != kPairList {
				return nil, errAt(name, n.line, "write "+n.key+" on its own line, then one \"adapter domain\" pair per line, then END",
					"%s needs a list of adapter domain pairs", n.key)
			}
			if !strings.EqualFold(n.end, "END") {
				return nil, errAt(name, n.line, "end the list with a line END", "%s: list ends with %q instead of END", n.key, n.end)
			}
			if c.APQNs, err = apqnList(name, n); err != nil {
				return nil, err
			}
			listLine = n.line
		case "APQN_ANY":
			if n.kind != kBareConst {
				return nil, errAt(name, n.line, "write APQN_ANY alone on a line", "APQN_ANY takes no value")
			}
			c.APQNAny = true
			anyLine = n.line
		case "FORCE_SENSITIVE":
			if n.kind != kBareConst {
				return nil, errAt(name, n.line, "write FORCE_SENSITIVE alone on a line", "FORCE_SENSITIVE takes no value")
			}
			c.ForceSensitive = true
		case "EXPECTED_MKVPS":
			if err := c.parseMKVPs(name, n); err != nil {
				return nil, err
			}
		case "AES_KEY_MODE":
			if c.AESKeyMode, err = ccaEnum(name, n, kw, AESKeyModeData, AESKeyModeCipher); err != nil {
				return nil, err
			}
		case "PKEY_MODE":
			if c.PKeyMode, err = ccaEnum(name, n, kw, "DISABLED", "DEFAULT", "ENABLED"); err != nil {
				return nil, err
			}
		case "ML_DSA_KEY_MODE":
			if c.MLDSAKeyMode, err = ccaEnum(name, n, kw, "PURE", "PREHASH"); err != nil {
				return nil, err
			}
		}
	}
	switch {
	case anyLine != 0 && listLine != 0:
		return nil, errAt(name, max(anyLine, listLine), "keep either APQN_ANY or APQN_ALLOWLIST",
			"only one APQN mode may be given: APQN_ANY (line %d) and APQN_ALLOWLIST (line %d)", anyLine, listLine)
	case listLine == 0:
		// Our addition: with no adapter selection in the file, use any
		// online CCA APQN, as the CCA library's DEV-ANY/DOM-ANY would.
		c.APQNAny = true
	}
	return c, nil
}

// ccaEnum reads KEY = VALUE (the only form upstream accepts for CCA).
func ccaEnum(file string, n *node, kw string, allowed ...string) (string, error) {
	if n.kind != kBare && n.kind != kString {
		return "", errAt(file, n.line, fmt.Sprintf("write %s = %s", kw, allowed[0]), "%s needs a value", n.key)
	}
	return n.str, oneOf(file, n, n.key, n.str, allowed...)
}

func (c *CCA) parseMKVPs(file string, n *node) error {
	hint := `write EXPECTED_MKVPS { SYM = "<16 hex digits>" AES = "..." APKA = "..." }`
	if n.kind != kStruct {
		return errAt(file, n.line, hint, "%s needs a { ... } block", n.key)
	}
	once := seen{}
	for _, e := range n.body {
		key := strings.ToUpper(e.key)
		i := slices.IndexFunc(ccaMKVPKeys, func(k struct {
			key string
			typ mkvp.Type
		}) bool {
			return k.key == key
		})
		if e.kind == kStringConst || i < 0 {
			what := e.key
			if e.kind == kStringConst {
				what = quote(e.str)
			}
			h := "the keys are SYM, AES and APKA"
			if key == "ASYM" {
				h = "remove it: the CCA token does not use the ASYM master key"
			}
			return errAt(file, e.line, h, "%s: unknown key %s", n.key, what)
		}
		if err := once.once(file, e, n.key+": "+key); err != nil {
			return err
		}
		if e.kind != kString {
			return errAt(file, e.line, fmt.Sprintf(`quote the pattern: %s = "0123456789ABCDEF"`, key),
				"%s: %s needs a quoted pattern", n.key, key)
		}
		p, _, err := mkvp.Parse(ccaMKVPKeys[i].typ, e.str)
		if err != nil {
			return wrapAt(file, e.line, n.key, err)
		}
		c.ExpectedMKVPs[ccaMKVPKeys[i].typ] = p
	}
	return nil
}

// unknownKeyword reports a keyword the consumer does not know, with a hint
// for case mistakes and the list of known ones.
func unknownKeyword(file string, n *node, known []string) error {
	if n.kind == kStringConst {
		return errAt(file, n.line, "a quoted value must follow its keyword on the same line",
			"unexpected quoted string %q", n.str)
	}
	for _, k := range known {
		if strings.EqualFold(k, n.key) {
			return errAt(file, n.line, fmt.Sprintf("keywords are case-sensitive: write %s", k),
				"unknown keyword %s", n.key)
		}
	}
	hint := "known keywords: " + strings.Join(known, ", ")
	if n.key == "LOGLEVEL" {
		hint = "remove it: openCryptoki no longer accepts LOGLEVEL either"
	}
	return errAt(file, n.line, hint, "unknown keyword %s", n.key)
}

// Format renders c in the grammar, canonically. Parsing the output gives c
// again (apart from File).
func (c *CCA) Format() []byte {
	var nodes []*node
	if c.FileVersion != "" {
		nodes = append(nodes, &node{kind: kFileVersion, str: c.FileVersion})
	}
	if c.APQNAny || len(c.APQNs) == 0 {
		nodes = append(nodes, &node{kind: kBareConst, key: "APQN_ANY"})
	} else {
		nodes = append(nodes, apqnNode("APQN_ALLOWLIST", c.APQNs))
	}
	if len(c.ExpectedMKVPs) > 0 {
		st := &node{kind: kStruct, key: "EXPECTED_MKVPS"}
		for _, k := range ccaMKVPKeys {
			if p, ok := c.ExpectedMKVPs[k.typ]; ok {
				st.body = append(st.body, &node{kind: kString, key: k.key, str: p.String()})
			}
		}
		nodes = append(nodes, st)
	}
	if c.ForceSensitive {
		nodes = append(nodes, &node{kind: kBareConst, key: "FORCE_SENSITIVE"})
	}
	nodes = append(nodes, &node{kind: kBare, key: "AES_KEY_MODE", str: c.AESKeyMode})
	if c.PKeyMode != "" {
		nodes = append(nodes, &node{kind: kBare, key: "PKEY_MODE", str: c.PKeyMode})
	}
	if c.MLDSAKeyMode != "" {
		nodes = append(nodes, &node{kind: kBare, key: "ML_DSA_KEY_MODE", str: c.MLDSAKeyMode})
	}
	return render(nodes)
}

// Equal reports whether two CCA configurations select the same behaviour
// (File is ignored).
func (c *CCA) Equal(o *CCA) bool {
	return c.FileVersion == o.FileVersion && slices.Equal(c.APQNs, o.APQNs) && c.APQNAny == o.APQNAny &&
		maps.Equal(c.ExpectedMKVPs, o.ExpectedMKVPs) && c.ForceSensitive == o.ForceSensitive &&
		c.AESKeyMode == o.AESKeyMode && c.PKeyMode == o.PKeyMode && c.MLDSAKeyMode == o.MLDSAKeyMode
}
