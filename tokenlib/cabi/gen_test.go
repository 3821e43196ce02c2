package cabi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/hostarch"
)

// TestGeneratedUpToDate re-runs gen.go and compares its output with the
// committed zfuncs.c and internal/ctest/zcalls.go.
func TestGeneratedUpToDate(t *testing.T) {
	goTool := lookTool(t, "go")
	out := t.TempDir()
	if msg, err := exec.Command(goTool, "run", "gen.go", "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("gen: %v\n%s", err, msg)
	}
	for _, f := range []string{"zfuncs.c", filepath.Join("internal", "ctest", "zcalls.go")} {
		want, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s is stale: run go generate ./tokenlib/cabi", f)
		}
	}
}

// TestGeneratedWrappers checks what the generator made of the header:
// every v2.40 function has a wrapper, each with a //export go_C_* enters Go
// behind the fork guard, the others are CKR_FUNCTION_NOT_SUPPORTED, and
// the engine's functions are all implemented.
func TestGeneratedWrappers(t *testing.T) {
	src, err := os.ReadFile("zfuncs.c")
	if err != nil {
		t.Fatal(err)
	}
	c := string(src)
	header, err := os.ReadFile(filepath.Join("include", "pkcs11f.h"))
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`CK_PKCS11_FUNCTION_INFO\((C_\w+)\)`).FindAllStringSubmatch(string(header), -1)
	if len(names) != 68 {
		t.Fatalf("header has %d functions", len(names))
	}
	unsupported := map[string]bool{}
	for _, n := range strings.Fields("C_GetOperationState C_SetOperationState C_DigestKey C_SignRecoverInit C_SignRecover " +
		"C_VerifyRecoverInit C_VerifyRecover C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate " +
		"C_DecryptVerifyUpdate C_DeriveKey") {
		unsupported[n] = true
	}
	for _, m := range names {
		name := m[1]
		body := regexp.MustCompile(`(?s)CK_RV ` + name + `\([^)]*\)\n\{\n(.*?)\n\}\n`).FindStringSubmatch(c)
		if body == nil {
			t.Errorf("%s: no wrapper", name)
			continue
		}
		if !strings.Contains(c, "\t."+name+" = "+name+",\n") {
			t.Errorf("%s: not in the function list", name)
		}
		switch {
		case name == "C_GetFunctionList":
		case unsupported[name]:
			if !strings.HasSuffix(body[1], "return CKR_FUNCTION_NOT_SUPPORTED;") || strings.Contains(body[1], "go_") {
				t.Errorf("%s should be CKR_FUNCTION_NOT_SUPPORTED:\n%s", name, body[1])
			}
		default:
			guard := "\tif (pkcshsm_forked())\n\t\treturn pkcshsm_refuse_forked(\"" + name + "\","
			if !strings.HasPrefix(body[1], guard) || !strings.Contains(body[1], "return go_"+name+"(") {
				t.Errorf("%s does not enter go_%s behind the fork guard:\n%s", name, name, body[1])
			}
		}
	}
}

// lookTool finds an external tool. Outside CI a missing tool skips the
// test; under CI=true it fails it (.ci/run installs them all).
// The C compiler and nm are $CC and $NM when set (scripts/test-s390x.sh
// builds for s390x with s390x-linux-gnu-gcc and reads its symbols with
// s390x-linux-gnu-nm).
func lookTool(t testing.TB, name string) string {
	t.Helper()
	switch env := map[string]string{"gcc": "CC", "nm": "NM"}[name]; {
	case env != "" && os.Getenv(env) != "":
		name = os.Getenv(env)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found; .ci/run must install it", name)
		}
		t.Skipf("%s not found", name)
	}
	return p
}

// loaderTool finds a program of this machine that loads the module into
// its own process (p11-kit's server and client). A program of another
// architecture than the module's cannot: under scripts/test-s390x.sh the
// module is s390x and p11-kit is the host's, and the test is skipped with
// that reason.
func loaderTool(t testing.TB, name string) string {
	t.Helper()
	p := lookTool(t, name)
	if why := hostarch.Mismatch(p); why != "" {
		t.Skip(why)
	}
	return p
}

// TestNoInitWork: loading the library must not run Go code of ours (the
// host has not called anything yet): no init functions, and package-level
// variables without initialisers that call functions.
func TestNoInitWork(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "gen.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.Name == "init" {
					t.Errorf("%s: func init", fset.Position(d.Pos()))
				}
			case *ast.GenDecl:
				if d.Tok != token.VAR {
					continue
				}
				for _, s := range d.Specs {
					for _, v := range s.(*ast.ValueSpec).Values {
						ast.Inspect(v, func(n ast.Node) bool {
							if _, ok := n.(*ast.CallExpr); ok {
								t.Errorf("%s: package variable initialised by a call", fset.Position(n.Pos()))
							}
							return true
						})
					}
				}
			}
		}
	}
}

// TestEveryEntryPointRecovers: each //export go_C_* function defers
// recoverRV itself or returns through entry (or a helper that does), so
// no panic can reach the host.
func TestEveryEntryPointRecovers(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	funcs := map[string]*ast.FuncDecl{}
	var exported []*ast.FuncDecl
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "gen.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok {
				continue
			}
			funcs[fd.Name.Name] = fd
			if fd.Doc != nil {
				for _, c := range fd.Doc.List {
					if strings.HasPrefix(c.Text, "//export go_C_") {
						exported = append(exported, fd)
					}
				}
			}
		}
	}
	// guarded reports whether fd recovers: it defers recoverRV, or its
	// returned expression is a call of a guarded function.
	var guarded func(fd *ast.FuncDecl, depth int) bool
	guarded = func(fd *ast.FuncDecl, depth int) bool {
		if fd == nil || depth > 3 {
			return false
		}
		if fd.Name.Name == "entry" {
			return true
		}
		for _, st := range fd.Body.List {
			switch s := st.(type) {
			case *ast.DeferStmt:
				if id, ok := s.Call.Fun.(*ast.Ident); ok && id.Name == "recoverRV" {
					return true
				}
			case *ast.ReturnStmt:
				if len(s.Results) == 1 {
					if call, ok := s.Results[0].(*ast.CallExpr); ok {
						if id, ok := call.Fun.(*ast.Ident); ok {
							return guarded(funcs[id.Name], depth+1)
						}
					}
				}
				return false
			}
		}
		return false
	}
	if len(exported) < 50 {
		t.Fatalf("found %d exported entry points", len(exported))
	}
	for _, fd := range exported {
		if !guarded(fd, 0) {
			t.Errorf("%s: does not recover panics (defer recoverRV, or return entry(...))", fd.Name.Name)
		}
	}
}
