// Package testenv is the one harness of the integration tests: it builds
// the real binaries once per `go test` run, makes a temporary root with the
// simulated adapters and tokens, and starts the daemon, applications and
// the command line tools there, on pipes or on a pseudo terminal. Every
// process and directory it makes is cleaned up by t.Cleanup.
//
// The API, in the order a test uses it:
//
//	bin := testenv.Bin(t, "pkcshsm_mk_change")     // a built binary
//	prog := testenv.Program(t, "runtime/internal/fakeapp") // any other program
//	r := testenv.NewRoot(t, testenv.CCA(2))        // a root: adapters, pkcshsm.conf
//	r.Token(2, 100)                                // init slot 2's token, 100 AES keys
//	d := r.Daemon()                                // pkcshsmd, its sockets ready
//	a := r.App([]uint{2})                          // p11load on slot 2, its keys ready
//	res := r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "list")
//	term := r.Terminal("pkcshsm_mk_change", "reencipher", ...) // on a pty
//	c := r.Copy(t)                                 // a copy of a prepared root
//	dl := testenv.StartDialog(t, cmd)              // a line-answering process
//
// TestMain functions use BinDir and ProgramPath. Roots live under a short
// path of the system temporary directory (socket paths are limited to 107
// bytes), world-readable for processes of another uid. Only test files
// import this package (importrules_test.go).
//
// # Binaries
//
// The binaries (cmd/pkcshsm, cmd/pkcshsm_mk_change, cmd/pkcshsmd,
// cmd/hsmsim, cmd/p11load) are built together into a directory under the
// system temporary directory whose name is a hash of the module's source
// files and the build tags. Every test package of one `go test ./...` run
// sees the same sources, so the first package to need them builds them
// (under a file lock) and the others reuse them; a change to any source file
// makes a new directory. Directories not used for a day are removed.
// Program does the same for one package with go build flags (-race,
// -buildmode=c-shared), hashing the package's own directory too (test
// programs live under testdata, which the binaries' hash leaves out).
package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

// Commands are the binaries Bin builds, by name (their cmd/ directory).
var Commands = []string{"pkcshsm", "pkcshsm_mk_change", "pkcshsmd", "hsmsim", "p11load"}

// ModuleRoot returns the directory of the module's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

var (
	buildMu   sync.Mutex
	buildDirs = map[string]string{} // tags → directory
)

// Bin returns the path of the named command (one of Commands), built with
// the given build tags (e.g. "failpoints").
func Bin(t testing.TB, name string, tags ...string) string {
	t.Helper()
	dir, err := BinDir(tags...)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name)
}

// BinDir returns the directory holding every command of Commands built
// with tags, building them if this source tree has not been built yet.
// It is for TestMain functions and scripts (PATH); tests use Bin.
func BinDir(tags ...string) (string, error) {
	sort.Strings(tags)
	key := strings.Join(tags, ",")
	return cached("pkcshsm-testbin-", key, "", func(root, tmp string) error {
		args := []string{"build", "-o", tmp + string(os.PathSeparator)}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		for _, c := range Commands {
			args = append(args, "./cmd/"+c)
		}
		return goBuild(root, args)
	})
}

// Program returns the path of one more program the tests run, built from
// the module's package pkg (a directory relative to the module root, such
// as "runtime/internal/fakeapp" or a test program under a testdata
// directory) with the go build flags (such as "-race" or
// "-buildmode=c-shared"), once per source tree like Bin. The file is
// named after the package's directory, with ".so" for a c-shared module.
func Program(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	p, err := ProgramPath(pkg, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ProgramPath is Program for TestMain functions.
func ProgramPath(pkg string, flags ...string) (string, error) {
	pkg = filepath.Clean(pkg)
	name := filepath.Base(pkg)
	if slices.Contains(flags, "-buildmode=c-shared") {
		name += ".so"
	}
	key := "program " + pkg + " " + strings.Join(flags, " ")
	dir, err := cached("pkcshsm-testprog-", key, pkg, func(root, tmp string) error {
		args := append(append([]string{"build"}, flags...), "-o", filepath.Join(tmp, name), "./"+pkg)
		return goBuild(root, args)
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// cached returns the directory prefix+hash, where hash covers the module's
// sources, key, and every file below the module's directory extra (a
// program's own directory, which may be testdata). The first caller of a
// go test run builds it with build (into a temporary directory renamed into
// place), under a file lock; the others reuse it.
func cached(prefix, key, extra string, build func(root, tmp string) error) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if d, ok := buildDirs[prefix+key]; ok {
		return d, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	sum, err := sourceHash(root, key)
	if err != nil {
		return "", err
	}
	if extra != "" {
		if sum, err = dirHash(filepath.Join(root, extra), sum); err != nil {
			return "", err
		}
	}
	dir := filepath.Join(os.TempDir(), prefix+sum)
	lock := flock.New(dir + ".lock")
	if err := lock.Lock(); err != nil {
		return "", fmt.Errorf("testenv: lock %s: %w", lock.Path(), err)
	}
	defer lock.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "ok")); err != nil {
		tmp, err := os.MkdirTemp(os.TempDir(), "pkcshsm-testbuild-tmp")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		if err := build(root, tmp); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, "ok"), nil, 0o644); err != nil {
			return "", err
		}
		// World-readable: tests run the binaries as another user too.
		if err := os.Chmod(tmp, 0o755); err != nil {
			return "", err
		}
		os.RemoveAll(dir)
		if err := os.Rename(tmp, dir); err != nil {
			return "", err
		}
		removeStale(prefix, dir)
	}
	now := time.Now()
	os.Chtimes(dir, now, now) // in use: keep it
	buildDirs[prefix+key] = dir
	return dir, nil
}

func goBuild(root string, args []string) error {
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testenv: go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// sourceHash hashes every file the binaries could be built from (Go and C
// sources, go.mod, go.sum), by path and content, with the tags.
func sourceHash(root, tags string) (string, error) {
	h := sha256.New()
	// The platform too: scripts/test-s390x.sh builds the same sources for
	// linux/s390x (GOARCH, CC), and the two runs must not share binaries.
	fmt.Fprintf(h, "tags=%s\nplatform=%s/%s cc=%s cgo=%s\n", tags, runtime.GOOS, runtime.GOARCH, os.Getenv("CC"), os.Getenv("CGO_ENABLED"))
	err := hashFiles(h, root, root, func(p string, d fs.DirEntry) bool {
		name := d.Name()
		if d.IsDir() {
			return p == root || !(strings.HasPrefix(name, ".") || name == "testdata" || name == "build")
		}
		if strings.HasSuffix(name, "_test.go") {
			return false
		}
		switch filepath.Ext(name) {
		case ".go", ".c", ".h", ".s":
			return true
		}
		return name == "go.mod" || name == "go.sum"
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// dirHash adds every regular file below dir, by path and content, to the
// hash sum.
func dirHash(dir, sum string) (string, error) {
	h := sha256.New()
	h.Write([]byte(sum))
	if err := hashFiles(h, dir, dir, func(string, fs.DirEntry) bool { return true }); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// hashFiles writes every regular file below dir that keep selects (a
// directory keep refuses is skipped whole) to h: its path relative to base,
// its size and its content.
func hashFiles(h io.Writer, base, dir string, keep func(p string, d fs.DirEntry) bool) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !keep(p, d) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
		return nil
	})
}

// removeStale removes build directories of other source trees unused for
// a day.
func removeStale(prefix, keep string) {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range old {
		if d == keep || strings.HasSuffix(d, ".lock") {
			continue
		}
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(d)
			os.Remove(d + ".lock")
		}
	}
}
