package crashmatrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/failpoint"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

const (
	soPIN   = testenv.SOPIN
	userPIN = testenv.UserPIN
	module  = "github.com/pkcshsm/pkcshsm/cmd/"
)

var (
	ccaQ  = testenv.CCAAPQNs
	ep11Q = testenv.EP11APQNs
	// The slots: 2 is a CCA token, 4 an EP11 token.
	slots = []uint{2, 4}
	// The master key types the change replaces, per slot.
	changed = map[uint][]mkvp.Type{2: {mkvp.CCAAES, mkvp.CCAAPKA}, 4: {mkvp.EP11WK}}
	plain   = []byte("data encrypted before the master key change")
)

// ---- binaries ----

type binaries struct{ mk, daemon, load, pkcshsm string }

// build returns the binaries: the three processes of a rotation built
// with the failpoints tag, the key lister without (internal/testenv builds
// them once per go test run, shared with the other packages).
func build(t *testing.T) binaries {
	t.Helper()
	return binaries{mk: testenv.Bin(t, "pkcshsm_mk_change", "failpoints"), daemon: testenv.Bin(t, "pkcshsmd", "failpoints"),
		load: testenv.Bin(t, "p11load", "failpoints"), pkcshsm: testenv.Bin(t, "pkcshsm")}
}

// ---- the fixture: a root with tokens, keys and new master keys loaded ----

// sample is data encrypted with a token key before the change.
type sample struct {
	slot      uint
	label     string
	iv, ct    []byte
	isPrivate bool
}

type fixture struct {
	root     *testenv.Root // the template root, copied for every run
	oldP     map[mkvp.Type]mkvp.Pattern
	newP     map[mkvp.Type]mkvp.Pattern
	before   map[uint][]keyRow // per slot, from pkcshsm keys list --json
	samples  []sample
	mkArgs   []string // reencipher's options
	keyCount int
}

// newFixture makes the template root: simulated CCA and EP11 adapters, a
// CCA and an EP11 token, per token a public and a private AES key (the
// private one's attributes sealed), an EC key pair with a private,
// sensitive private key, and extra AES keys; data encrypted with every AES
// key; and the officer's new master keys loaded (EP11 committed).
func newFixture(t *testing.T, b binaries, extra int) *fixture {
	root := testenv.NewRootParallel(t, testenv.CCA(2), testenv.EP11(4))
	layout, dir := root.Layout, root.Layout.Root
	f := &fixture{root: root, before: map[uint][]keyRow{}}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: layout, NoAgent: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		id := tokenlib.SlotID(slot)
		if err := lib.InitToken(id, []byte(soPIN), fmt.Sprint("tok", slot)); err != nil {
			t.Fatal(err)
		}
		s, err := lib.OpenSession(id, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		must(t, lib.Login(s, ck.CKU_SO, []byte(soPIN)))
		must(t, lib.InitPIN(s, []byte(userPIN)))
		must(t, lib.Logout(s))
		must(t, lib.Login(s, ck.CKU_USER, []byte(userPIN)))
		for i := range 2 + extra {
			label := fmt.Sprintf("aes-%d", i)
			private := i%2 == 1
			k, err := lib.GenerateKey(s, tokenlib.Mechanism{Type: ck.CKM_AES_KEY_GEN}, []tokenlib.Attribute{
				tokenlib.Ulong(ck.CKA_VALUE_LEN, 32), tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.Bool(ck.CKA_PRIVATE, private),
				tokenlib.Bool(ck.CKA_ENCRYPT, true), tokenlib.Bool(ck.CKA_DECRYPT, true), tokenlib.String(ck.CKA_LABEL, label),
			})
			if err != nil {
				t.Fatal(err)
			}
			iv := bytes.Repeat([]byte{byte(i + 1)}, 16)
			ct, err := encrypt(lib, s, k, iv, plain)
			if err != nil {
				t.Fatal(err)
			}
			f.samples = append(f.samples, sample{slot: slot, label: label, iv: iv, ct: ct, isPrivate: private})
		}
		ecParams, _ := tokenlib.ECParams("P-256")
		_, _, err = lib.GenerateKeyPair(s, tokenlib.Mechanism{Type: ck.CKM_EC_KEY_PAIR_GEN},
			[]tokenlib.Attribute{tokenlib.Bytes(ck.CKA_EC_PARAMS, ecParams), tokenlib.Bool(ck.CKA_VERIFY, true), tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.String(ck.CKA_LABEL, "ec")},
			[]tokenlib.Attribute{tokenlib.Bool(ck.CKA_SIGN, true), tokenlib.Bool(ck.CKA_TOKEN, true), tokenlib.Bool(ck.CKA_PRIVATE, true),
				tokenlib.Bool(ck.CKA_SENSITIVE, true), tokenlib.String(ck.CKA_LABEL, "ec")})
		if err != nil {
			t.Fatal(err)
		}
		lib.CloseSession(s)
	}
	must(t, lib.Close())

	h, err := sim.Open(layout.SimDir(), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f.oldP, f.newP = map[mkvp.Type]mkvp.Pattern{}, map[mkvp.Type]mkvp.Pattern{}
	load := func(qs []apqn.ID, typ mkvp.Type, key []byte) {
		qi, err := h.Queue(ctx, qs[0])
		if err != nil {
			t.Fatal(err)
		}
		f.oldP[typ] = qi.MK[typ].Current.Pattern
		for _, q := range qs {
			p, err := h.LoadNew(ctx, q, typ, key, hsm.Part{})
			if err != nil {
				t.Fatalf("load new %s on %s: %v", typ, q, err)
			}
			f.newP[typ] = p
		}
	}
	load(ccaQ, mkvp.CCAAES, bytes.Repeat([]byte{0x5a}, 32))
	load(ccaQ, mkvp.CCAAPKA, bytes.Repeat([]byte{0xa5}, 32))
	load(ep11Q, mkvp.EP11WK, bytes.Repeat([]byte{0x3c}, 32))
	for _, q := range ep11Q {
		must(t, h.Commit(ctx, q))
	}
	must(t, h.Close())
	var qs []string
	for _, q := range append(slices.Clone(ccaQ), ep11Q...) {
		qs = append(qs, q.String())
	}
	f.mkArgs = []string{"-a", strings.Join(qs, ","), "-A", f.newP[mkvp.CCAAES].String(), "-p", f.newP[mkvp.CCAAPKA].String(),
		"-e", f.newP[mkvp.EP11WK].String()}
	for _, slot := range slots {
		f.before[slot] = listKeys(t, b, dir, slot)
		f.keyCount += len(f.before[slot])
		for _, k := range f.before[slot] {
			if k.Blobs.Reenc != nil || k.Blobs.Old != nil || k.Blobs.Current.MKVP != f.oldP[k.mkType(t)].String() {
				t.Fatalf("slot %d key %d before the change: %+v", slot, k.Handle, k.Blobs)
			}
		}
	}
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func encrypt(lib *tokenlib.Library, s tokenlib.SessionHandle, k tokenlib.ObjectHandle, iv, data []byte) ([]byte, error) {
	if err := lib.EncryptInit(s, tokenlib.Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, k); err != nil {
		return nil, err
	}
	out := make([]byte, len(data)+16)
	n, err := lib.Encrypt(s, data, out)
	return out[:n], err
}

func decrypt(lib *tokenlib.Library, s tokenlib.SessionHandle, k tokenlib.ObjectHandle, iv, data []byte) ([]byte, error) {
	if err := lib.DecryptInit(s, tokenlib.Mechanism{Type: ck.CKM_AES_CBC_PAD, Param: iv}, k); err != nil {
		return nil, err
	}
	out := make([]byte, len(data))
	n, err := lib.Decrypt(s, data, out)
	return out[:n], err
}

// ---- keys as pkcshsm keys list --json reports them ----

type blobPattern struct {
	MKType string `json:"mk_type"`
	MKVP   string `json:"mkvp"`
	Error  string `json:"error"`
}

type keyRow struct {
	Handle uint   `json:"handle"`
	Class  string `json:"class"`
	Label  string `json:"label"`
	Blobs  *struct {
		Current *blobPattern `json:"current"`
		Old     *blobPattern `json:"old"`
		Reenc   *blobPattern `json:"reenc"`
	} `json:"blobs"`
}

// mkType is the master key type of the key's CURRENT blob.
func (k keyRow) mkType(t *testing.T) mkvp.Type {
	typ, err := mkvp.ParseType(k.Blobs.Current.MKType)
	if err != nil {
		t.Fatalf("key %d: %v", k.Handle, err)
	}
	return typ
}

// listKeys runs the real pkcshsm keys list --json and returns the keys
// that have a secure key.
func listKeys(t *testing.T, b binaries, root string, slot uint) []keyRow {
	t.Helper()
	cmd := exec.Command(b.pkcshsm, "keys", "list", "--slot", fmt.Sprint(slot), "--json")
	cmd.Env = append(os.Environ(), paths.EnvRoot+"="+root)
	cmd.Stdin = strings.NewReader(userPIN + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pkcshsm keys list --slot %d: %v\n%s", slot, err, stderr.String())
	}
	var all []keyRow
	if err := json.Unmarshal(out, &all); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, out)
	}
	var rows []keyRow
	for _, k := range all {
		if k.Blobs == nil || k.Blobs.Current == nil {
			continue
		}
		for _, bp := range []*blobPattern{k.Blobs.Current, k.Blobs.Old, k.Blobs.Reenc} {
			if bp != nil && bp.Error != "" {
				t.Fatalf("slot %d key %d: unreadable blob: %s", slot, k.Handle, bp.Error)
			}
		}
		rows = append(rows, k)
	}
	return rows
}

// ---- processes ----

// proc is a background process of a run: the daemon or an application
// (a testenv.Process: killed at cleanup).
type proc struct {
	name string
	*testenv.Process
}

func start(t *testing.T, name string, env []string, stdin string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	return &proc{name: name, Process: testenv.Start(t, cmd)}
}

// killedBySIGKILL reports whether the process ended by SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// waitFor polls cond until it holds: the test waits by asking the
// processes, never by sleeping for a guessed time.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connected asks the daemon how many application processes it serves.
func connected(layout paths.Layout) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := admin.Dial(ctx, layout.AdminSocket())
	if err != nil {
		return -1, nil // not up yet
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return -1, nil
	}
	return len(st.Processes), nil
}

// traceNames reads a trace file: the points in the order reached, with
// the number of the hit ("name" and its count so far).
func traceNames(t *testing.T, path string) []string {
	t.Helper()
	return lineFields(t, path, 2, func(f []string) string { return f[0] })
}

// firedAt reads the failpoint log: the points at which a rule fired.
func firedAt(t *testing.T, path string) []string {
	t.Helper()
	return lineFields(t, path, 3, func(f []string) string { return f[0] + " " + f[1] })
}

// lineFields reads the file's lines of n fields, each as pick makes it;
// a file that does not exist has none.
func lineFields(t *testing.T, path string, n int, pick func([]string) string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == n {
			out = append(out, pick(f))
		}
	}
	return out
}

func envWith(base []string, kv ...string) []string {
	return append(slices.Clone(base), kv...)
}

func specWith(rules ...string) string {
	var out []string
	for _, r := range rules {
		if r != "" {
			out = append(out, r)
		}
	}
	return failpoint.EnvSpec + "=" + strings.Join(out, ",")
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
