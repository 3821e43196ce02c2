package cca

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm/internal/dl"
)

// Loading the CCA host library follows openCryptoki's CCA token
// (host-libraries.md §1.1, §1.2): dlopen of the bare name libcsulcca.so,
// every verb resolved before first use, the version read with CSUACFV and
// refused below 7.1.
const (
	// LibraryName is the file the dynamic loader searches for.
	LibraryName = "libcsulcca.so"
	// EnvLibrary overrides the file (a path or a bare name).
	EnvLibrary = "PKCSHSM_CCA_LIBRARY"
	// Package names what ships the library.
	Package = "IBM's CCA host library package csulcca (csulcca-<v>.s390x.rpm or csulcca_<v>_s390x.deb from the CEX7S/CEX8S CCA Support Program at ibm.com/security/cryptocards)"
	// MinMajor and MinMinor are the oldest library accepted, as
	// openCryptoki's CCA_MIN_VERSION/CCA_MIN_RELEASE.
	MinMajor, MinMinor = 7, 1
)

// verbs are the entry points pkcshsm calls. They are resolved all at once
// when the library is loaded, so a library lacking one fails at start-up,
// never in the middle of a pass.
var verbs = []string{
	"CSUACFV", "CSUACFQ", "CSUACRA", "CSUACRD",
	"CSNBKGN", "CSNBKTB2", "CSNBKGN2", "CSNDPKB", "CSNDPKG", "CSNDPKX",
	"CSNBSAE", "CSNBSAD", "CSNBENC", "CSNBDEC", "CSNDPKE", "CSNDPKD",
	"CSNDDSG", "CSNDDSV", "CSNBHMG", "CSNBHMV",
	"CSNBKTC", "CSNBKTC2", "CSNDKTC",
}

// Library is a loaded CCA host library.
type Library struct {
	lib     *dl.Library
	fn      map[string]unsafe.Pointer
	version [3]int
	gate    domainGate
}

// loadError is the start-up error for the CCA library: what failed, the
// file, the package that ships it and the way out.
func loadError(what error) error {
	return errclass.Newh(errclass.FailedPrecondition,
		fmt.Sprintf("install %s so that the dynamic loader finds %s (ldconfig -p | grep csulcca), "+
			"or set %s to its path; without CEX*C adapters, set `hsm-backend = simulator` in pkcshsm.conf",
			Package, LibraryName, EnvLibrary),
		"CCA host library (hsm-backend = host): %w", what)
}

// Load loads the CCA host library: path if not empty, else
// $PKCSHSM_CCA_LIBRARY, else libcsulcca.so.
func Load(path string) (*Library, error) {
	if path == "" {
		path = os.Getenv(EnvLibrary)
	}
	if path == "" {
		path = LibraryName
	}
	// IBM: the library reads CSU_DEFAULT_DOMAIN once, when it starts, and
	// allows selecting a domain per call (CSUACRA DOMNnnnn) only with
	// DOM-ANY ("Domain selection capabilities"; host-libraries.md §1.4).
	if _, set := os.LookupEnv("CSU_DEFAULT_DOMAIN"); !set {
		if err := os.Setenv("CSU_DEFAULT_DOMAIN", "DOM-ANY"); err != nil {
			return nil, loadError(err)
		}
	}
	lib, err := dl.Open(path)
	if err != nil {
		return nil, loadError(err)
	}
	fn, err := lib.Syms(verbs...)
	if err != nil {
		lib.Close()
		var se *dl.SymbolError
		if errors.As(err, &se) {
			return nil, loadError(fmt.Errorf("%s does not export the verb %s: it is not the IBM CCA host library, or one older than %d.%d", se.Path, se.Symbol, MinMajor, MinMinor))
		}
		return nil, loadError(err)
	}
	l := &Library{lib: lib, fn: fn}
	l.gate.init()
	v, err := l.queryVersion()
	if err != nil {
		lib.Close()
		return nil, loadError(err)
	}
	if v[0] < MinMajor || v[0] == MinMajor && v[1] < MinMinor {
		lib.Close()
		return nil, loadError(fmt.Errorf("%s is version %d.%d.%d; pkcshsm needs %d.%d or later", path, v[0], v[1], v[2], MinMajor, MinMinor))
	}
	l.version = v
	return l, nil
}

// Path is the file the library was loaded from.
func (l *Library) Path() string { return l.lib.Path }

// Version is the library version CSUACFV reported.
func (l *Library) Version() string {
	return fmt.Sprintf("%d.%d.%d", l.version[0], l.version[1], l.version[2])
}

// Close unloads the library.
func (l *Library) Close() error { return l.lib.Close() }

// queryVersion calls CSUACFV (Cryptographic Facility Version): the
// version string "V.R.M", NUL-terminated, in a 20-byte buffer
// (host-libraries.md §1.2).
func (l *Library) queryVersion() ([3]int, error) {
	c := newCall("CSUACFV")
	n := c.long(20)
	out := c.buf(nil, 20)
	codes, err := c.invoke(l.fn["CSUACFV"])
	if err != nil {
		return [3]int{}, err
	}
	if codes.Return != 0 {
		return [3]int{}, fmt.Errorf("CSUACFV failed with return code %d, reason %d", codes.Return, codes.Reason)
	}
	s := string(out.data[:min(max(n.long, 0), int64(len(out.data)))])
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimSpace(s)
	var v [3]int
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("CSUACFV returned %q, not a V.R.M version", s)
	}
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return v, fmt.Errorf("CSUACFV returned %q, not a V.R.M version", s)
		}
		v[i] = x
	}
	return v, nil
}

// verb calls one verb with no adapter selection of its own.
func (l *Library) verb(c *call) (Codes, error) {
	fn, ok := l.fn[c.verb]
	if !ok {
		return Codes{}, errclass.New(errclass.Internal, "CCA verb %s was not resolved", c.verb)
	}
	return c.invoke(fn)
}

// domainGate serialises domain selection. IBM scopes coprocessor
// allocation per thread and domain allocation per process (CSUACRA,
// host-libraries.md §1.4, §3.1): calls on one domain run at once, each on
// its own locked OS thread with its own adapter, the domain allocated
// once by the first of them and released (DOMN-DEF) by the last; a call
// on another domain waits until the domain is free.
type domainGate struct {
	mu    sync.Mutex
	cond  *sync.Cond
	dom   int // allocated domain, -1 none, exclusive for an adapter scan
	users int
}

const exclusive = -2

func (g *domainGate) init() {
	g.cond = sync.NewCond(&g.mu)
	g.dom = -1
}

// enter waits until domain d (or, for exclusive, nothing) may be used
// and, as the first user, runs allocate under the gate's lock.
func (g *domainGate) enter(d int, allocate func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.users > 0 && (g.dom != d || d == exclusive) {
		g.cond.Wait()
	}
	if g.users == 0 {
		if err := allocate(); err != nil {
			return err
		}
		g.dom = d
	}
	g.users++
	return nil
}

// leave ends a use; the last user runs release under the gate's lock.
func (g *domainGate) leave(release func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var err error
	if g.users == 1 {
		err = release()
		g.dom = -1
	}
	g.users--
	g.cond.Broadcast()
	return err
}

// onAPQN runs fn with adapter (1-based, the library's CRPnn) allocated to
// the calling thread and domain to the process, then releases them. fn's
// verb calls run on the same OS thread.
func (l *Library) onAPQN(adapter int, domain uint16, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dom := fmt.Sprintf("DOMN%04d", domain)
	if err := l.gate.enter(int(domain), func() error { return l.resource("CSUACRA", "", dom) }); err != nil {
		return err
	}
	res := fmt.Sprintf("CRP%02d", adapter)
	err := l.resource("CSUACRA", res, "DEVICE")
	if err == nil {
		err = fn()
		if derr := l.resource("CSUACRD", res, "DEVICE"); err == nil {
			err = derr
		}
	}
	if derr := l.gate.leave(func() error { return l.resource("CSUACRD", "", "DOMN-DEF") }); err == nil {
		err = derr
	}
	return err
}

// resource calls CSUACRA or CSUACRD: rule array then resource name
// (IBM "Cryptographic Resource Allocate (CSUACRA)" / "Deallocate
// (CSUACRD)"; host-libraries.md §1.4).
func (l *Library) resource(verb, name string, rules ...string) error {
	c := newCall(verb)
	c.rules(len(rules), rules...)
	c.long(int64(len(name)))
	c.buf([]byte(name), max(len(name), 8))
	codes, err := l.verb(c)
	if err != nil {
		return err
	}
	if codes.Return != 0 {
		what := strings.Join(rules, " ")
		if name != "" {
			what = "adapter " + name + " " + what
		}
		return codeError(verb, what, codes)
	}
	return nil
}

// adapterSerial (called by scanAdapters, on its locked thread with no
// domain allocated) allocates adapter CRPnn to the calling thread, reads its
// serial number (CSUACFQ STATCRD2) and releases it. No domain is
// selected: STATCRD2 describes the card.
func (l *Library) adapterSerial(n int) (string, error) {
	res := fmt.Sprintf("CRP%02d", n)
	if err := l.resource("CSUACRA", res, "DEVICE"); err != nil {
		return "", err
	}
	_, serial, err := l.adapterInfo("adapter " + res)
	if derr := l.resource("CSUACRD", res, "DEVICE"); err == nil {
		err = derr
	}
	return serial, err
}
