package state

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// DamagedError reports an operation that exists but cannot be read: its
// file and its copy both fail their checks (checksum, format, file type),
// or one fails and the other is missing. It is of class DataLoss and
// names the operation, so a process that knew the operation keeps acting
// on the last state it read instead of treating the operation as ended.
//
// It is never returned for an operation that does not exist (NotFound),
// nor for one recovered from its copy.
type DamagedError struct {
	ID ID
	// Problems lists, per file, why it could not be used ("<path>: ...").
	Problems []error
}

func (e *DamagedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "master key change operation '%s' is unreadable", e.ID)
	for _, p := range e.Problems {
		b.WriteString("; ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *DamagedError) Unwrap() []error { return e.Problems }

// ErrClass classifies the error for errclass.Of.
func (e *DamagedError) ErrClass() errclass.Class { return errclass.DataLoss }

// Is makes errors.Is(err, errclass.DataLoss) true.
func (e *DamagedError) Is(target error) bool { return target == errclass.DataLoss }

// damagedHint says how to repair an unreadable operation. An entry under
// the operation's names that is not a regular file (a directory, symlink,
// FIFO ...) is never an operation file: the hint says to remove it first,
// as pkcshsm_mk_change(1) does.
func damagedHint(dir string, id ID) string {
	var stray []string
	for _, name := range []string{filepath.Join(dir, string(id)), filepath.Join(dir, string(id)+copySuffix)} {
		if fi, err := os.Lstat(name); err == nil && !fi.Mode().IsRegular() {
			stray = append(stray, kind(fi.Mode())+" "+name)
		}
	}
	remove := ""
	if len(stray) > 0 {
		remove = fmt.Sprintf("remove %s (pkcshsm_mk_change only writes regular files there), then ", strings.Join(stray, " and "))
	}
	return fmt.Sprintf("%[4]srestore %[1]s/%[2]s or its copy %[1]s/%[2]s%[3]s from a backup (either one that passes its "+
		"checksum is enough); until then do not set/activate the new master keys, and running applications keep "+
		"acting on the last state of '%[2]s' they read. See pkcshsm_mk_change(1), DAMAGED OPERATION FILES", dir, id, copySuffix, remove)
}
