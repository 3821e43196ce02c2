package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// DefaultCPFilterName is the control point filter file used when CPFILTER
// is not given, in the directory of the EP11 token configuration.
const DefaultCPFilterName = "ep11cpfilter.conf"

// EP11 is the parsed token configuration of an EP11 slot (ep11tok.conf).
type EP11 struct {
	File        string
	FileVersion string
	// APQNs is the allowlist; empty when APQNAny. Exactly one of the two
	// is given in the file.
	APQNs   apqn.List
	APQNAny bool
	// Session modes; FIPSSessionMode excludes the other two.
	StrictMode      bool
	VHSMMode        bool
	FIPSSessionMode bool
	// ForceSensitive makes CKA_SENSITIVE default to TRUE for new secret keys.
	ForceSensitive bool
	// ExpectedWKVP is the expected current wrapping key verification
	// pattern (16 bytes); zero when not given (learned from the first APQN).
	ExpectedWKVP mkvp.Pattern
	// CPFilter is the resolved path of the control point filter file.
	CPFilter string
	// OptimizeSinglePart, PKeyMode, DigestLibica and UsePRandom are
	// accepted for compatibility and have no effect here (no single-part
	// card calls, no CPACF, no libica, the simulator's RNG). PKeyMode and
	// DigestLibica are "" when not given.
	OptimizeSinglePart bool
	PKeyMode           string
	DigestLibica       string
	UsePRandom         bool
	// Warnings lists things that were accepted but deserve the operator's
	// attention (an over-long EXPECTED_WKVP), as "file:line: text".
	Warnings []string
}

// LoadEP11 reads and parses an EP11 token configuration file.
func LoadEP11(path string) (*EP11, error) {
	data, err := readFile(path, "EP11 token configuration file")
	if err != nil {
		return nil, err
	}
	return ParseEP11(path, data)
}

var ep11Keywords = []string{"APQN_ALLOWLIST", "APQN_WHITELIST", "APQN_ANY", "FORCE_SENSITIVE",
	"STRICT_MODE", "VHSM_MODE", "FIPS_SESSION_MODE", "CPFILTER", "OPTIMIZE_SINGLE_PART_OPERATIONS",
	"PKEY_MODE", "DIGEST_LIBICA", "USE_PRANDOM", "EXPECTED_WKVP"}

// ParseEP11 parses an EP11 token configuration. Keywords are case-sensitive
// (as upstream). A relative CPFILTER is resolved in the directory of name.
func ParseEP11(name string, data []byte) (*EP11, error) {
	nodes, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	e := &EP11{File: name}
	dir := baseDir(name)
	once := seen{}
	lines := map[string]int{}
	for i := 0; i < len(nodes); i++ {
		n := nodes[i]
		if n.kind == kFileVersion {
			e.FileVersion = n.str
			continue
		}
		if n.kind == kStringConst || !slices.Contains(ep11Keywords, n.key) {
			return nil, unknownKeyword(name, n, ep11Keywords)
		}
		kw := n.key
		if kw == "APQN_WHITELIST" {
			kw = "APQN_ALLOWLIST"
		}
		if err := once.once(name, n, kw); err != nil {
			return nil, err
		}
		lines[kw] = n.line
		switch kw {
		case "APQN_ALLOWLIST":
			if n.kind != kPairList {
				return nil, errAt(name, n.line, "write "+n.key+" on its own line, then one \"adapter domain\" pair per line, then END",
					"%s needs a list of adapter domain pairs", n.key)
			}
			if n.end != "END" {
				return nil, errAt(name, n.line, "end the list with a line END (upper case)",
					"%s: list ends with %q instead of END", n.key, n.end)
			}
			if e.APQNs, err = apqnList(name, n); err != nil {
				return nil, err
			}
		case "APQN_ANY", "FORCE_SENSITIVE", "STRICT_MODE", "VHSM_MODE", "FIPS_SESSION_MODE",
			"OPTIMIZE_SINGLE_PART_OPERATIONS", "USE_PRANDOM":
			if n.kind != kBareConst {
				return nil, errAt(name, n.line, fmt.Sprintf("write %s alone on a line", kw), "%s takes no value", kw)
			}
			if i+1 < len(nodes) && nodes[i+1].line == n.line && (nodes[i+1].kind == kBareConst || nodes[i+1].kind == kStringConst) {
				return nil, errAt(name, n.line, fmt.Sprintf("write %s alone on a line", kw), "%s takes no value", kw)
			}
			switch kw {
			case "APQN_ANY":
				e.APQNAny = true
			case "FORCE_SENSITIVE":
				e.ForceSensitive = true
			case "STRICT_MODE":
				e.StrictMode = true
			case "VHSM_MODE":
				e.VHSMMode = true
			case "FIPS_SESSION_MODE":
				e.FIPSSessionMode = true
			case "OPTIMIZE_SINGLE_PART_OPERATIONS":
				e.OptimizeSinglePart = true
			case "USE_PRANDOM":
				e.UsePRandom = true
			}
		case "CPFILTER", "PKEY_MODE", "DIGEST_LIBICA", "EXPECTED_WKVP":
			val, quoted, consumed, ok := argument(nodes, i)
			if !ok {
				return nil, errAt(name, n.line, ep11ArgHint(kw), "%s needs a value on the same line", kw)
			}
			if consumed {
				i++
			}
			switch kw {
			case "CPFILTER":
				if val == "" {
					return nil, errAt(name, n.line, ep11ArgHint(kw), "CPFILTER: empty file name")
				}
				e.CPFilter = resolveIn(dir, val)
			case "PKEY_MODE":
				if err := oneOf(name, n, kw, val, "DISABLED", "DEFAULT", "ENABLE4NONEXTR", "ENABLE4EXTR", "ENABLE4ALL"); err != nil {
					return nil, err
				}
				e.PKeyMode = val
			case "DIGEST_LIBICA":
				if val == "" {
					return nil, errAt(name, n.line, ep11ArgHint(kw), "DIGEST_LIBICA: empty value")
				}
				e.DigestLibica = val
			case "EXPECTED_WKVP":
				if !quoted {
					return nil, errAt(name, n.line, ep11ArgHint(kw), "EXPECTED_WKVP: the pattern must be quoted")
				}
				if err := e.parseWKVP(name, n.line, val); err != nil {
					return nil, err
				}
			}
		}
	}
	switch _, hasAny := lines["APQN_ANY"]; {
	case hasAny && e.APQNs != nil:
		return nil, errAt(name, max(lines["APQN_ANY"], lines["APQN_ALLOWLIST"]), "keep either APQN_ANY or APQN_ALLOWLIST",
			"only one APQN mode may be given: APQN_ANY (line %d) and APQN_ALLOWLIST (line %d)",
			lines["APQN_ANY"], lines["APQN_ALLOWLIST"])
	case !hasAny && e.APQNs == nil:
		return nil, errclass.Newh(errclass.InvalidArgument, "add APQN_ANY, or APQN_ALLOWLIST with adapter domain pairs and END",
			"%s: at least one APQN mode is required (APQN_ANY or APQN_ALLOWLIST)", name)
	}
	if e.FIPSSessionMode && (e.StrictMode || e.VHSMMode) {
		other := "STRICT_MODE"
		if !e.StrictMode {
			other = "VHSM_MODE"
		}
		return nil, errAt(name, lines["FIPS_SESSION_MODE"], "use FIPS_SESSION_MODE alone, or STRICT_MODE and/or VHSM_MODE without it",
			"FIPS_SESSION_MODE cannot be combined with %s (line %d)", other, lines[other])
	}
	if e.CPFilter == "" {
		e.CPFilter = filepath.Join(dir, DefaultCPFilterName)
	}
	return e, nil
}

func ep11ArgHint(kw string) string {
	switch kw {
	case "CPFILTER":
		return `write CPFILTER "/path/to/ep11cpfilter.conf" or CPFILTER = "name" (relative to this file's directory)`
	case "PKEY_MODE":
		return "write PKEY_MODE DEFAULT (or DISABLED, ENABLE4NONEXTR, ENABLE4EXTR, ENABLE4ALL)"
	case "DIGEST_LIBICA":
		return "write DIGEST_LIBICA DEFAULT, DIGEST_LIBICA OFF or DIGEST_LIBICA /path/to/libica.so"
	}
	return `write EXPECTED_WKVP "<32 hex digits>", quoted, e.g. from the mkvps file in sysfs`
}

// parseWKVP reads the expected WK pattern. Upstream uses the first 32 hex
// digits of a longer value; so do we, with a warning instead of a log line.
func (e *EP11) parseWKVP(file string, line int, val string) error {
	h := strings.TrimSpace(val)
	if strings.HasPrefix(h, "0x") || strings.HasPrefix(h, "0X") {
		h = h[2:]
	}
	const digits = 2 * 16
	if len(h) > digits {
		for i := 0; i < len(h); i++ {
			if !isHexDigit(h[i]) {
				break // let mkvp.Parse report it
			}
			if i == len(h)-1 {
				e.Warnings = append(e.Warnings, fmt.Sprintf(
					"%s:%d: EXPECTED_WKVP has %d hex digits; only the first %d are used", file, line, len(h), digits))
				h = h[:digits]
			}
		}
	}
	p, _, err := mkvp.Parse(mkvp.EP11WK, h)
	if err != nil {
		return wrapAt(file, line, "EXPECTED_WKVP", err)
	}
	e.ExpectedWKVP = p
	return nil
}

// Format renders e in the grammar, canonically (the "KEY = value" forms).
// Parsing the output gives e again (apart from File and Warnings).
func (e *EP11) Format() []byte {
	var nodes []*node
	if e.FileVersion != "" {
		nodes = append(nodes, &node{kind: kFileVersion, str: e.FileVersion})
	}
	if e.APQNAny || len(e.APQNs) == 0 {
		nodes = append(nodes, &node{kind: kBareConst, key: "APQN_ANY"})
	} else {
		nodes = append(nodes, apqnNode("APQN_ALLOWLIST", e.APQNs))
	}
	flags := []struct {
		on bool
		kw string
	}{
		{e.StrictMode, "STRICT_MODE"}, {e.VHSMMode, "VHSM_MODE"}, {e.FIPSSessionMode, "FIPS_SESSION_MODE"},
		{e.ForceSensitive, "FORCE_SENSITIVE"}, {e.OptimizeSinglePart, "OPTIMIZE_SINGLE_PART_OPERATIONS"},
		{e.UsePRandom, "USE_PRANDOM"},
	}
	for _, f := range flags {
		if f.on {
			nodes = append(nodes, &node{kind: kBareConst, key: f.kw})
		}
	}
	if !e.ExpectedWKVP.IsZero() {
		nodes = append(nodes, &node{kind: kString, key: "EXPECTED_WKVP", str: e.ExpectedWKVP.String()})
	}
	if e.CPFilter != "" {
		nodes = append(nodes, &node{kind: kString, key: "CPFILTER", str: e.CPFilter})
	}
	if e.PKeyMode != "" {
		nodes = append(nodes, &node{kind: kBare, key: "PKEY_MODE", str: e.PKeyMode})
	}
	if e.DigestLibica != "" {
		nodes = append(nodes, &node{kind: kString, key: "DIGEST_LIBICA", str: e.DigestLibica})
	}
	return render(nodes)
}

// Equal reports whether two EP11 configurations select the same behaviour
// (File and Warnings are ignored).
func (e *EP11) Equal(o *EP11) bool {
	return e.FileVersion == o.FileVersion && slices.Equal(e.APQNs, o.APQNs) && e.APQNAny == o.APQNAny &&
		e.StrictMode == o.StrictMode && e.VHSMMode == o.VHSMMode && e.FIPSSessionMode == o.FIPSSessionMode &&
		e.ForceSensitive == o.ForceSensitive && e.ExpectedWKVP == o.ExpectedWKVP && e.CPFilter == o.CPFilter &&
		e.OptimizeSinglePart == o.OptimizeSinglePart && e.PKeyMode == o.PKeyMode &&
		e.DigestLibica == o.DigestLibica && e.UsePRandom == o.UsePRandom
}
