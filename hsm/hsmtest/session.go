package hsmtest

import (
	"bytes"
	"context"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// The EP11 session part of the contract. Every backend with EP11 APQNs
// implements hsm.Sessions; the Env's EP11 APQNs share one wrapping key.

func sessions(t *testing.T, e Env) hsm.Sessions {
	t.Helper()
	s, isS := e.Backend.(hsm.Sessions)
	if !isS {
		t.Fatal("hsmtest: a backend with EP11 APQNs must implement hsm.Sessions")
	}
	return s
}

// fixedBinder always passes one pin blob.
type fixedBinder []byte

func (b fixedBinder) PinBlob(context.Context, apqn.ID, mkvp.Pattern) ([]byte, error) { return b, nil }

var (
	pinA   = []byte("card-pin-A")
	nonceA = []byte("nonce A")
)

func testSessionLogin(t *testing.T, e Env) {
	s := sessions(t, e)
	q := e.EP11[0]
	pb := must[[]byte](t, "Login")(s.Login(ctx, q, pinA, nonceA))
	if len(pb) != hsm.PinBlobSize {
		t.Fatalf("pin blob has %d bytes, want %d", len(pb), hsm.PinBlobSize)
	}
	if f := must[[hsm.SessionIDSize]byte](t, "SessionField")(hsm.SessionField(pb)); f == ([hsm.SessionIDSize]byte{}) || f[0] == 0x30 {
		t.Fatalf("session field %x is zero or starts with 0x30", f)
	}
	again := must[[]byte](t, "Login again")(s.Login(ctx, q, pinA, nonceA))
	if !bytes.Equal(again, pb) {
		t.Fatal("a second login of the same session returned another pin blob")
	}
	if e.Limits.NoEP11SessionStatus {
		_, err := s.SessionStatus(ctx, q)
		wantErr(t, "SessionStatus (limit)", err, errclass.FailedPrecondition)
	} else if st := must[hsm.SessionStatus](t, "SessionStatus")(s.SessionStatus(ctx, q)); st.Used != 1 || st.Max < 1 {
		t.Fatalf("SessionStatus = %+v after one session, want Used 1", st)
	}
	padded := append(bytes.Clone(pinA), make([]byte, hsm.MaxPINBytes-len(pinA))...)
	if p := must[[]byte](t, "Login padded")(s.Login(ctx, q, padded, nonceA)); !bytes.Equal(p, pb) {
		t.Fatal("a zero-padded PIN gave another session")
	}
	for _, other := range e.EP11[1:] {
		if p := must[[]byte](t, "Login on "+other.String())(s.Login(ctx, other, pinA, nonceA)); !bytes.Equal(p, pb) {
			t.Fatalf("APQN %s with the same wrapping key gave another pin blob", other)
		}
	}
	for name, in := range map[string][2][]byte{
		"other nonce": {pinA, []byte("nonce B")},
		"other PIN":   {[]byte("card-pin-B"), nonceA},
	} {
		p := must[[]byte](t, "Login "+name)(s.Login(ctx, q, in[0], in[1]))
		if bytes.Equal(p[:32], pb[:32]) {
			t.Fatalf("%s: same session field", name)
		}
	}
	for name, pin := range map[string][]byte{
		"7 bytes":      []byte("1234567"),
		"17 bytes":     []byte("12345678901234567"),
		"control char": []byte("1234\n5678"),
		"padding only": make([]byte, 16),
	} {
		_, err := s.Login(ctx, q, pin, nonceA)
		wantErr(t, "Login with a PIN of "+name, err, hsm.ErrBadPIN)
	}
	_, err := s.Login(ctx, e.CCA[0], pinA, nonceA)
	wantErr(t, "Login on CCA", err, hsm.ErrWrongMode)
	if e.Limits.NoEP11SessionStatus {
		return
	}
	if st2 := must[hsm.SessionStatus](t, "SessionStatus")(s.SessionStatus(ctx, q)); st2.Used != 3 {
		t.Fatalf("SessionStatus = %+v, want 3 sessions (refused logins add none)", st2)
	}
}

func testSessionBinding(t *testing.T, e Env) {
	if len(e.EP11) < 2 {
		t.Fatal("hsmtest: the session contract needs two EP11 APQNs")
	}
	s := sessions(t, e)
	q, q2 := e.EP11[0], e.EP11[1]
	pb := must[[]byte](t, "Login")(s.Login(ctx, q, pinA, nonceA))
	bctx := hsm.WithBinder(ctx, fixedBinder(pb))
	spec := hsm.KeySpec{Type: hsm.KeyAES, Bits: 256}
	bound := must[[]byte](t, "GenerateKey bound")(e.Backend.GenerateKey(bctx, q, spec))
	if info := inspect(t, bound); info.Session != [hsm.SessionIDSize]byte(pb[:32]) || !info.Bound() {
		t.Fatalf("bound key carries session %x, want %x", info.Session, pb[:32])
	}
	ecPriv, _, err := e.Backend.GenerateKeyPair(bctx, q, hsm.KeySpec{Type: hsm.KeyEC, Bits: 256})
	ok(t, "GenerateKeyPair bound", err)
	free := makeKey(t, e, q, spec)
	if inspect(t, free).Bound() {
		t.Fatal("a key made without a binder is bound")
	}
	ok(t, "bound key where its session is logged in", use(e, q, spec, bound))
	ok(t, "bound EC key", use(e, q, hsm.KeySpec{Type: hsm.KeyEC, Bits: 256}, ecPriv))
	wantErr(t, "bound key on an APQN without its session", use(e, q2, spec, bound), hsm.ErrSessionBound)
	ok(t, "unbound key on the other APQN", use(e, q2, spec, free))
	must[[]byte](t, "Login on q2")(s.Login(ctx, q2, pinA, nonceA))
	ok(t, "bound key after login on q2", use(e, q2, spec, bound))

	ok(t, "Logout", s.Logout(ctx, q, pb))
	wantErr(t, "bound key after logout", use(e, q, spec, bound), hsm.ErrSessionBound)
	wantErr(t, "Logout twice", s.Logout(ctx, q, pb), hsm.ErrNoSession)
	ok(t, "unbound key after logout", use(e, q, spec, free))
	ok(t, "bound key still on q2", use(e, q2, spec, bound))
	_, err = e.Backend.GenerateKey(bctx, q, spec)
	wantErr(t, "GenerateKey with a logged-out pin blob", err, hsm.ErrSessionBound)
	forged := bytes.Clone(pb)
	forged[40] ^= 1
	_, err = e.Backend.GenerateKey(hsm.WithBinder(ctx, fixedBinder(forged)), q2, spec)
	wantErr(t, "GenerateKey with a forged pin blob", err, hsm.ErrSessionBound)
	// Tampering with the session field breaks the blob's authentication.
	moved := bytes.Clone(free)
	moved[0] = 0x01
	wantErr(t, "unbound key made bound by hand", use(e, q2, spec, moved), hsm.ErrBadBlob)
}

func testSessionReencipher(t *testing.T, e Env) {
	s := sessions(t, e)
	q := e.EP11[0]
	pb := must[[]byte](t, "Login")(s.Login(ctx, q, pinA, nonceA))
	spec := hsm.KeySpec{Type: hsm.KeyHMAC, Bits: 256}
	bound := must[[]byte](t, "GenerateKey")(e.Backend.GenerateKey(hsm.WithBinder(ctx, fixedBinder(pb)), q, spec))
	newP := must[mkvp.Pattern](t, "LoadNew")(e.Officer.LoadNew(ctx, q, mkvp.EP11WK, nil, hsm.Part{}))
	ok(t, "Commit", e.Officer.Commit(ctx, q))
	renc := must[[]byte](t, "ToNew")(e.Backend.Reencipher(ctx, q, bound, hsm.ToNew))
	ri := inspect(t, renc)
	if ri.Pattern != newP || !ri.Bound() || ri.Session == inspect(t, bound).Session {
		t.Fatalf("re-enciphered bound key: pattern %s bound %v session %x; want NEW %s, bound to the session's field under NEW",
			ri.Pattern, ri.Bound(), ri.Session[:8], newP)
	}
	ok(t, "Set", e.Officer.Set(ctx, q, mkvp.EP11WK))
	ok(t, "re-enciphered bound key after set", use(e, q, spec, renc))
	pbNew := must[[]byte](t, "Login under the new WK")(s.Login(ctx, q, pinA, nonceA))
	if ri.Session != [hsm.SessionIDSize]byte(pbNew[:32]) {
		t.Fatal("the session's pin blob under the new wrapping key does not match the re-enciphered key")
	}
	if !e.Limits.NoEP11SessionStatus {
		if st := must[hsm.SessionStatus](t, "SessionStatus")(s.SessionStatus(ctx, q)); st.Used != 1 {
			t.Fatalf("a wrapping key change made %d sessions of one", st.Used)
		}
	}
	// The pin blob issued under the old wrapping key still logs it out.
	ok(t, "Logout with the old pin blob", s.Logout(ctx, q, pb))
	wantErr(t, "re-enciphered key after logout", use(e, q, spec, renc), hsm.ErrSessionBound)
	_, err := e.Backend.Reencipher(ctx, q, renc, hsm.ToNew)
	wantErr(t, "ToNew with NEW empty", err, hsm.ErrRegisterState)
}
