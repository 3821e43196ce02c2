package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
)

// errAt returns an InvalidArgument error "file:line: message" with a hint.
func errAt(file string, line int, hint, format string, args ...any) error {
	return errclass.Newh(errclass.InvalidArgument, hint, "%s:%d: %s", file, line, fmt.Sprintf(format, args...))
}

// wrapAt prefixes err with "file:line: what: " keeping its class and hint.
func wrapAt(file string, line int, what string, err error) error {
	return errclass.As(errclass.Of(err), fmt.Errorf("%s:%d: %s: %w", file, line, what, err))
}

// readFile reads a configuration file, refusing world-writable files (any
// local user could change which adapters a token uses) and oversized ones.
// The checks apply to the opened file itself, so a rename between check
// and read cannot slip another file in.
func readFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errclass.Newh(errclass.NotFound,
			fmt.Sprintf("create the %s, or give the right path", what), "%s %s does not exist", what, path)
	}
	if err != nil {
		return nil, errclass.Newh(errclass.PermissionDenied, "check the permissions of the file and its directories",
			"cannot read %s %s: %w", what, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, errclass.Newh(errclass.PermissionDenied, "check the permissions of the file and its directories",
			"cannot read %s %s: %w", what, path, err)
	}
	if fi.IsDir() {
		return nil, errclass.Newh(errclass.InvalidArgument, "give the path of the file, not of its directory",
			"%s %s is a directory", what, path)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return nil, errclass.Newh(errclass.PermissionDenied, fmt.Sprintf("run: chmod o-w %s", path),
			"%s %s is world-writable; refusing to use it", what, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, errclass.Newh(errclass.PermissionDenied, "check the permissions of the file and its directories",
			"cannot read %s %s: %w", what, path, err)
	}
	if len(data) > maxFileSize {
		return nil, errclass.Newh(errclass.InvalidArgument, "configuration files are a few kilobytes; check the path",
			"%s %s is larger than %d bytes", what, path, maxFileSize)
	}
	return data, nil
}

// baseDir returns the absolute directory of a file name, for resolving
// names relative to the file. It falls back to the lexical directory when
// the working directory is unknown.
func baseDir(file string) string {
	dir := filepath.Dir(file)
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return dir
}

// resolveIn resolves name in dir: absolute names stay, relative ones are
// taken relative to dir.
func resolveIn(dir, name string) string {
	if filepath.IsAbs(name) {
		return filepath.Clean(name)
	}
	return filepath.Join(dir, name)
}

// seen remembers where a keyword was first given, to reject repeats.
type seen map[string]int

func (s seen) once(file string, n *node, name string) error {
	if first, ok := s[name]; ok {
		return errAt(file, n.line, fmt.Sprintf("remove one of the two %s lines", name),
			"%s is given twice (first on line %d)", name, first)
	}
	s[name] = n.line
	return nil
}

// Limits of the APQN pair lists (upstream EP11: MAX_APQN, and adapter and
// domain numbers of at most one byte each).
const (
	maxAPQNs      = 256
	maxAdapter    = 255
	maxPairDomain = 255
)

// apqnList turns a pair list node into an apqn.List.
func apqnList(file string, n *node) (apqn.List, error) {
	hint := fmt.Sprintf("list one \"adapter domain\" pair per line after %s, e.g. 0x0a 0x24, then END", n.key)
	if len(n.pairs) == 0 {
		return nil, errAt(file, n.line, hint, "%s lists no APQNs", n.key)
	}
	if len(n.pairs) > maxAPQNs {
		return nil, errAt(file, n.pairs[maxAPQNs].line, hint, "%s lists more than %d APQNs", n.key, maxAPQNs)
	}
	var l apqn.List
	where := map[apqn.ID]int{}
	for _, p := range n.pairs {
		if p.a > maxAdapter {
			return nil, errAt(file, p.line, "adapter numbers go from 0 to 255 (0xff)",
				"%s: adapter %d is out of range", n.key, p.a)
		}
		if p.b > maxPairDomain {
			return nil, errAt(file, p.line, "domain numbers go from 0 to 255 (0xff)",
				"%s: domain %d is out of range", n.key, p.b)
		}
		id := apqn.ID{Card: uint8(p.a), Domain: uint16(p.b)}
		if first, ok := where[id]; ok {
			return nil, errAt(file, p.line, "name each APQN once",
				"%s: APQN %s is listed twice (first on line %d)", n.key, id, first)
		}
		where[id] = p.line
		l = append(l, id)
	}
	return l, nil
}

// apqnNode renders an APQN list back as a pair list node.
func apqnNode(key string, l apqn.List) *node {
	n := &node{kind: kPairList, key: key, end: "END"}
	for _, id := range l {
		n.pairs = append(n.pairs, pair{a: uint64(id.Card), b: uint64(id.Domain)})
	}
	return n
}

// argument returns the value of a keyword that takes one: either
// "KEY = value" or the old style "KEY value" (two nodes on one line, the
// second a word or a quoted string). ok reports whether nodes[*i+1] was
// consumed.
func argument(nodes []*node, i int) (val string, quoted bool, consumed bool, ok bool) {
	n := nodes[i]
	switch n.kind {
	case kString:
		return n.str, true, false, true
	case kBare:
		return n.str, false, false, true
	case kBareConst:
		if i+1 < len(nodes) && nodes[i+1].line == n.line {
			switch a := nodes[i+1]; a.kind {
			case kStringConst:
				return a.str, true, true, true
			case kBareConst:
				return a.key, false, true, true
			}
		}
	}
	return "", false, false, false
}

// oneOf checks an enumerated value (case-sensitive, as upstream).
func oneOf(file string, n *node, key, val string, allowed ...string) error {
	for _, a := range allowed {
		if val == a {
			return nil
		}
	}
	hint := fmt.Sprintf("use one of %s (upper case)", strings.Join(allowed, ", "))
	for _, a := range allowed {
		if strings.EqualFold(val, a) {
			hint = fmt.Sprintf("values are case-sensitive: write %s", a)
		}
	}
	return errAt(file, n.line, hint, "%s: unknown value %q", key, val)
}
