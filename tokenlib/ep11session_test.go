package tokenlib

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

var (
	epQ1 = apqn.MustParse("06.0033")
	epQ2 = apqn.MustParse("0e.0033")
)

const cardPIN = "card-pin-1"

// ep11Slot is one EP11 token of an ep11 test root.
type ep11Slot struct {
	id           SlotID
	strict, vhsm bool
}

// writeEP11Root makes a root with two EP11 APQNs sharing a wrapping key
// and one EP11 token per slot, all on both APQNs.
func writeEP11Root(t testing.TB, maxSessions int, slots ...ep11Slot) paths.Layout {
	t.Helper()
	layout := paths.Layout{Root: t.TempDir()}
	topo := sim.Topology{Groups: []sim.Group{{Mode: apqn.ModeEP11, APQNs: []apqn.ID{epQ1, epQ2}}},
		Seed: []byte("ep11 session test"), MaxSessions: maxSessions}
	if err := sim.Init(layout.SimDir(), topo); err != nil {
		t.Fatal(err)
	}
	conf := layout.ConfDir()
	must(t, os.MkdirAll(conf, 0o755))
	global := "hsm-backend = simulator\nsimulator-dir = \"" + layout.SimDir() + "\"\n"
	for _, s := range slots {
		name := fmt.Sprintf("ep11tok%d", s.id)
		global += fmt.Sprintf("slot %d {\n\ttoken-type = ep11\n\ttokname = %s\n\tconfname = %s.conf\n}\n", s.id, name, name)
		body := "APQN_ALLOWLIST\n6 0x33\n14 0x33\nEND\n"
		if s.strict {
			body += "STRICT_MODE\n"
		}
		if s.vhsm {
			body += "VHSM_MODE\n"
		}
		must(t, os.WriteFile(filepath.Join(conf, name+".conf"), []byte(body), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(conf, "pkcshsm.conf"), []byte(global), 0o644))
	return layout
}

// setupEP11 initializes every slot's token and, for VHSM tokens, sets the
// card PIN (through a Library without session modes, as the tool does).
func setupEP11(t testing.TB, layout paths.Layout, pins map[SlotID]string, slots ...ep11Slot) {
	t.Helper()
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoEP11Sessions: true})
	must(t, err)
	defer l.Close()
	for _, s := range slots {
		initTestToken(t, l, s.id)
		if s.vhsm {
			h := userSession(t, l, s.id)
			pin := cardPIN
			if p, ok := pins[s.id]; ok {
				pin = p
			}
			must(t, l.SetCardPIN(context.Background(), h, []byte(pin)))
			must(t, l.CloseSession(h))
		}
	}
}

func simSessions(t testing.TB, layout paths.Layout, q apqn.ID) int {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	must(t, err)
	defer h.Close()
	list, _, err := h.SessionList(q)
	must(t, err)
	return len(list)
}

func records(t testing.TB, l *Library, h SessionHandle) []ep11sess.Record {
	t.Helper()
	r, err := l.EP11Sessions(context.Background(), h)
	must(t, err)
	return r
}

func field(pb []byte) [hsm.SessionIDSize]byte {
	if pb == nil {
		return [hsm.SessionIDSize]byte{}
	}
	return [hsm.SessionIDSize]byte(pb[:hsm.SessionIDSize])
}

func encryptWith(l *Library, h SessionHandle, k ObjectHandle) error {
	if err := l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, k); err != nil {
		return err
	}
	_, err := l.Encrypt(h, make([]byte, 16), make([]byte, 16))
	return err
}

// wantBound fails unless err is the session-binding refusal.
func wantBound(t testing.TB, what string, err error) {
	t.Helper()
	if !errors.Is(err, hsm.ErrSessionBound) || errclass.Of(err) != errclass.PermissionDenied || RV(err) != ck.CKR_SESSION_CLOSED {
		t.Fatalf("%s: err = %v (%v, class %s), want the EP11 session binding refusal (CKR_SESSION_CLOSED, permission denied)",
			what, err, RV(err), errclass.Of(err))
	}
}

// TestEP11SessionModesTable checks each row of the seed's table: which
// objects are bound to what, that a key bound to one PKCS#11 session is
// refused in another while unbound keys work, and that the EP11 sessions
// and their hidden objects go with the PKCS#11 sessions.
func TestEP11SessionModesTable(t *testing.T) {
	for _, row := range []ep11Slot{{1, false, false}, {1, true, false}, {1, false, true}, {1, true, true}} {
		t.Run(fmt.Sprintf("strict=%v,vhsm=%v", row.strict, row.vhsm), func(t *testing.T) {
			layout := writeEP11Root(t, 0, row)
			setupEP11(t, layout, nil, row)
			l := openTestLib(t, layout)
			a := userSession(t, l, 1)
			b, err := l.OpenSession(1, ck.CKF_SERIAL_SESSION)
			must(t, err)
			sessKey := genAES(t, l, a, "session", false)
			tokKey := genAES(t, l, a, "token", true)
			pubKey := genAES(t, l, a, "public", false, Bool(ck.CKA_PRIVATE, false))
			recs := records(t, l, a)
			if want := map[bool]int{true: 2, false: 0}[row.strict || row.vhsm]; len(recs) != want {
				t.Fatalf("%d EP11 session objects for two user sessions, want %d", len(recs), want)
			}
			// The session records are hidden: a search for everything
			// finds the three keys only.
			if got := find(t, l, a); len(got) != 3 {
				t.Fatalf("a search with an empty template found %d objects %v, want the 3 keys", len(got), got)
			}
			var strictA, vhsmF [hsm.SessionIDSize]byte
			for _, r := range recs {
				if r.PID != os.Getpid() || len(r.APQNs) != 2 || (r.Strict != nil) != row.strict || (r.VHSM != nil) != row.vhsm {
					t.Fatalf("record %+v: want pid %d, both APQNs, strict %v, vhsm %v", r, os.Getpid(), row.strict, row.vhsm)
				}
				vhsmF = field(r.VHSM)
			}
			if row.strict {
				// Which record is a's: the one whose field the session key carries.
				info, err := l.KeyBlobInfo(a, sessKey)
				must(t, err)
				for _, r := range recs {
					if field(r.Strict) == info.Session {
						strictA = info.Session
					}
				}
				if strictA == ([hsm.SessionIDSize]byte{}) {
					t.Fatal("the session key is not bound to a stored strict session")
				}
				if field(recs[0].Strict) == field(recs[1].Strict) {
					t.Fatal("two PKCS#11 sessions share a strict EP11 session")
				}
			}
			wantSess, wantTok := [hsm.SessionIDSize]byte{}, [hsm.SessionIDSize]byte{}
			switch {
			case row.strict:
				wantSess = strictA
			case row.vhsm:
				wantSess = vhsmF
			}
			if row.vhsm {
				wantTok = vhsmF
			}
			for _, c := range []struct {
				name string
				k    ObjectHandle
				want [hsm.SessionIDSize]byte
			}{{"private session key", sessKey, wantSess}, {"private token key", tokKey, wantTok}, {"public session key", pubKey, [32]byte{}}} {
				info, err := l.KeyBlobInfo(a, c.k)
				must(t, err)
				if info.Session != c.want {
					t.Errorf("%s bound to %x, want %x", c.name, info.Session[:4], c.want[:4])
				}
			}
			// The session objects are hidden from every search.
			must(t, l.FindObjectsInit(a, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_HW_FEATURE))}))
			if found, err := l.FindObjects(a, 10); err != nil || len(found) != 0 {
				t.Fatalf("a search for CKO_HW_FEATURE found %d objects (%v)", len(found), err)
			}
			must(t, l.FindObjectsFinal(a))
			must(t, l.FindObjectsInit(a, nil))
			if found, err := l.FindObjects(a, 100); err != nil || len(found) != 3 {
				t.Fatalf("a search for everything found %d objects (%v), want the 3 keys", len(found), err)
			}
			must(t, l.FindObjectsFinal(a))
			// Use from the generating session and from another one.
			must(t, encryptWith(l, a, sessKey))
			must(t, encryptWith(l, a, tokKey))
			must(t, encryptWith(l, b, tokKey))
			must(t, encryptWith(l, b, pubKey))
			if row.strict {
				wantBound(t, "session key from another session", encryptWith(l, b, sessKey))
			} else {
				must(t, encryptWith(l, b, sessKey))
			}
			blob := l.slots[1].sessObjs[sessKey].attrs[ck.CKA_IBM_OPAQUE]
			// Session end: a's EP11 session and its object go.
			must(t, l.CloseSession(a))
			if row.strict {
				if n := len(records(t, l, b)); n != 1 {
					t.Fatalf("%d session objects after closing one of two sessions, want 1", n)
				}
				// A copy of a's session key is dead on the adapter.
				_, err := l.backend.Encrypt(context.Background(), epQ1, blob, hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
				if !errors.Is(err, hsm.ErrSessionBound) {
					t.Fatalf("copy of the closed session's key: %v, want ErrSessionBound", err)
				}
			}
			must(t, encryptWith(l, b, tokKey))
			must(t, l.CloseAllSessions(1))
			for _, q := range []apqn.ID{epQ1, epQ2} {
				if n := simSessions(t, layout, q); n != 0 {
					t.Fatalf("%d EP11 sessions left on %s after C_CloseAllSessions", n, q)
				}
			}
			c := userSession(t, l, 1)
			if n := len(records(t, l, c)); n != map[bool]int{true: 1, false: 0}[row.strict || row.vhsm] {
				t.Fatalf("%d session objects after all sessions closed and one opened", n)
			}
			// The token key outlives the sessions (VHSM: same card PIN, same session).
			must(t, encryptWith(l, c, tokKey))
			must(t, l.Close())
			for _, q := range []apqn.ID{epQ1, epQ2} {
				if n := simSessions(t, layout, q); n != 0 {
					t.Fatalf("%d EP11 sessions left on %s after C_Finalize", n, q)
				}
			}
		})
	}
}

// TestEP11PublicAndSOSessionsUnbound: public and SO sessions log in no
// EP11 session and bind nothing.
func TestEP11PublicAndSOSessionsUnbound(t *testing.T) {
	row := ep11Slot{1, true, true}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	l := openTestLib(t, layout)
	pub, err := l.OpenSession(1, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	k := genAES(t, l, pub, "public", true, Bool(ck.CKA_PRIVATE, false))
	info, err := l.KeyBlobInfo(pub, k)
	must(t, err)
	if info.Bound() {
		t.Fatal("a key made in a public session is bound")
	}
	must(t, l.Login(pub, ck.CKU_SO, []byte(soPIN)))
	k2 := genAES(t, l, pub, "so", true, Bool(ck.CKA_PRIVATE, false))
	info, err = l.KeyBlobInfo(pub, k2)
	must(t, err)
	if info.Bound() || simSessions(t, layout, epQ1) != 0 {
		t.Fatal("an SO session logged in an EP11 session or bound a key")
	}
}

// TestEP11VHSMCrossToken: two VHSM tokens on the same APQNs with their own
// card PINs; a key of one, copied into the other, is refused there.
func TestEP11VHSMCrossToken(t *testing.T) {
	s1, s2 := ep11Slot{1, false, true}, ep11Slot{2, false, true}
	layout := writeEP11Root(t, 0, s1, s2)
	setupEP11(t, layout, map[SlotID]string{2: "other-card-pin"}, s1, s2)
	l := openTestLib(t, layout)
	h1, h2 := userSession(t, l, 1), userSession(t, l, 2)
	k1 := genAES(t, l, h1, "one", true)
	k2 := genAES(t, l, h2, "two", true)
	i1, _ := l.KeyBlobInfo(h1, k1)
	i2, _ := l.KeyBlobInfo(h2, k2)
	if !i1.Bound() || !i2.Bound() || i1.Session == i2.Session {
		t.Fatal("tokens with different card PINs share a VHSM session")
	}
	// Copy token 1's key object into token 2's store, as a stolen object
	// file would be.
	t1, t2 := l.slots[1], l.slots[2]
	t1.mu.Lock()
	o, err := t1.objectLocked(context.Background(), k1)
	t1.mu.Unlock()
	must(t, err)
	cp := o.clone()
	cp.attrs[CKA_UNIQUE_ID] = nil
	t2.mu.Lock()
	h, _, err := t2.db.create(context.Background(), t2.dataKey, cp)
	t2.invalidateCache()
	t2.mu.Unlock()
	must(t, err)
	wantBound(t, "token 1's key in token 2", encryptWith(l, h2, h))
	must(t, encryptWith(l, h2, k2))
	must(t, encryptWith(l, h1, k1))
	// Once token 1 has no session, its VHSM session is logged out: the
	// adapter refuses the key too, token 2's keys keep working.
	must(t, l.CloseAllSessions(1))
	_, err = l.backend.Encrypt(context.Background(), epQ1, o.attrs[ck.CKA_IBM_OPAQUE], hsm.MechAESECB, hsm.Params{}, make([]byte, 16))
	if !errors.Is(err, hsm.ErrSessionBound) {
		t.Fatalf("token 1's key with no token 1 session: %v", err)
	}
	must(t, encryptWith(l, h2, k2))
}

// TestEP11VHSMCardPIN: no card PIN refuses the login clearly and changes
// nothing; bad card PINs are refused and keep the old one; the card PIN
// persists across Libraries (processes).
func TestEP11VHSMCardPIN(t *testing.T) {
	row := ep11Slot{1, false, true}
	layout := writeEP11Root(t, 0, row)
	tool, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoEP11Sessions: true})
	must(t, err)
	defer tool.Close()
	initTestToken(t, tool, 1)
	l := openTestLib(t, layout)
	h, err := l.OpenSession(1, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	err = l.Login(h, ck.CKU_USER, []byte(userPIN))
	if err == nil || !strings.Contains(err.Error(), "no card PIN") || !strings.Contains(errclass.Hint(err), "ep11-session vhsmpin --slot 1") {
		t.Fatalf("login without a card PIN: %v (hint %q)", err, errclass.Hint(err))
	}
	info, err := l.GetSessionInfo(h)
	must(t, err)
	if info.State != ck.CKS_RW_PUBLIC_SESSION || simSessions(t, layout, epQ1) != 0 {
		t.Fatalf("after the refused login: state %v, %d EP11 sessions", info.State, simSessions(t, layout, epQ1))
	}
	th := userSession(t, tool, 1)
	for _, bad := range []string{"1234567", "12345678901234567", "card\tpin-1", "kártya-pin"} {
		err := tool.SetCardPIN(context.Background(), th, []byte(bad))
		if errclass.Of(err) != errclass.InvalidArgument || errclass.Hint(err) == "" {
			t.Errorf("card PIN %q: %v, want invalid argument with a hint", bad, err)
		}
	}
	must(t, tool.SetCardPIN(context.Background(), th, []byte("0123456789abcdef")))
	if tool.SetCardPIN(context.Background(), th, []byte("bad")) == nil {
		t.Fatal("short card PIN accepted")
	}
	// The 16-character PIN set above is in force, in a new Library too.
	must(t, l.Login(h, ck.CKU_USER, []byte(userPIN)))
	k := genAES(t, l, h, "vhsm", true)
	must(t, l.Close())
	l2 := openTestLib(t, layout)
	h2 := userSession(t, l2, 1)
	must(t, encryptWith(l2, h2, k))
}

func setOnline(t testing.TB, layout paths.Layout, q apqn.ID, on bool) {
	t.Helper()
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	must(t, err)
	defer h.Close()
	must(t, h.Do(context.Background(), func(tx *sim.Tx) error { return tx.SetOnline(q, on) }))
}

// TestEP11LaterAPQN: an APQN offline when the session started is logged in
// at its first use, and the session tool's logout reaches it.
func TestEP11LaterAPQN(t *testing.T) {
	row := ep11Slot{1, true, false}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	l := openTestLib(t, layout)
	setOnline(t, layout, epQ2, false)
	h := userSession(t, l, 1)
	k := genAES(t, l, h, "k", false)
	if recs := records(t, l, h); len(recs) != 1 || len(recs[0].APQNs) != 1 || recs[0].APQNs[0] != epQ1 {
		t.Fatalf("records %+v, want one logged in on %s only", recs, epQ1)
	}
	setOnline(t, layout, epQ2, true)
	setOnline(t, layout, epQ1, false)
	// Only the late APQN is up: the key works there after a login at
	// first use.
	must(t, encryptWith(l, h, k))
	if n := simSessions(t, layout, epQ2); n != 1 {
		t.Fatalf("%d sessions on the late APQN, want 1", n)
	}
	setOnline(t, layout, epQ1, true)
	must(t, l.CloseSession(h))
	for _, q := range []apqn.ID{epQ1, epQ2} {
		if n := simSessions(t, layout, q); n != 0 {
			t.Fatalf("%d sessions left on %s", n, q)
		}
	}
}

// skewedSessions returns a different pin blob for one APQN, as an adapter
// with a broken session would.
type skewedSessions struct {
	*sim.HSM
	q apqn.ID
}

func (s skewedSessions) Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error) {
	pb, err := s.HSM.Login(ctx, q, pin, nonce)
	if err == nil && q == s.q {
		pb = append([]byte(nil), pb...)
		pb[5] ^= 1
	}
	return pb, err
}

func (s skewedSessions) Logout(ctx context.Context, q apqn.ID, pb []byte) error {
	if q == s.q {
		pb = append([]byte(nil), pb...)
		pb[5] ^= 1
	}
	return s.HSM.Logout(ctx, q, pb)
}

// TestEP11PinBlobMismatch: unequal pin blobs from APQNs with the same
// wrapping key refuse the login (CKR_DEVICE_ERROR, naming the APQN) and
// leave no session behind.
func TestEP11PinBlobMismatch(t *testing.T) {
	row := ep11Slot{1, true, false}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	h, err := sim.Open(layout.SimDir(), sim.Options{})
	must(t, err)
	defer h.Close()
	l, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, Backend: skewedSessions{h, epQ2}})
	must(t, err)
	defer l.Close()
	s, err := l.OpenSession(1, ck.CKF_SERIAL_SESSION)
	must(t, err)
	err = l.Login(s, ck.CKU_USER, []byte(userPIN))
	if RV(err) != ck.CKR_DEVICE_ERROR || !strings.Contains(err.Error(), "APQN 0E.0033 returned another pin blob") {
		t.Fatalf("login with unequal pin blobs: %v (%v)", err, RV(err))
	}
	for _, q := range []apqn.ID{epQ1, epQ2} {
		if n := simSessions(t, layout, q); n != 0 {
			t.Fatalf("%d sessions left on %s after the refused login", n, q)
		}
	}
	if info, _ := l.GetSessionInfo(s); info.State != ck.CKS_RO_PUBLIC_SESSION {
		t.Fatalf("session state %v after the refused login", info.State)
	}
}

// TestEP11CopyObjectBinding: a copy that would need another binding is
// refused; one that keeps it works.
func TestEP11CopyObjectBinding(t *testing.T) {
	row := ep11Slot{1, true, false}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	l := openTestLib(t, layout)
	h := userSession(t, l, 1)
	k := genAES(t, l, h, "session", false)
	_, err := l.CopyObject(h, k, []Attribute{Bool(ck.CKA_TOKEN, true)})
	if RV(err) != ck.CKR_ATTRIBUTE_VALUE_INVALID || !errors.Is(err, hsm.ErrSessionBound) {
		t.Fatalf("copy of a strict session key to a token object: %v (%v)", err, RV(err))
	}
	c, err := l.CopyObject(h, k, []Attribute{String(ck.CKA_LABEL, "copy")})
	must(t, err)
	must(t, encryptWith(l, h, c))
}

// TestEP11VHSMSharedAcrossProcesses: the VHSM session of a slot is shared
// by every process (Library) and logged out only with its last user.
func TestEP11VHSMSharedAcrossProcesses(t *testing.T) {
	row := ep11Slot{1, false, true}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	l1, l2 := openTestLib(t, layout), openTestLib(t, layout)
	h1, h2 := userSession(t, l1, 1), userSession(t, l2, 1)
	k := genAES(t, l1, h1, "shared", true)
	must(t, encryptWith(l2, h2, k))
	for _, q := range []apqn.ID{epQ1, epQ2} {
		if n := simSessions(t, layout, q); n != 1 {
			t.Fatalf("%d EP11 sessions on %s for two processes, want the one shared VHSM session", n, q)
		}
	}
	must(t, l2.Close())
	// Still logged in for the first process: its key works on the adapter
	// as it is, with no new login.
	for _, q := range []apqn.ID{epQ1, epQ2} {
		if n := simSessions(t, layout, q); n != 1 {
			t.Fatalf("%d EP11 sessions on %s after one of two processes ended, want 1", n, q)
		}
	}
	blob := func() []byte {
		tok := l1.slots[1]
		tok.mu.Lock()
		defer tok.mu.Unlock()
		o, err := tok.objectLocked(context.Background(), k)
		must(t, err)
		return o.attrs[ck.CKA_IBM_OPAQUE]
	}()
	if _, err := l1.backend.Encrypt(context.Background(), epQ2, blob, hsm.MechAESECB, hsm.Params{}, make([]byte, 16)); err != nil {
		t.Fatalf("VHSM key on the adapter after the other process ended: %v", err)
	}
	if n := len(records(t, l1, h1)); n != 1 {
		t.Fatalf("%d session objects, want the first process's 1", n)
	}
	must(t, l1.Close())
	for _, q := range []apqn.ID{epQ1, epQ2} {
		if n := simSessions(t, layout, q); n != 0 {
			t.Fatalf("%d EP11 sessions on %s after the last process ended", n, q)
		}
	}
}

// TestEP11ToolCorruptAndForeignRecords: an unreadable session object is
// listed as such and removed only by id with force; logout of a live
// process's session needs force; an unknown id is NotFound; nothing else
// changes.
func TestEP11ToolCorruptAndForeignRecords(t *testing.T) {
	row := ep11Slot{1, true, false}
	layout := writeEP11Root(t, 0, row)
	setupEP11(t, layout, nil, row)
	app := openTestLib(t, layout)
	ha := userSession(t, app, 1)
	hb := userSession(t, app, 1)
	tool, err := Open(Options{Layout: layout, Logger: testLogger(t), kdf: testKDF, NoEP11Sessions: true})
	must(t, err)
	defer tool.Close()
	ht := userSession(t, tool, 1)
	ctx := context.Background()
	recs, err := tool.EP11Sessions(ctx, ht)
	must(t, err)
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	// Damage one record's content.
	tt := tool.slots[1]
	so, err := tt.db.st.Get(ctx, tt.dataKey, recs[0].Handle)
	must(t, err)
	so.Attrs[uint32(ck.CKA_VALUE)] = []byte("EP11S garbage")
	must(t, tt.db.st.Update(ctx, tt.dataKey, so))
	recs, err = tool.EP11Sessions(ctx, ht)
	if errclass.Of(err) != errclass.DataLoss || len(recs) != 2 || recs[0].PID != 0 || recs[1].PID != os.Getpid() {
		t.Fatalf("listing with a damaged record: %v, %+v", err, recs)
	}
	bad, good := recs[0], recs[1]
	// A live process's session is refused without force.
	res, err := tool.EP11Logout(ctx, ht, ep11sess.Selector{ID: &good.ID}, false)
	must(t, err)
	if len(res) != 1 || res[0].Removed || !strings.Contains(res[0].Err.Error(), "still running") {
		t.Fatalf("logout of a live session: %+v", res)
	}
	// --dead touches neither (the process lives; the damaged one is only
	// reported).
	res, err = tool.EP11Logout(ctx, ht, ep11sess.Selector{Dead: true}, false)
	must(t, err)
	if len(res) != 1 || res[0].Removed || res[0].Record.ID != bad.ID || errclass.Of(res[0].Err) != errclass.DataLoss {
		t.Fatalf("logout --dead with a damaged record: %+v", res)
	}
	unknown := ep11sess.PublicID{0xee}
	if _, err := tool.EP11Logout(ctx, ht, ep11sess.Selector{ID: &unknown}, true); errclass.Of(err) != errclass.NotFound ||
		!strings.Contains(err.Error(), "slot 1") {
		t.Fatalf("unknown id: %v", err)
	}
	res, err = tool.EP11Logout(ctx, ht, ep11sess.Selector{ID: &bad.ID}, true)
	must(t, err)
	if len(res) != 1 || !res[0].Removed {
		t.Fatalf("forced removal of the damaged record: %+v", res)
	}
	if recs, err := tool.EP11Sessions(ctx, ht); err != nil || len(recs) != 1 || recs[0].ID != good.ID {
		t.Fatalf("after the cleanup: %+v %v", recs, err)
	}
	// The application's sessions are undisturbed: its keys work.
	k := genAES(t, app, hb, "b", false)
	must(t, encryptWith(app, hb, k))
	must(t, app.CloseSession(ha))
	must(t, app.CloseSession(hb))
}
