package ep11

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// stubLibrary builds a shared object exporting names (int-returning
// no-ops unless body gives a definition) and returns its path.
func stubLibrary(t *testing.T, names []string, body map[string]string) string {
	t.Helper()
	var src strings.Builder
	src.WriteString("#include <stdint.h>\n#include <string.h>\n")
	for _, n := range names {
		if b, ok := body[n]; ok {
			src.WriteString(b + "\n")
			continue
		}
		src.WriteString("long " + n + "(void) { return 0; }\n")
	}
	dir := t.TempDir()
	c := filepath.Join(dir, "stub.c")
	so := filepath.Join(dir, "libep11stub.so")
	if err := os.WriteFile(c, []byte(src.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(compiler(), "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return so
}

func versionBody(v uint32) string {
	return `unsigned long m_get_xcp_info(void *p, unsigned long *n, unsigned int q, unsigned int s, uint64_t t) {
	uint32_t v = ` + itoa(v) + `u; if (q != 0xff000001u || *n < 4) return 0x7; memcpy(p, &v, 4); *n = 4; return 0; }`
}

func itoa(v uint32) string {
	s := ""
	for {
		s = string(rune('0'+v%10)) + s
		v /= 10
		if v == 0 {
			return s
		}
	}
}

func TestLoadMissingLibrary(t *testing.T) {
	t.Setenv(EnvLibrary, "/nonexistent/libep11.so.4")
	_, err := Load("")
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !strings.Contains(err.Error(), "/nonexistent/libep11.so.4") || !strings.Contains(err.Error(), "hsm-backend = host") {
		t.Errorf("error %q", err)
	}
	if h := errclass.Hint(err); !strings.Contains(h, "ep11-host") || !strings.Contains(h, EnvLibrary) {
		t.Errorf("hint %q", h)
	}
	if errclass.Of(err) != errclass.FailedPrecondition {
		t.Errorf("class %s", errclass.Of(err))
	}
}

func TestSearchOrder(t *testing.T) {
	// Without an override every name of openCryptoki's order is tried;
	// the error lists them all when none loads (no library on this host).
	t.Setenv(EnvLibrary, "")
	if os.Getenv("LD_LIBRARY_PATH") != "" {
		t.Setenv("LD_LIBRARY_PATH", "")
	}
	l, err := Load("")
	if err == nil {
		l.Close()
		t.Skip("an EP11 host library is installed on this machine")
	}
	want := "cannot load " + strings.Join(LibraryNames, " or ") + " ("
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not try %q", err, want)
	}
}

func TestLoadMissingSymbol(t *testing.T) {
	var names []string
	for _, f := range functions {
		if f != "m_admin" && f != "m_get_xcp_info" {
			names = append(names, f)
		}
	}
	names = append(names, "m_get_xcp_info")
	so := stubLibrary(t, names, map[string]string{"m_get_xcp_info": versionBody(0x00040100)})
	_, err := Load(so)
	if err == nil || !strings.Contains(err.Error(), "m_admin") || !strings.Contains(err.Error(), so) {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadVersion(t *testing.T) {
	for _, tc := range []struct {
		raw  uint32
		want string
		ok   bool
	}{{0x00040102, "4.1.2", true}, {0x00020000, "2.0.0", true}, {0x00000100, "1.0.0", false}, {0x00010203, "1.2.3", false}} {
		so := stubLibrary(t, functions, map[string]string{"m_get_xcp_info": versionBody(tc.raw)})
		l, err := Load(so)
		if tc.ok != (err == nil) {
			t.Errorf("version 0x%08x: err = %v", tc.raw, err)
		}
		if err == nil {
			if l.Version() != tc.want {
				t.Errorf("Version() = %s, want %s", l.Version(), tc.want)
			}
			l.Close()
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q does not name version %s", err, tc.want)
		}
	}
}

func TestInitFailure(t *testing.T) {
	so := stubLibrary(t, functions, map[string]string{
		"m_init":         "int m_init(void) { return -3; }",
		"m_get_xcp_info": versionBody(0x00040000),
	})
	if _, err := Load(so); err == nil || !strings.Contains(err.Error(), "m_init") {
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
