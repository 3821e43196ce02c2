package pkcshsm

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/pkcshsm/pkcshsm"

// allowed maps a package (or a folder of packages, by prefix) to the module
// packages its non-test code may import, by prefix. errclass and paths are
// below everything, like the standard library's errors and path packages;
// so is failpoint, which every package may import to name its durable steps
// (inert unless built with the failpoints tag). The first matching rule
// (longest prefix) applies.
var allowed = map[string][]string{
	"errclass":  {},
	"paths":     {},
	"failpoint": {},
	"apqn":      {"errclass", "failpoint"},
	"mkvp":      {"errclass", "failpoint"},
	"hsm":       {"hsm", "apqn", "mkvp", "errclass", "paths", "failpoint"},
	"state":     {"state", "apqn", "mkvp", "errclass", "paths", "failpoint"},
	// The daemon and the agent never see keys: no tokenlib, no hsm.
	"runtime":  {"runtime/event", "runtime/agent", "runtime/admin", "runtime/slotd", "runtime/internal", "state", "apqn", "mkvp", "errclass", "paths", "failpoint"},
	"tokenlib": {"tokenlib", "hsm", "state", "runtime/agent", "runtime/event", "apqn", "mkvp", "errclass", "paths", "failpoint"},
	// The EP11 session modes see the adapters' sessions and the store,
	// never the engine (which calls them) nor the master key change.
	"tokenlib/ep11sess": {"tokenlib/ck", "tokenlib/store", "hsm", "apqn", "mkvp", "errclass", "failpoint"},
	// Test support shared by the packages' tests: imports nothing of ours.
	"internal/hostarch": {"errclass", "failpoint"},
	// Binaries may import anything except what their role forbids below.
	"cmd": {""},
	// The integration tests' harness builds and starts the binaries and
	// makes roots with the simulator and the token library.
	"internal/testenv": {"paths", "apqn", "mkvp", "hsm", "tokenlib", "errclass", "failpoint"},
}

// thirdParty in a forbidden list stands for every import from outside the
// standard library and this module.
const thirdParty = "<third-party>"

// forbidden lists imports a package must never have, by prefix, even where
// the rule above would allow them.
var forbidden = map[string][]string{
	"cmd/pkcshsmd":          {module + "/tokenlib", module + "/hsm"},
	"cmd/pkcshsm_mk_change": {module + "/runtime/slotd", module + "/hsm/sim"},
	"tokenlib":              {"github.com/spf13/cobra"},
	"runtime":               {"github.com/spf13/cobra"},
	"hsm":                   {"github.com/spf13/cobra"},
	"state":                 {"github.com/spf13/cobra"},
	"apqn":                  {thirdParty},
	"mkvp":                  {thirdParty},
	"errclass":              {thirdParty},
	"paths":                 {thirdParty},
	"failpoint":             {thirdParty},
	"internal/hostarch":     {thirdParty},
}

func longestRule[T any](rules map[string]T, pkg string) (T, bool) {
	best, found := "", false
	var v T
	for prefix, r := range rules {
		if (pkg == prefix || strings.HasPrefix(pkg, prefix+"/")) && len(prefix) >= len(best) {
			best, v, found = prefix, r, true
		}
	}
	return v, found
}

func TestImportRules(t *testing.T) {
	imports := map[string]map[string]bool{} // package dir → imports
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		if strings.Contains(f.Name.Name, "ignore") || hasIgnoreTag(p) {
			return nil // generators
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		if imports[dir] == nil {
			imports[dir] = map[string]bool{}
		}
		if f.Name.Name == "runtime" {
			t.Errorf("%s: no package may be named runtime (it shadows the standard library)", p)
		}
		for _, spec := range f.Imports {
			ip, _ := strconv.Unquote(spec.Path.Value)
			imports[dir][ip] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 5 {
		t.Fatalf("found only %d packages; is the test running at the module root?", len(imports))
	}
	for dir, ims := range imports {
		if dir == "." {
			continue
		}
		rule, ok := longestRule(allowed, dir)
		if !ok {
			t.Errorf("%s: no import rule; add the package to the table in importrules_test.go and ARCHITECTURE's spirit", dir)
			continue
		}
		bad, _ := longestRule(forbidden, dir)
		for ip := range ims {
			for _, f := range bad {
				if strings.HasPrefix(ip, f) || f == thirdParty && isThirdParty(ip) {
					t.Errorf("%s imports %s, which it must never import", dir, ip)
				}
			}
			own, isOurs := strings.CutPrefix(ip, module+"/")
			if !isOurs {
				continue
			}
			// The test harness builds binaries and makes roots: only test
			// files may import it, whatever the package's rule.
			if own == "internal/testenv" {
				t.Errorf("%s imports internal/testenv outside its _test.go files; the harness is for tests only", dir)
				continue
			}
			permitted := false
			for _, a := range rule {
				if a == "" || own == a || strings.HasPrefix(own, a+"/") {
					permitted = true
				}
			}
			if !permitted {
				t.Errorf("%s imports %s; allowed: %v", dir, own, rule)
			}
		}
	}
}

func isThirdParty(ip string) bool {
	first, _, _ := strings.Cut(ip, "/")
	return strings.Contains(first, ".") && !strings.HasPrefix(ip, module+"/")
}

func hasIgnoreTag(p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	head := string(b[:min(len(b), 200)])
	return strings.Contains(head, "//go:build ignore")
}

func TestImportRulesTable(t *testing.T) {
	// failpoint is a leaf that every package may import.
	if r, _ := longestRule(allowed, "failpoint"); len(r) != 0 {
		t.Fatalf("failpoint may import %v; it must import nothing of ours", r)
	}
	for prefix, r := range allowed {
		ok := prefix == "failpoint" || prefix == "errclass" || prefix == "paths"
		for _, a := range r {
			ok = ok || a == "failpoint" || a == ""
		}
		if !ok {
			t.Errorf("%s may not import failpoint; every package must be able to name its durable steps", prefix)
		}
	}
	// The rule for a nested package is the longest prefix.
	if r, _ := longestRule(allowed, "hsm/sim"); len(r) == 0 || r[0] != "hsm" {
		t.Fatalf("hsm/sim rule = %v", r)
	}
	if _, ok := longestRule(allowed, "hsmx"); ok {
		t.Fatal("hsmx matched the hsm rule")
	}
	if f, _ := longestRule(forbidden, "cmd/pkcshsmd"); len(f) != 2 || path.Base(f[0]) != "tokenlib" {
		t.Fatalf("pkcshsmd forbidden = %v", f)
	}
}

// cgoPackages may use cgo: the C module's ABI layer and the backends that
// call IBM's host libraries (with the dlopen helper they share).
var cgoPackages = []string{"tokenlib/cabi", "hsm/internal/dl", "hsm/cca", "hsm/ep11"}

// TestCgoOnlyInCABI: only cgoPackages use cgo, and only the module's main
// package (and cabi's own test helper) link tokenlib/cabi.
func TestCgoOnlyInCABI(t *testing.T) {
	const cabi = "tokenlib/cabi"
	importers := map[string]bool{"cmd/libpkcshsm": true, cabi + "/internal/ctest": true}
	seen := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || hasIgnoreTag(p) {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		for _, spec := range f.Imports {
			ip, _ := strconv.Unquote(spec.Path.Value)
			if ip == "C" {
				seen++
				ok := false
				for _, c := range cgoPackages {
					ok = ok || dir == c || strings.HasPrefix(dir, c+"/")
				}
				if !ok {
					t.Errorf("%s uses cgo; only %v may", p, cgoPackages)
				}
			}
			if ip == module+"/"+cabi && !importers[dir] {
				t.Errorf("%s imports %s; only cmd/libpkcshsm links the C module", p, cabi)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatal("no cgo file found; is the test running at the module root?")
	}
}
