package cca

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// stubLibrary builds a shared object exporting verbs (each a no-op unless
// body gives its C body) and returns its path.
func stubLibrary(t *testing.T, verbs []string, body map[string]string) string {
	t.Helper()
	if _, err := exec.LookPath(compiler()); err != nil {
		t.Fatalf("%s is needed to build the stub library: %v", compiler(), err)
	}
	var src strings.Builder
	src.WriteString("#include <string.h>\n")
	for _, v := range verbs {
		b := body[v]
		if b == "" {
			b = "*(long *)a[0] = 0; *(long *)a[1] = 0;"
		}
		// Every verb is void with pointer parameters; the stubs read them
		// through a variadic-free array view built by a wrapper.
		src.WriteString("void " + v + "(void *p0, void *p1, void *p2, void *p3, void *p4, void *p5, void *p6, void *p7) {\n")
		src.WriteString("\tvoid *a[8] = {p0, p1, p2, p3, p4, p5, p6, p7};\n\t(void)a;\n\t" + b + "\n}\n")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "stub.c")
	so := filepath.Join(dir, "libstub.so")
	if err := os.WriteFile(c, []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(compiler(), "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}

// versionBody makes CSUACFV answer v.
func versionBody(v string) string {
	return `*(long *)a[0] = 0; *(long *)a[1] = 0; memset(a[5], 0, *(long *)a[4]); strcpy((char *)a[5], "` + v + `");`
}

func TestLoadMissingLibrary(t *testing.T) {
	_, err := Load("/nonexistent/libcsulcca.so")
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"/nonexistent/libcsulcca.so", "hsm-backend = host"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	hint := errclass.Hint(err)
	for _, want := range []string{"csulcca", EnvLibrary, "hsm-backend = simulator"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q lacks %q", hint, want)
		}
	}
	if c := errclass.Of(err); c != errclass.FailedPrecondition {
		t.Errorf("class %s, want FailedPrecondition", c)
	}
}

func TestLoadEnvOverride(t *testing.T) {
	t.Setenv(EnvLibrary, "/nonexistent/override/libcca.so")
	_, err := Load("")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/override/libcca.so") {
		t.Fatalf("Load with %s set: %v", EnvLibrary, err)
	}
}

func TestLoadMissingSymbol(t *testing.T) {
	// Every verb but CSNBKTC2.
	var vs []string
	for _, v := range verbs {
		if v != "CSNBKTC2" {
			vs = append(vs, v)
		}
	}
	so := stubLibrary(t, vs, map[string]string{"CSUACFV": versionBody("7.2.0")})
	_, err := Load(so)
	if err == nil {
		t.Fatal("Load of a library lacking CSNBKTC2 succeeded")
	}
	if !strings.Contains(err.Error(), "CSNBKTC2") || !strings.Contains(err.Error(), so) {
		t.Fatalf("error %q does not name the symbol and the file", err)
	}
}

func TestLoadVersion(t *testing.T) {
	for _, tc := range []struct {
		version string
		ok      bool
	}{{"7.1.0", true}, {"8.4.12", true}, {"7.0.9", false}, {"6.9.9", false}, {"seven", false}} {
		so := stubLibrary(t, verbs, map[string]string{"CSUACFV": versionBody(tc.version)})
		l, err := Load(so)
		if tc.ok {
			if err != nil {
				t.Errorf("version %s: %v", tc.version, err)
				continue
			}
			if l.Version() != tc.version {
				t.Errorf("Version() = %s, want %s", l.Version(), tc.version)
			}
			l.Close()
			continue
		}
		if err == nil {
			l.Close()
			t.Errorf("version %s accepted", tc.version)
			continue
		}
		if !strings.Contains(err.Error(), tc.version) {
			t.Errorf("version %s: error %q does not name the version", tc.version, err)
		}
	}
}

func TestCSUACFVFailure(t *testing.T) {
	so := stubLibrary(t, verbs, map[string]string{"CSUACFV": `*(long *)a[0] = 12; *(long *)a[1] = 338;`})
	_, err := Load(so)
	if err == nil || !strings.Contains(err.Error(), "return code 12, reason 338") {
		t.Fatalf("err = %v", err)
	}
}

// compiler is $CC (a cross compiler when the tests run under qemu), else
// gcc.
func compiler() string {
	if cc := os.Getenv("CC"); cc != "" {
		return cc
	}
	return "gcc"
}
