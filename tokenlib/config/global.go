package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/paths"
)

// TokenType is the kind of token a slot holds.
type TokenType uint8

// The token types pkcshsm provides.
const (
	TypeCCA TokenType = iota + 1
	TypeEP11
)

// String returns the token-type keyword: "cca" or "ep11".
func (t TokenType) String() string {
	switch t {
	case TypeCCA:
		return "cca"
	case TypeEP11:
		return "ep11"
	}
	return fmt.Sprintf("tokentype(%d)", uint8(t))
}

// DefaultTokName is the token name a slot of this type gets without
// tokname: "ccatok" or "ep11tok", as upstream.
func (t TokenType) DefaultTokName() string {
	if t == TypeEP11 {
		return "ep11tok"
	}
	return "ccatok"
}

// stdllTypes maps the openCryptoki token libraries pkcshsm replaces.
var stdllTypes = map[string]TokenType{
	"libpkcs11_cca.so":  TypeCCA,
	"libpkcs11_ep11.so": TypeEP11,
}

// Version is a major.minor version as the configuration files write it.
type Version struct {
	Major, Minor uint16
}

// String returns "major.minor".
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Packed returns major<<16 | minor, openCryptoki's representation
// (tokversion 3.12 is 0x0003000C).
func (v Version) Packed() uint32 { return uint32(v.Major)<<16 | uint32(v.Minor) }

// Backend names (hsm/open opens them): the simulator, or IBM's host
// libraries on IBM Z.
const (
	BackendSimulator = "simulator"
	BackendHost      = "host"
)

// Slot limits and defaults (upstream values).
const (
	MaxSlots            = 1024 // slot numbers are 0..1023
	maxDescription      = 64   // CK_SLOT_INFO.slotDescription
	maxManufacturer     = 32   // CK_SLOT_INFO.manufacturerID
	maxStdll            = 255
	maxTokName          = 64
	maxGroupName        = 32
	DefaultDescription  = "Linux"
	DefaultManufacturer = "IBM"
	DefaultUserGroup    = "pkcs11"
	// ReservedTokName is the directory of the master key change
	// operations; no token may use it.
	ReservedTokName = "HSM_MK_CHANGE"
)

// Global is the parsed global configuration file, pkcshsm.conf (the
// counterpart of openCryptoki's opencryptoki.conf).
type Global struct {
	// File is the name the configuration was read from.
	File string
	// FileVersion is the value of a leading "version" line ("" if none).
	// It is kept, never interpreted.
	FileVersion string
	// HSMBackend is the backend the tokens use: "simulator" or "host".
	HSMBackend string
	// SimulatorDir is the simulator's state directory (absolute).
	SimulatorDir string
	// DisableEventSupport turns off the event machinery: no daemon events,
	// so no concurrent master key change.
	DisableEventSupport bool
	// Statistics is the statistics list as given, nil if absent. Accepted
	// for compatibility; pkcshsm keeps no statistics.
	Statistics []string
	// Slots in file order.
	Slots []Slot
}

// Slot is one slot N { ... } block.
type Slot struct {
	ID   uint
	Type TokenType
	// Stdll is the openCryptoki token library named in the file, kept for
	// compatibility ("" if absent). It only serves to derive Type.
	Stdll string
	// TokName names the token's directory (paths.TokenDir).
	TokName string
	// ConfName is the resolved path of the token configuration file, or ""
	// (CCA only) for none: the CCA token then runs with defaults.
	ConfName     string
	Description  string
	Manufacturer string
	HWVersion    Version
	FWVersion    Version
	// TokVersion is accepted for compatibility; pkcshsm has one store
	// format, so it has no effect.
	TokVersion Version
	// UserGroup owns the token directory; only its members use the token.
	UserGroup string
}

// Slot returns the slot with the given number.
func (g *Global) Slot(id uint) (*Slot, bool) {
	for i := range g.Slots {
		if g.Slots[i].ID == id {
			return &g.Slots[i], true
		}
	}
	return nil, false
}

// LoadGlobal reads and parses the global configuration file. Plain confname
// values are resolved in the file's directory.
func LoadGlobal(path string) (*Global, error) {
	data, err := readFile(path, "global configuration file")
	if err != nil {
		return nil, err
	}
	return ParseGlobal(path, data)
}

// ParseGlobal parses a global configuration. name is used in messages and
// to resolve plain confname values (in the directory of name). Without
// simulator-dir the simulator directory is paths.FromEnv().SimDir().
func ParseGlobal(name string, data []byte) (*Global, error) {
	nodes, err := parseFile(name, data)
	if err != nil {
		return nil, err
	}
	g := &Global{File: name}
	confDir := baseDir(name)
	once := seen{}
	slotLine := map[uint]int{}
	for _, n := range nodes {
		switch {
		case n.kind == kFileVersion:
			g.FileVersion = n.str
		case n.key == "disable-event-support":
			if err := once.once(name, n, n.key); err != nil {
				return nil, err
			}
			if n.kind != kBareConst {
				return nil, errAt(name, n.line, "write disable-event-support alone on a line",
					"disable-event-support takes no value")
			}
			g.DisableEventSupport = true
		case n.key == "statistics":
			if err := once.once(name, n, n.key); err != nil {
				return nil, err
			}
			if n.kind != kBareList {
				return nil, errAt(name, n.line, "write statistics (off) or statistics (on[, implicit][, internal])",
					"statistics needs a list in parentheses")
			}
			if err := checkStatistics(name, n); err != nil {
				return nil, err
			}
			g.Statistics = slices.Clone(n.list)
		case n.key == "hsm-backend":
			if err := once.once(name, n, n.key); err != nil {
				return nil, err
			}
			v, ok := textValue(n)
			if !ok {
				return nil, errAt(name, n.line, "write: hsm-backend = simulator", "hsm-backend needs a value")
			}
			if v != BackendSimulator && v != BackendHost {
				return nil, errAt(name, n.line, "write: hsm-backend = simulator (the simulator) or hsm-backend = host (IBM's CCA and EP11 host libraries)",
					"hsm-backend %q is not supported; the backends are %q and %q", v, BackendSimulator, BackendHost)
			}
			g.HSMBackend = v
		case n.key == "simulator-dir":
			if err := once.once(name, n, n.key); err != nil {
				return nil, err
			}
			v, ok := textValue(n)
			if !ok || !filepath.IsAbs(v) {
				return nil, errAt(name, n.line, `write: simulator-dir = "/absolute/path"`,
					"simulator-dir must be an absolute path")
			}
			g.SimulatorDir = filepath.Clean(v)
		case n.key == "slot" && n.kind == kIdxStruct:
			if n.num >= MaxSlots {
				return nil, errAt(name, n.line, fmt.Sprintf("use a slot number from 0 to %d", MaxSlots-1),
					"slot %d: slot number is too large", n.num)
			}
			id := uint(n.num)
			if first, ok := slotLine[id]; ok {
				return nil, errAt(name, n.line, "give each slot its own number",
					"slot %d is defined twice (first on line %d)", id, first)
			}
			slotLine[id] = n.line
			s, err := parseSlot(name, confDir, n)
			if err != nil {
				return nil, err
			}
			g.Slots = append(g.Slots, s)
		case n.key == "slot":
			return nil, errAt(name, n.line, "write: slot N { ... }", "slot needs a number and a { ... } block")
		case n.key == "version":
			return nil, errAt(name, n.line, "move the version line to the top of the file, or remove it",
				"version must be the first element of the file")
		default:
			return nil, unknownGlobal(name, n)
		}
	}
	if g.HSMBackend == "" {
		return nil, errclass.Newh(errclass.InvalidArgument, "add the line: hsm-backend = simulator",
			"%s: hsm-backend is not set", name)
	}
	if g.SimulatorDir == "" {
		g.SimulatorDir = paths.FromEnv().SimDir()
	}
	// Token names are directory names: two slots must not share one.
	byName := map[string]uint{}
	for _, s := range g.Slots {
		if other, ok := byName[s.TokName]; ok {
			return nil, errAt(name, slotLine[s.ID], "give each slot its own tokname",
				"slot %d: token name %q is already used by slot %d", s.ID, s.TokName, other)
		}
		byName[s.TokName] = s.ID
	}
	return g, nil
}

func unknownGlobal(file string, n *node) error {
	known := []string{"version", "disable-event-support", "statistics", "slot", "hsm-backend", "simulator-dir"}
	for _, k := range known {
		if n.key != "" && strings.EqualFold(n.key, k) && n.key != k {
			return errAt(file, n.line, fmt.Sprintf("keywords are case-sensitive: write %s", k), "unknown keyword %q", n.key)
		}
	}
	what := n.key
	if n.kind == kStringConst {
		what = quote(n.str)
	}
	return errAt(file, n.line, "the global file knows "+strings.Join(known, ", "),
		"unexpected %s %s at the top level", n.kind, what)
}

// textValue returns the value of KEY = "text" or KEY = word.
func textValue(n *node) (string, bool) {
	if n.kind == kString || n.kind == kBare {
		return n.str, true
	}
	return "", false
}

func checkStatistics(file string, n *node) error {
	hint := "write statistics (off) or statistics (on[, implicit][, internal])"
	has := map[string]bool{}
	for _, v := range n.list {
		switch v {
		case "off", "on", "implicit", "internal":
		default:
			return errAt(file, n.line, hint, "statistics: unknown value %q", v)
		}
		if has[v] {
			return errAt(file, n.line, hint, "statistics: %q is given twice", v)
		}
		has[v] = true
	}
	switch {
	case len(n.list) == 0:
		return errAt(file, n.line, hint, "statistics: empty list")
	case has["off"] && len(n.list) > 1:
		return errAt(file, n.line, hint, "statistics: off cannot be combined with other values")
	case !has["off"] && !has["on"]:
		return errAt(file, n.line, hint, "statistics: implicit and internal need on")
	}
	return nil
}

var slotKeys = []string{"stdll", "token-type", "description", "manufacturer", "hwversion",
	"firmwareversion", "confname", "tokname", "tokversion", "usergroup"}

func parseSlot(file, confDir string, sn *node) (Slot, error) {
	s := Slot{ID: uint(sn.num)}
	prefix := fmt.Sprintf("slot %d", s.ID)
	var typeLine int
	var confName string
	once := seen{}
	for _, n := range sn.body {
		if n.kind == kStringConst || !slices.Contains(slotKeys, n.key) {
			what := n.key
			if n.kind == kStringConst {
				what = quote(n.str)
			}
			hint := "slot keys are " + strings.Join(slotKeys, ", ")
			for _, k := range slotKeys {
				if strings.EqualFold(k, n.key) {
					hint = fmt.Sprintf("keys are case-sensitive: write %s", k)
				}
			}
			return s, errAt(file, n.line, hint, "%s: unknown key %s", prefix, what)
		}
		if err := once.once(file, n, prefix+": "+n.key); err != nil {
			return s, err
		}
		switch n.key {
		case "hwversion", "firmwareversion", "tokversion":
			if n.kind != kVersion {
				return s, errAt(file, n.line, fmt.Sprintf("write %s = major.minor, e.g. 1.0", n.key),
					"%s: %s needs a major.minor version", prefix, n.key)
			}
			v := Version{Major: uint16(n.num >> 16), Minor: uint16(n.num)}
			switch n.key {
			case "hwversion":
				s.HWVersion = v
			case "firmwareversion":
				s.FWVersion = v
			default:
				s.TokVersion = v
			}
			continue
		}
		v, ok := textValue(n)
		if !ok {
			return s, errAt(file, n.line, fmt.Sprintf(`write %s = "value"`, n.key),
				"%s: %s needs a word or a quoted string", prefix, n.key)
		}
		var err error
		switch n.key {
		case "stdll":
			s.Stdll, err = v, checkLen(file, n, prefix, v, maxStdll)
		case "token-type":
			typeLine = n.line
			switch v {
			case "cca":
				s.Type = TypeCCA
			case "ep11":
				s.Type = TypeEP11
			default:
				hint := "write token-type = cca or token-type = ep11"
				err = errAt(file, n.line, hint, "%s: unknown token-type %q", prefix, v)
			}
		case "description":
			s.Description, err = v, checkLen(file, n, prefix, v, maxDescription)
		case "manufacturer":
			s.Manufacturer, err = v, checkLen(file, n, prefix, v, maxManufacturer)
		case "tokname":
			s.TokName, err = v, checkTokName(file, n, prefix, v)
		case "confname":
			confName, err = v, checkConfName(file, n, prefix, v)
		case "usergroup":
			s.UserGroup, err = v, checkGroup(file, n, prefix, v)
		}
		if err != nil {
			return s, err
		}
	}
	if s.Stdll != "" {
		t, ok := stdllTypes[filepath.Base(s.Stdll)]
		switch {
		case !ok:
			return s, errAt(file, sn.line, "pkcshsm provides CCA and EP11 tokens only: remove this slot, or use stdll = libpkcs11_cca.so or libpkcs11_ep11.so",
				"%s: stdll %q is not a token pkcshsm provides", prefix, s.Stdll)
		case s.Type != 0 && s.Type != t:
			return s, errAt(file, typeLine, "remove stdll or make it match token-type",
				"%s: token-type %s contradicts stdll %q", prefix, s.Type, s.Stdll)
		}
		s.Type = t
	}
	if s.Type == 0 {
		return s, errAt(file, sn.line, "add token-type = cca or token-type = ep11 to the slot",
			"%s: the token type is not set", prefix)
	}
	if s.TokName == "" {
		s.TokName = s.Type.DefaultTokName()
	}
	switch {
	case confName != "":
		s.ConfName = resolveIn(confDir, confName)
	case s.Type == TypeEP11:
		s.ConfName = filepath.Join(confDir, "ep11tok.conf")
	}
	if s.Description == "" {
		s.Description = DefaultDescription
	}
	if s.Manufacturer == "" {
		s.Manufacturer = DefaultManufacturer
	}
	if s.UserGroup == "" {
		s.UserGroup = DefaultUserGroup
	}
	return s, nil
}

func checkLen(file string, n *node, prefix, v string, max int) error {
	if len(v) > max {
		return errAt(file, n.line, fmt.Sprintf("shorten it to at most %d characters", max),
			"%s: %s is %d characters long, the limit is %d", prefix, n.key, len(v), max)
	}
	return nil
}

// checkTokName allows letters, digits, '.', '_' and '-', not starting with
// '.', because the name becomes a directory name.
func checkTokName(file string, n *node, prefix, v string) error {
	hint := "use a plain name of letters, digits, '.', '_' and '-', e.g. ccatok2"
	if v == "" || len(v) > maxTokName || v[0] == '.' {
		return errAt(file, n.line, hint, "%s: tokname %q is not a plain name (1 to %d characters, not starting with '.')", prefix, v, maxTokName)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !(isLetter(c) || isDigit(c) || c == '.' || c == '_' || c == '-') {
			return errAt(file, n.line, hint, "%s: tokname %q contains %q", prefix, v, rune(c))
		}
	}
	if strings.EqualFold(v, ReservedTokName) {
		return errAt(file, n.line, "choose another tokname",
			"%s: tokname %s is reserved for master key change operations", prefix, ReservedTokName)
	}
	return nil
}

func checkConfName(file string, n *node, prefix, v string) error {
	if filepath.IsAbs(v) {
		return nil
	}
	if v == "" || v == "." || v == ".." || strings.Contains(v, "/") {
		return errAt(file, n.line, "give an absolute path, or a plain file name in the configuration directory",
			"%s: confname %q is neither an absolute path nor a plain file name", prefix, v)
	}
	return nil
}

func checkGroup(file string, n *node, prefix, v string) error {
	ok := v != "" && len(v) <= maxGroupName && (isLetter(v[0]) || v[0] == '_')
	for i := 0; ok && i < len(v); i++ {
		c := v[i]
		ok = isLetter(c) || isDigit(c) || c == '_' || c == '-' || c == '.'
	}
	if !ok {
		return errAt(file, n.line, "give the name of an existing group, e.g. pkcs11",
			"%s: usergroup %q is not a valid group name", prefix, v)
	}
	return nil
}

// Format renders g in the grammar, canonically: every setting explicit,
// resolved paths, keys in a fixed order. Parsing the output gives g again
// (apart from File).
func (g *Global) Format() []byte {
	var nodes []*node
	if g.FileVersion != "" {
		nodes = append(nodes, &node{kind: kFileVersion, str: g.FileVersion})
	}
	nodes = append(nodes,
		&node{kind: kBare, key: "hsm-backend", str: g.HSMBackend},
		&node{kind: kString, key: "simulator-dir", str: g.SimulatorDir})
	if g.DisableEventSupport {
		nodes = append(nodes, &node{kind: kBareConst, key: "disable-event-support"})
	}
	if g.Statistics != nil {
		nodes = append(nodes, &node{kind: kBareList, key: "statistics", list: g.Statistics})
	}
	for _, s := range g.Slots {
		body := []*node{{kind: kBare, key: "token-type", str: s.Type.String()}}
		if s.Stdll != "" {
			body = append(body, &node{kind: kString, key: "stdll", str: s.Stdll})
		}
		body = append(body, &node{kind: kString, key: "tokname", str: s.TokName})
		if s.ConfName != "" {
			body = append(body, &node{kind: kString, key: "confname", str: s.ConfName})
		}
		body = append(body,
			&node{kind: kString, key: "description", str: s.Description},
			&node{kind: kString, key: "manufacturer", str: s.Manufacturer},
			&node{kind: kVersion, key: "hwversion", num: uint64(s.HWVersion.Packed())},
			&node{kind: kVersion, key: "firmwareversion", num: uint64(s.FWVersion.Packed())},
			&node{kind: kVersion, key: "tokversion", num: uint64(s.TokVersion.Packed())},
			&node{kind: kString, key: "usergroup", str: s.UserGroup})
		nodes = append(nodes, &node{kind: kIdxStruct, key: "slot", num: uint64(s.ID), body: body})
	}
	return render(nodes)
}
