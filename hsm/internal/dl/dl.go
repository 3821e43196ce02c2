// Package dl loads a vendor host library at run time with dlopen(3) and
// resolves its symbols with dlsym(3). It holds no vendor knowledge: the
// backends in hsm/cca and hsm/ep11 say which files to try, which symbols
// they need, and which package ships the library, and they declare and call
// the C prototypes themselves.
//
// No vendor header or library is needed to build: the library is found only
// when a program asks for it, and a missing file or symbol is an error the
// caller turns into a start-up message naming the file, the package and the
// configuration line.
package dl

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

static void *pkcshsm_dlopen(const char *name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL); }
static void *pkcshsm_dlsym(void *h, const char *name) { dlerror(); return dlsym(h, name); }
static const char *pkcshsm_dlerror(void) { return dlerror(); }
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// dlerror is per thread in glibc but not every libc documents it so; one
// lock keeps each open or lookup and the read of its message together.
var mu sync.Mutex

// Library is a loaded shared object.
type Library struct {
	// Path is the name dlopen accepted (a bare name is searched by the
	// dynamic loader, ld.so(8)).
	Path   string
	handle unsafe.Pointer
}

// OpenError says why none of the candidate files could be loaded.
type OpenError struct {
	Tried   []string
	Reasons []string // dlerror text per candidate
}

func (e *OpenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cannot load %s", strings.Join(e.Tried, " or "))
	if len(e.Reasons) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(e.Reasons, "; "))
	}
	return b.String()
}

// SymbolError names a symbol the library lacks.
type SymbolError struct {
	Path, Symbol, Reason string
}

func (e *SymbolError) Error() string {
	return fmt.Sprintf("%s has no symbol %s (%s)", e.Path, e.Symbol, e.Reason)
}

// Open loads the first of names that dlopen accepts, in order, with
// RTLD_NOW so that a library with unresolved dependencies fails here and
// not in the middle of a call.
func Open(names ...string) (*Library, error) {
	mu.Lock()
	defer mu.Unlock()
	oe := &OpenError{Tried: names}
	for _, n := range names {
		cn := C.CString(n)
		h := C.pkcshsm_dlopen(cn)
		C.free(unsafe.Pointer(cn))
		if h != nil {
			return &Library{Path: n, handle: h}, nil
		}
		oe.Reasons = append(oe.Reasons, C.GoString(C.pkcshsm_dlerror()))
	}
	return nil, oe
}

// Sym returns the address of name.
func (l *Library) Sym(name string) (unsafe.Pointer, error) {
	mu.Lock()
	defer mu.Unlock()
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	p := C.pkcshsm_dlsym(l.handle, cn)
	if p == nil {
		reason := "not exported"
		if msg := C.pkcshsm_dlerror(); msg != nil {
			reason = C.GoString(msg)
		}
		return nil, &SymbolError{Path: l.Path, Symbol: name, Reason: reason}
	}
	return p, nil
}

// Syms resolves every name, all or nothing, as openCryptoki does at token
// start-up: the first missing symbol is the error.
func (l *Library) Syms(names ...string) (map[string]unsafe.Pointer, error) {
	m := make(map[string]unsafe.Pointer, len(names))
	for _, n := range names {
		p, err := l.Sym(n)
		if err != nil {
			return nil, err
		}
		m[n] = p
	}
	return m, nil
}

// Close unloads the library. Callers close only after every call into it
// has returned.
func (l *Library) Close() error {
	mu.Lock()
	defer mu.Unlock()
	if l.handle == nil {
		return nil
	}
	if C.dlclose(l.handle) != 0 {
		return fmt.Errorf("dlclose %s: %s", l.Path, C.GoString(C.pkcshsm_dlerror()))
	}
	l.handle = nil
	return nil
}
