package tokenlib

import (
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func TestSlotAndTokenInfo(t *testing.T) {
	l, _ := newTestLib(t)
	if got := l.GetSlotList(); len(got) != 2 || got[0] != slotCCA || got[1] != slotEP11 {
		t.Fatalf("slots %v", got)
	}
	si, err := l.GetSlotInfo(slotCCA)
	must(t, err)
	if len(si.SlotDescription) != 64 || si.Flags&ck.CKF_TOKEN_PRESENT == 0 {
		t.Fatalf("slot info %+v", si)
	}
	ti, err := l.GetTokenInfo(slotEP11)
	must(t, err)
	if ti.Label != "test token                      " || len(ti.Label) != 32 {
		t.Fatalf("label %q", ti.Label)
	}
	for _, f := range []ck.Flags{ck.CKF_RNG, ck.CKF_LOGIN_REQUIRED, ck.CKF_USER_PIN_INITIALIZED, ck.CKF_TOKEN_INITIALIZED} {
		if ti.Flags&f == 0 {
			t.Errorf("flag %#x missing in %#x", f, ti.Flags)
		}
	}
	if strings.TrimSpace(ti.Model) != "EP11" || ti.MaxPinLen != 8 {
		t.Errorf("model %q maxpin %d", ti.Model, ti.MaxPinLen)
	}
	_, err = l.GetSlotInfo(7)
	wantRV(t, err, ck.CKR_SLOT_ID_INVALID)
}

func TestUninitializedToken(t *testing.T) {
	l := openTestLib(t, writeTestRoot(t))
	ti, err := l.GetTokenInfo(slotCCA)
	must(t, err)
	if ti.Flags&ck.CKF_TOKEN_INITIALIZED != 0 {
		t.Fatal("fresh token claims to be initialized")
	}
	h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	err = l.Login(h, ck.CKU_USER, []byte(userPIN))
	if RV(err) == ck.CKR_OK {
		t.Fatal("login on an uninitialized token succeeded")
	}
	// InitToken refuses while a session is open.
	wantRV(t, l.InitToken(slotCCA, []byte(soPIN), "x"), ck.CKR_SESSION_EXISTS)
}

func TestLoginStateMachine(t *testing.T) {
	l, _ := newTestLib(t)
	state := func(h SessionHandle) ck.State {
		t.Helper()
		i, err := l.GetSessionInfo(h)
		must(t, err)
		return i.State
	}
	_, err := l.OpenSession(slotCCA, ck.CKF_RW_SESSION)
	wantRV(t, err, ck.CKR_SESSION_PARALLEL_NOT_SUPPORTED)

	ro, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	rw, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	if state(ro) != ck.CKS_RO_PUBLIC_SESSION || state(rw) != ck.CKS_RW_PUBLIC_SESSION {
		t.Fatal("public states wrong")
	}
	// SO cannot log in while a R/O session exists.
	wantRV(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)), ck.CKR_SESSION_READ_ONLY_EXISTS)
	wantRV(t, l.Logout(rw), ck.CKR_USER_NOT_LOGGED_IN)
	wantRV(t, l.Login(rw, 7, []byte(userPIN)), ck.CKR_USER_TYPE_INVALID)

	// USER login applies to every session.
	must(t, l.Login(ro, ck.CKU_USER, []byte(userPIN)))
	if state(ro) != ck.CKS_RO_USER_FUNCTIONS || state(rw) != ck.CKS_RW_USER_FUNCTIONS {
		t.Fatal("user states wrong")
	}
	wantRV(t, l.Login(rw, ck.CKU_USER, []byte(userPIN)), ck.CKR_USER_ALREADY_LOGGED_IN)
	wantRV(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)), ck.CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
	must(t, l.Logout(ro))
	if state(rw) != ck.CKS_RW_PUBLIC_SESSION {
		t.Fatal("logout did not apply to all sessions")
	}

	// SO: R/W only; no R/O sessions while SO is logged in.
	must(t, l.CloseSession(ro))
	must(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)))
	if state(rw) != ck.CKS_RW_SO_FUNCTIONS {
		t.Fatal("SO state wrong")
	}
	_, err = l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	wantRV(t, err, ck.CKR_SESSION_READ_WRITE_SO_EXISTS)
	wantRV(t, l.Login(rw, ck.CKU_USER, []byte(userPIN)), ck.CKR_USER_ANOTHER_ALREADY_LOGGED_IN)

	// Closing the last session logs out.
	must(t, l.CloseSession(rw))
	h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	if state(h) != ck.CKS_RO_PUBLIC_SESSION {
		t.Fatal("login survived the last session")
	}
	must(t, l.CloseAllSessions(slotCCA))
	_, err = l.GetSessionInfo(h)
	wantRV(t, err, ck.CKR_SESSION_HANDLE_INVALID)
}

func TestWrongPINCountedAndLocked(t *testing.T) {
	l, _ := newTestLib(t)
	h, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	wantRV(t, l.Login(h, ck.CKU_USER, []byte("00000000")), ck.CKR_PIN_INCORRECT)
	ti, err := l.GetTokenInfo(slotCCA)
	must(t, err)
	if ti.UserPINFailures != 1 {
		t.Fatalf("failures %d, want 1", ti.UserPINFailures)
	}
	for ti.Flags&ck.CKF_USER_PIN_LOCKED == 0 {
		err := l.Login(h, ck.CKU_USER, []byte("00000000"))
		if RV(err) != ck.CKR_PIN_INCORRECT && RV(err) != ck.CKR_PIN_LOCKED {
			t.Fatalf("unexpected %v", err)
		}
		ti, err = l.GetTokenInfo(slotCCA)
		must(t, err)
		if ti.UserPINFailures > ti.MaxPINAttempts {
			t.Fatal("never locked")
		}
	}
	if ti.Flags&ck.CKF_USER_PIN_COUNT_LOW == 0 && ti.Flags&ck.CKF_USER_PIN_LOCKED == 0 {
		t.Error("no count-low or locked flag")
	}
	wantRV(t, l.Login(h, ck.CKU_USER, []byte(userPIN)), ck.CKR_PIN_LOCKED)
	// The SO unlocks by setting a new USER PIN.
	must(t, l.CloseSession(h))
	rw, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	must(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)))
	must(t, l.InitPIN(rw, []byte("11112222")))
	must(t, l.Logout(rw))
	must(t, l.Login(rw, ck.CKU_USER, []byte("11112222")))
}

func TestPINManagement(t *testing.T) {
	l, _ := newTestLib(t)
	ro, err := l.OpenSession(slotEP11, ck.CKF_SERIAL_SESSION)
	must(t, err)
	wantRV(t, l.SetPIN(ro, []byte(userPIN), []byte("87878787")), ck.CKR_SESSION_READ_ONLY)
	wantRV(t, l.InitPIN(ro, []byte("87878787")), ck.CKR_USER_NOT_LOGGED_IN)
	must(t, l.CloseSession(ro))
	rw, err := l.OpenSession(slotEP11, ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	must(t, err)
	// Public R/W session changes the USER PIN.
	wantRV(t, l.SetPIN(rw, []byte("99999999"), []byte("87878787")), ck.CKR_PIN_INCORRECT)
	must(t, l.SetPIN(rw, []byte(userPIN), []byte("87878787")))
	// EP11 PINs are 4..8 bytes.
	must(t, l.Login(rw, ck.CKU_USER, []byte("87878787")))
	wantRV(t, l.SetPIN(rw, []byte("87878787"), []byte("123456789")), ck.CKR_PIN_LEN_RANGE)
	must(t, l.Logout(rw))
	wantRV(t, l.Login(rw, ck.CKU_USER, []byte(userPIN)), ck.CKR_PIN_INCORRECT)
	// SO changes the SO PIN.
	must(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)))
	must(t, l.SetPIN(rw, []byte(soPIN), []byte("55556666")))
	must(t, l.Logout(rw))
	wantRV(t, l.Login(rw, ck.CKU_SO, []byte(soPIN)), ck.CKR_PIN_INCORRECT)
	must(t, l.Login(rw, ck.CKU_SO, []byte("55556666")))
}

func TestMiscFunctions(t *testing.T) {
	l, _ := newTestLib(t)
	if i := l.GetInfo(); i.CryptokiVersion != (Version{2, 40}) || len(i.ManufacturerID) != 32 || len(i.LibraryDescription) != 32 {
		t.Fatalf("info %+v", i)
	}
	h := userSession(t, l, slotCCA)
	wantRV(t, l.SeedRandom(h, []byte("x")), ck.CKR_RANDOM_SEED_NOT_SUPPORTED)
	a, b := make([]byte, 32), make([]byte, 32)
	must(t, l.GenerateRandom(h, a))
	must(t, l.GenerateRandom(h, b))
	if string(a) == string(b) {
		t.Fatal("random repeats")
	}
	o := genAES(t, l, h, "k", false)
	n, err := l.GetObjectSize(h, o)
	must(t, err)
	if n < 64 {
		t.Fatalf("object size %d", n)
	}
	_, err = l.GetObjectSize(h, 12345)
	wantRV(t, err, ck.CKR_OBJECT_HANDLE_INVALID)
	wantRV(t, l.GenerateRandom(999, a), ck.CKR_SESSION_HANDLE_INVALID)
}
