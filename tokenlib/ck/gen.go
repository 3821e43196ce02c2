//go:build ignore

// gen reads the PKCS#11 header pkcs11t.h and writes zconst.go: one typed Go
// constant per #define of the CK* families, and name tables for the types
// that are printed in logs and errors.
//
// Usage (normally through go generate in this directory):
//
//	go run gen.go [-header path/to/pkcs11t.h] [-o zconst.go]
//
// Without -header it uses the copy shipped in the github.com/miekg/pkcs11
// module, found with `go list -m`. The output depends only on the header, so
// a test re-runs the generator and compares.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// family is a group of constants sharing a prefix and a Go type.
type family struct {
	prefix string // "CKR_"
	typ    string // Go type of the constants
	doc    string // doc comment for the type
	names  string // name of the value→name function, "" for none
	parse  string // name of the name→value function, "" for none
}

// families is ordered by longest prefix first, so "CK_" does not swallow
// "CKR_" (prefixes never nest otherwise).
var families = []family{
	{"CKR_", "RV", "RV is a CK_RV return value.", "RVName", "RVByName"},
	{"CKA_", "Attribute", "Attribute is a CK_ATTRIBUTE_TYPE.", "AttributeName", "AttributeByName"},
	{"CKO_", "ObjectClass", "ObjectClass is a CK_OBJECT_CLASS.", "ObjectClassName", "ObjectClassByName"},
	{"CKK_", "KeyType", "KeyType is a CK_KEY_TYPE.", "KeyTypeName", "KeyTypeByName"},
	{"CKM_", "Mechanism", "Mechanism is a CK_MECHANISM_TYPE.", "MechanismName", "MechanismByName"},
	{"CKF_", "Flags", "Flags is a CK_FLAGS bit set. The same bit has different meanings in slot,\n// token, session and mechanism flags, so there is no name table.", "", ""},
	{"CKU_", "UserType", "UserType is a CK_USER_TYPE.", "UserTypeName", ""},
	{"CKS_", "State", "State is a CK_STATE (session state).", "StateName", ""},
	{"CKC_", "CertificateType", "CertificateType is a CK_CERTIFICATE_TYPE.", "CertificateTypeName", ""},
	{"CKG_", "MGF", "MGF is a CK_RSA_PKCS_MGF_TYPE (mask generation function for PSS and OAEP).", "MGFName", ""},
	{"CKH_", "HWFeature", "HWFeature is a CK_HW_FEATURE_TYPE.", "HWFeatureName", ""},
	{"CKD_", "KDF", "KDF is a CK_EC_KDF_TYPE (key derivation function for ECDH).", "KDFName", ""},
	{"CKP_", "PRF", "PRF is a CK_PKCS5_PBKDF2_PSEUDO_RANDOM_FUNCTION_TYPE.", "", ""},
	{"CKN_", "Notification", "Notification is a CK_NOTIFICATION.", "", ""},
	// CKZ_ values belong to two unrelated parameter types (OAEP source and
	// PBKDF2 salt source) and CK_ ones are miscellaneous: plain uint.
	{"CKZ_", "uint", "", "", ""},
	{"CK_", "uint", "", "", ""},
}

// def is one #define of interest.
type def struct {
	name       string
	value      uint64
	fam        *family
	alias      bool // defined as another name, e.g. CKA_SUB_PRIME_BITS
	deprecated bool // the header marks it "Deprecated"
	order      int
}

var defineRE = regexp.MustCompile(`^\s*#\s*define\s+(CK[A-Z]*_[A-Za-z0-9_]+)\s+(.*)$`)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gen: ")
	header := flag.String("header", "", "path of pkcs11t.h (default: from the miekg/pkcs11 module)")
	out := flag.String("o", "zconst.go", "output file")
	flag.Parse()

	if *header == "" {
		dir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11").Output()
		if err != nil {
			log.Fatalf("locating github.com/miekg/pkcs11: %v (give -header)", err)
		}
		*header = filepath.Join(strings.TrimSpace(string(dir)), "pkcs11t.h")
	}
	src, err := os.ReadFile(*header)
	if err != nil {
		log.Fatal(err)
	}
	defs, err := parse(src)
	if err != nil {
		log.Fatalf("%s: %v", *header, err)
	}
	code, err := render(defs)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, code, 0o644); err != nil {
		log.Fatal(err)
	}
}

func familyOf(name string) *family {
	for i := range families {
		if strings.HasPrefix(name, families[i].prefix) {
			return &families[i]
		}
	}
	return nil
}

// parse collects the CK* defines with their evaluated values. The header
// uses a tiny expression language: integer literals (hex or decimal, with
// an optional U/L suffix), names defined earlier, '|', '~' and parentheses.
func parse(src []byte) ([]*def, error) {
	byName := map[string]*def{}
	var defs []*def
	sc := bufio.NewScanner(bytes.NewReader(src))
	line := 0
	for sc.Scan() {
		line++
		m := defineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		name, rest := m[1], m[2]
		fam := familyOf(name)
		if fam == nil {
			continue
		}
		expr, comment, _ := strings.Cut(rest, "/*")
		expr = strings.TrimSpace(expr)
		if strings.HasSuffix(expr, `\`) {
			return nil, fmt.Errorf("line %d: continued #define %s is not supported", line, name)
		}
		v, isAlias, err := eval(expr, byName)
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %v", line, name, err)
		}
		if old, ok := byName[name]; ok {
			if old.value != v {
				return nil, fmt.Errorf("line %d: %s redefined with a different value", line, name)
			}
			continue
		}
		d := &def{
			name: name, value: v, fam: fam, alias: isAlias,
			deprecated: strings.Contains(strings.ToLower(comment), "deprecated"),
			order:      len(defs),
		}
		byName[name] = d
		defs = append(defs, d)
	}
	return defs, sc.Err()
}

// eval evaluates one #define body. isAlias reports a body that is just
// another name.
func eval(expr string, known map[string]*def) (v uint64, isAlias bool, err error) {
	p := &exprParser{s: expr, known: known}
	v, err = p.or()
	if err == nil && strings.TrimSpace(p.s[p.i:]) != "" {
		err = fmt.Errorf("unexpected %q", p.s[p.i:])
	}
	_, isAlias = known[expr]
	return v, isAlias, err
}

type exprParser struct {
	s     string
	i     int
	known map[string]*def
}

func (p *exprParser) skip() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *exprParser) or() (uint64, error) {
	v, err := p.unary()
	for err == nil {
		p.skip()
		if p.i >= len(p.s) || p.s[p.i] != '|' {
			break
		}
		p.i++
		var w uint64
		w, err = p.unary()
		v |= w
	}
	return v, err
}

func (p *exprParser) unary() (uint64, error) {
	p.skip()
	if p.i >= len(p.s) {
		return 0, fmt.Errorf("unexpected end of expression %q", p.s)
	}
	switch c := p.s[p.i]; {
	case c == '~':
		p.i++
		v, err := p.unary()
		return ^v, err
	case c == '(':
		p.i++
		v, err := p.or()
		if err != nil {
			return 0, err
		}
		p.skip()
		if p.i >= len(p.s) || p.s[p.i] != ')' {
			return 0, fmt.Errorf("missing ')' in %q", p.s)
		}
		p.i++
		return v, nil
	case c >= '0' && c <= '9':
		j := p.i
		for j < len(p.s) && isWord(p.s[j]) {
			j++
		}
		lit := strings.TrimRight(p.s[p.i:j], "uUlL")
		p.i = j
		return strconv.ParseUint(lit, 0, 64)
	case isWord(c):
		j := p.i
		for j < len(p.s) && isWord(p.s[j]) {
			j++
		}
		name := p.s[p.i:j]
		p.i = j
		d, ok := p.known[name]
		if !ok {
			return 0, fmt.Errorf("unknown name %s", name)
		}
		return d.value, nil
	default:
		return 0, fmt.Errorf("unexpected %q in %q", c, p.s)
	}
}

func isWord(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// preferred picks, among names sharing a value, the one the name table
// prints: a literal definition over an alias, a current name over a
// deprecated one, then the first defined.
func preferred(a, b *def) bool {
	if a.alias != b.alias {
		return !a.alias
	}
	if a.deprecated != b.deprecated {
		return !a.deprecated
	}
	return a.order < b.order
}

func render(defs []*def) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("// Code generated by gen.go from pkcs11t.h; DO NOT EDIT.\n\n")
	b.WriteString("package ck\n\n")

	for i := range families {
		f := &families[i]
		if f.typ == "uint" {
			continue
		}
		fmt.Fprintf(&b, "// %s\ntype %s uint\n\n", f.doc, f.typ)
	}

	for i := range families {
		f := &families[i]
		var members []*def
		for _, d := range defs {
			if d.fam == f {
				members = append(members, d)
			}
		}
		if len(members) == 0 {
			continue
		}
		fmt.Fprintf(&b, "// %s* constants.\nconst (\n", f.prefix)
		for _, d := range members {
			switch {
			case d.value == ^uint64(0):
				// ~0UL: all ones in a CK_ULONG, whatever its width.
				fmt.Fprintf(&b, "\t%s %s = ^%s(0)\n", d.name, f.typ, f.typ)
			case d.value > 0xffffffff:
				return nil, fmt.Errorf("%s = %#x does not fit in 32 bits", d.name, d.value)
			default:
				fmt.Fprintf(&b, "\t%s %s = 0x%08X\n", d.name, f.typ, d.value)
			}
		}
		b.WriteString(")\n\n")

		if f.names != "" {
			best := map[uint64]*def{}
			for _, d := range members {
				if cur, ok := best[d.value]; !ok || preferred(d, cur) {
					best[d.value] = d
				}
			}
			vals := make([]uint64, 0, len(best))
			for v := range best {
				vals = append(vals, v)
			}
			slices.Sort(vals)
			fmt.Fprintf(&b, "var names%s = map[%s]string{\n", f.typ, f.typ)
			for _, v := range vals {
				fmt.Fprintf(&b, "\t%s: %q,\n", best[v].name, best[v].name)
			}
			b.WriteString("}\n\n")
		}
		if f.parse != "" {
			fmt.Fprintf(&b, "var values%s = map[string]%s{\n", f.typ, f.typ)
			for _, d := range members {
				fmt.Fprintf(&b, "\t%q: %s,\n", d.name, d.name)
			}
			b.WriteString("}\n\n")
		}
	}
	return format.Source(b.Bytes())
}
