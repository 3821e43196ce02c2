package store

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestOpenCreatesFilesWithSharedModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tok")
	s := openTest(t, dir)
	if err := s.InitToken(context.Background(), soPIN, "modes"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{
		dir:                        0o770 | os.ModeDir,
		s.Path():                   0o660,
		s.Path() + "-wal":          0o660,
		s.Path() + "-shm":          0o660,
		filepath.Join(dir, DBName): 0o660,
	} {
		fi, err := os.Lstat(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode(), want)
		}
	}
}

func TestOpenRefusesBadPaths(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root string) string // returns the dir to open
	}{
		{"symlinked directory", func(t *testing.T, root string) string {
			real := filepath.Join(root, "real")
			os.Mkdir(real, 0o770)
			link := filepath.Join(root, "link")
			if err := os.Symlink(real, link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{"symlinked database", func(t *testing.T, root string) string {
			dir := filepath.Join(root, "tok")
			os.Mkdir(dir, 0o770)
			os.WriteFile(filepath.Join(root, "elsewhere.db"), nil, 0o660)
			if err := os.Symlink(filepath.Join(root, "elsewhere.db"), filepath.Join(dir, DBName)); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"symlinked WAL", func(t *testing.T, root string) string {
			dir := filepath.Join(root, "tok")
			os.Mkdir(dir, 0o770)
			if err := os.Symlink(filepath.Join(root, "x"), filepath.Join(dir, DBName+"-wal")); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"directory is a file", func(t *testing.T, root string) string {
			f := filepath.Join(root, "file")
			os.WriteFile(f, []byte("x"), 0o600)
			return f
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := tt.setup(t, root)
			before := listTree(t, root)
			s, err := Open(dir, testOptions(t))
			if err == nil {
				s.Close()
			}
			wantClass(t, err, errclass.FailedPrecondition, nil)
			if errclass.Hint(err) == "" {
				t.Errorf("error %q has no hint", err)
			}
			if after := listTree(t, root); after != before {
				t.Errorf("refused Open changed the file system:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func listTree(t *testing.T, root string) string {
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + fi.Mode().String() + ";")
		}
		return nil
	})
	return b.String()
}

func TestOpenRejectsInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		opts Options
	}{
		{"empty dir", "", Options{}},
		{"unknown KDF", "d", Options{KDF: KDF{Algorithm: "md5", Time: 1, MemoryKiB: 64, Threads: 1}}},
		{"zero KDF time", "d", Options{KDF: KDF{Algorithm: KDFArgon2id, MemoryKiB: 64, Threads: 1}}},
		{"KDF memory too small", "d", Options{KDF: KDF{Algorithm: KDFArgon2id, Time: 1, MemoryKiB: 4, Threads: 1}}},
		{"KDF memory too large", "d", Options{KDF: KDF{Algorithm: KDFArgon2id, Time: 1, MemoryKiB: 1<<20 + 1, Threads: 1}}},
		{"negative attempts", "d", Options{MaxPINAttempts: -1}},
		{"min PIN above max", "d", Options{MinPINLen: 9, MaxPINLen: 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := ""
			if tt.dir != "" {
				dir = filepath.Join(root, tt.dir)
			}
			s, err := Open(dir, tt.opts)
			if err == nil {
				s.Close()
			}
			wantClass(t, err, errclass.InvalidArgument, nil)
			if _, err := os.Stat(filepath.Join(root, "d")); err == nil {
				t.Error("refused Open created the token directory")
			}
		})
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	s.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, DBName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, testOptions(t))
	wantClass(t, err, errclass.FailedPrecondition, nil)
	if !strings.Contains(err.Error(), "99") {
		t.Errorf("error %q does not name the schema version", err)
	}
	db, _ = sql.Open("sqlite", filepath.Join(dir, DBName))
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != 99 {
		t.Errorf("schema version after refused Open = %d, %v; want 99 untouched", v, err)
	}
}

func TestReopenKeepsToken(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.InitToken(ctx, soPIN, "keep me"); err != nil {
		t.Fatal(err)
	}
	info1, _ := s.Info(ctx)
	s.Close()
	s2 := openTest(t, dir)
	info2, err := s2.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info2.Serial != info1.Serial || info2.Label != "keep me" || !info2.Initialized || len(info2.Serial) != 16 {
		t.Fatalf("after reopen: %+v, before: %+v", info2, info1)
	}
	if _, err := s2.Login(ctx, SO, soPIN); err != nil {
		t.Fatalf("SO login after reopen: %v", err)
	}
}

func TestInfoFlagsLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	flags := func() uint64 {
		t.Helper()
		ti, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ti.Flags
	}
	if f := flags(); f != 0 {
		t.Fatalf("fresh token flags %#x, want 0", f)
	}
	if err := s.InitToken(ctx, soPIN, "flags"); err != nil {
		t.Fatal(err)
	}
	if f := flags(); f != FlagTokenInitialized {
		t.Fatalf("after InitToken flags %#x", f)
	}
	so, err := s.Login(ctx, SO, soPIN)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InitUserPIN(ctx, so, userPIN); err != nil {
		t.Fatal(err)
	}
	if f := flags(); f != FlagTokenInitialized|FlagUserPINInitialized|FlagUserPINToBeChanged {
		t.Fatalf("after InitUserPIN flags %#x", f)
	}
	if err := s.SetPIN(ctx, User, userPIN, []byte("changed-pin")); err != nil {
		t.Fatal(err)
	}
	if f := flags(); f != FlagTokenInitialized|FlagUserPINInitialized {
		t.Fatalf("after SetPIN flags %#x", f)
	}
	ti, _ := s.Info(ctx)
	if ti.UserKDF != testKDF || ti.SOKDF != testKDF || ti.MaxPINAttempts != DefaultMaxPINAttempts {
		t.Fatalf("Info KDFs %+v %+v attempts %d", ti.SOKDF, ti.UserKDF, ti.MaxPINAttempts)
	}
}

func TestLoginPreconditions(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	_, err := s.Login(ctx, User, userPIN)
	wantClass(t, err, errclass.FailedPrecondition, ErrTokenNotInitialized)
	_, err = s.Login(ctx, SO, soPIN)
	wantClass(t, err, errclass.FailedPrecondition, ErrTokenNotInitialized)
	if err := s.InitToken(ctx, soPIN, "pre"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Login(ctx, User, userPIN)
	wantClass(t, err, errclass.FailedPrecondition, ErrUserPINNotInitialized)
	_, err = s.Login(ctx, UserType(7), userPIN)
	wantClass(t, err, errclass.InvalidArgument, nil)
}

// TestPINLockout walks a PIN through the retry counter: every wrong PIN is
// counted, a right one resets, MaxPINAttempts wrong ones lock, and a locked
// PIN is refused even when right, until the SO sets a new one.
func TestPINLockout(t *testing.T) {
	ctx := context.Background()
	opts := testOptions(t)
	opts.MaxPINAttempts = 3
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.InitToken(ctx, soPIN, "lock"); err != nil {
		t.Fatal(err)
	}
	so, _ := s.Login(ctx, SO, soPIN)
	if err := s.InitUserPIN(ctx, so, userPIN); err != nil {
		t.Fatal(err)
	}
	wrong := []byte("wrong-pin-123")
	state := func() (int, uint64) {
		ti, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ti.UserFailures, ti.Flags & (FlagUserPINCountLow | FlagUserPINFinalTry | FlagUserPINLocked)
	}
	steps := []struct {
		pin       []byte
		wantErr   error
		failures  int
		wantFlags uint64
	}{
		{wrong, ErrPINIncorrect, 1, FlagUserPINCountLow},
		{userPIN, nil, 0, 0},
		{wrong, ErrPINIncorrect, 1, FlagUserPINCountLow},
		{wrong, ErrPINIncorrect, 2, FlagUserPINCountLow | FlagUserPINFinalTry},
		{wrong, ErrPINIncorrect, 3, FlagUserPINLocked},
		{userPIN, ErrPINLocked, 3, FlagUserPINLocked},
		{wrong, ErrPINLocked, 3, FlagUserPINLocked},
	}
	for i, st := range steps {
		dk, err := s.Login(ctx, User, st.pin)
		if st.wantErr == nil {
			if err != nil || dk == nil {
				t.Fatalf("step %d: Login = %v", i, err)
			}
		} else {
			wantClass(t, err, errclass.PermissionDenied, st.wantErr)
			if strings.Contains(err.Error(), string(st.pin)) || strings.Contains(errclass.Hint(err), string(st.pin)) {
				t.Fatalf("step %d: error %q reveals the PIN", i, err)
			}
		}
		if n, f := state(); n != st.failures || f != st.wantFlags {
			t.Fatalf("step %d: failures %d flags %#x, want %d %#x", i, n, f, st.failures, st.wantFlags)
		}
	}
	// SetPIN with the right old PIN is refused too while locked.
	err = s.SetPIN(ctx, User, userPIN, []byte("new-pin-999"))
	wantClass(t, err, errclass.PermissionDenied, ErrPINLocked)
	// The SO unlocks by setting a new USER PIN.
	if err := s.InitUserPIN(ctx, so, []byte("fresh-pin-1")); err != nil {
		t.Fatal(err)
	}
	if n, f := state(); n != 0 || f != 0 {
		t.Fatalf("after InitUserPIN failures %d flags %#x", n, f)
	}
	if _, err := s.Login(ctx, User, []byte("fresh-pin-1")); err != nil {
		t.Fatalf("login with new PIN: %v", err)
	}
}

func TestSOLockoutBlocksReinit(t *testing.T) {
	ctx := context.Background()
	opts := testOptions(t)
	opts.MaxPINAttempts = 2
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.InitToken(ctx, soPIN, "so"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := s.Login(ctx, SO, []byte("bad-so-pin"))
		wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
	}
	ti, _ := s.Info(ctx)
	if ti.Flags&FlagSOPINLocked == 0 || ti.SOFailures != 2 {
		t.Fatalf("SO not locked: %+v", ti)
	}
	err = s.InitToken(ctx, soPIN, "again")
	wantClass(t, err, errclass.PermissionDenied, ErrPINLocked)
	if ti2, _ := s.Info(ctx); ti2.Label != "so" {
		t.Fatalf("refused re-init changed the label to %q", ti2.Label)
	}
}

func TestReinit(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	obj := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaLabel: []byte("k")}}
	if err := s.Create(ctx, dk, obj); err != nil {
		t.Fatal(err)
	}
	info0, _ := s.Info(ctx)

	// A wrong SO PIN is counted and changes nothing else.
	err := s.InitToken(ctx, []byte("not-the-so-pin"), "new label")
	wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
	info1, _ := s.Info(ctx)
	if info1.Label != info0.Label || objectCount(t, s) != 1 || info1.SOFailures != 1 || info1.Flags&FlagUserPINInitialized == 0 {
		t.Fatalf("after refused re-init: %+v", info1)
	}

	if err := s.InitToken(ctx, soPIN, "new label"); err != nil {
		t.Fatalf("re-init: %v", err)
	}
	info2, _ := s.Info(ctx)
	if info2.Label != "new label" || objectCount(t, s) != 0 ||
		info2.Flags != FlagTokenInitialized || info2.SOFailures != 0 || info2.Serial != info0.Serial {
		t.Fatalf("after re-init: %+v", info2)
	}
	_, err = s.Login(ctx, User, userPIN)
	wantClass(t, err, errclass.FailedPrecondition, ErrUserPINNotInitialized)

	// The old data key is stale for writes and reads.
	err = s.Create(ctx, dk, &Object{Class: ckoSecret, Private: true})
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	so, err := s.Login(ctx, SO, soPIN)
	if err != nil {
		t.Fatalf("SO login after re-init: %v", err)
	}
	if err := s.InitUserPIN(ctx, so, userPIN); err != nil {
		t.Fatal(err)
	}
	dk2, _ := s.Login(ctx, User, userPIN)
	o2 := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaLabel: []byte("k2")}}
	if err := s.Create(ctx, dk2, o2); err != nil {
		t.Fatal(err)
	}
	if o2.Handle <= obj.Handle {
		t.Fatalf("handle %d reused after re-init (old %d)", o2.Handle, obj.Handle)
	}
	_, err = s.Get(ctx, dk, o2.Handle)
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	_, err = s.List(ctx, dk, Filter{})
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	_, err = s.Get(ctx, so, o2.Handle)
	if err != nil {
		t.Fatalf("SO key reads private objects (engine enforces the PKCS#11 rule): %v", err)
	}
}

func TestInitTokenBadInput(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		pin   []byte
		label string
	}{
		{"label too long", soPIN, strings.Repeat("x", 33)},
		{"label control char", soPIN, "bad\nlabel"},
		{"label not UTF-8", soPIN, "bad\xff"},
		{"PIN too short", []byte("123"), "ok"},
		{"PIN too long", bytes.Repeat([]byte("9"), 129), "ok"},
		{"PIN empty", nil, "ok"},
	}
	s := openTest(t, t.TempDir())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.InitToken(ctx, tt.pin, tt.label)
			wantClass(t, err, errclass.InvalidArgument, nil)
			if errclass.Hint(err) == "" {
				t.Errorf("error %q has no hint", err)
			}
			if ti, _ := s.Info(ctx); ti.Initialized || ti.Generation != 0 {
				t.Fatalf("refused InitToken changed state: %+v", ti)
			}
		})
	}
	// 32 bytes with padding blanks is fine; the blanks are dropped.
	if err := s.InitToken(ctx, soPIN, strings.Repeat("y", 32)+"   "); err != nil {
		t.Fatal(err)
	}
}

func TestSetPIN(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	o := &Object{Class: ckoSecret, Private: true, Attrs: map[uint32][]byte{ckaValue: []byte("v")}}
	if err := s.Create(ctx, dk, o); err != nil {
		t.Fatal(err)
	}
	newPIN := []byte("brand-new-pin")

	err := s.SetPIN(ctx, User, userPIN, []byte("abc"))
	wantClass(t, err, errclass.InvalidArgument, ErrPINLen)
	if ti, _ := s.Info(ctx); ti.UserFailures != 0 {
		t.Fatal("a bad new PIN was counted as a failure")
	}
	err = s.SetPIN(ctx, User, []byte("wrong-old-pin"), newPIN)
	wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
	if ti, _ := s.Info(ctx); ti.UserFailures != 1 {
		t.Fatalf("wrong old PIN counted %d times, want 1", ti.UserFailures)
	}
	if err := s.SetPIN(ctx, User, userPIN, newPIN); err != nil {
		t.Fatal(err)
	}
	_, err = s.Login(ctx, User, userPIN)
	wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
	dk2, err := s.Login(ctx, User, newPIN)
	if err != nil {
		t.Fatal(err)
	}
	// Same data key: objects stay readable by both keys.
	for _, k := range []*DataKey{dk, dk2} {
		if got, err := s.Get(ctx, k, o.Handle); err != nil || string(got.Attrs[ckaValue]) != "v" {
			t.Fatalf("Get after SetPIN: %v", err)
		}
	}
	if err := s.SetPIN(ctx, SO, soPIN, []byte("new-so-pin")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Login(ctx, SO, []byte("new-so-pin")); err != nil {
		t.Fatal(err)
	}
}

func TestInitUserPINNeedsSOKey(t *testing.T) {
	ctx := context.Background()
	s, dk := newToken(t)
	err := s.InitUserPIN(ctx, nil, userPIN)
	wantClass(t, err, errclass.PermissionDenied, ErrLoginRequired)
	err = s.InitUserPIN(ctx, dk, userPIN)
	wantClass(t, err, errclass.PermissionDenied, nil)
	so, _ := s.Login(ctx, SO, soPIN)
	so.Destroy()
	err = s.InitUserPIN(ctx, so, userPIN)
	wantClass(t, err, errclass.FailedPrecondition, ErrStaleDataKey)
	so2, _ := s.Login(ctx, SO, soPIN)
	err = s.InitUserPIN(ctx, so2, []byte("x"))
	wantClass(t, err, errclass.InvalidArgument, ErrPINLen)
}

// TestKDFParametersAreStoredPerWrap raises the KDF cost between two opens:
// the old wrap keeps working with its own parameters, SetPIN moves it to the
// new ones.
func TestKDFParametersAreStoredPerWrap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.InitToken(ctx, soPIN, "kdf"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	opts := testOptions(t)
	opts.KDF = KDF{Algorithm: KDFArgon2id, Time: 2, MemoryKiB: 128, Threads: 2}
	s2, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Login(ctx, SO, soPIN); err != nil {
		t.Fatalf("login with the old parameters: %v", err)
	}
	if ti, _ := s2.Info(ctx); ti.SOKDF != testKDF {
		t.Fatalf("SO KDF %+v, want the stored %+v", ti.SOKDF, testKDF)
	}
	if err := s2.SetPIN(ctx, SO, soPIN, soPIN); err != nil {
		t.Fatal(err)
	}
	if ti, _ := s2.Info(ctx); ti.SOKDF != opts.KDF {
		t.Fatalf("SO KDF after SetPIN %+v, want %+v", ti.SOKDF, opts.KDF)
	}
	if _, err := s2.Login(ctx, SO, soPIN); err != nil {
		t.Fatal(err)
	}
}

// TestTamperedPINRecord lowers the stored KDF cost: the wrap is bound to its
// parameters, so the right PIN no longer opens it.
func TestTamperedPINRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir)
	if err := s.InitToken(ctx, soPIN, "tamper"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.wdb.Exec(`UPDATE pin SET kdf_memory = 32 WHERE user = 0`); err != nil {
		t.Fatal(err)
	}
	_, err := s.Login(ctx, SO, soPIN)
	wantClass(t, err, errclass.PermissionDenied, ErrPINIncorrect)
}

// TestCorruptKDFParameters stores parameters no valid wrap can have: the
// login reports data loss rather than running an absurd derivation.
func TestCorruptKDFParameters(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, t.TempDir())
	if err := s.InitToken(ctx, soPIN, "kdf"); err != nil {
		t.Fatal(err)
	}
	execSQL(t, s, `UPDATE pin SET kdf_memory = 0 WHERE user = 0`)
	_, err := s.Login(ctx, SO, soPIN)
	wantClass(t, err, errclass.DataLoss, nil)
	if ti, _ := s.Info(ctx); ti.SOFailures != 0 {
		t.Fatal("a corrupt record was counted as a wrong PIN")
	}
}
