package tokenlib

import (
	"bytes"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

func aesTemplate(label string, token bool, extra ...Attribute) []Attribute {
	return append([]Attribute{
		Ulong(ck.CKA_VALUE_LEN, 32), String(ck.CKA_LABEL, label), Bool(ck.CKA_TOKEN, token),
	}, extra...)
}

func genAES(t testing.TB, l *Library, h SessionHandle, label string, token bool, extra ...Attribute) ObjectHandle {
	t.Helper()
	o, err := l.GenerateKey(h, Mechanism{Type: ck.CKM_AES_KEY_GEN}, aesTemplate(label, token, extra...))
	must(t, err)
	return o
}

func getAttr(t testing.TB, l *Library, h SessionHandle, o ObjectHandle, a ck.Attribute) []byte {
	t.Helper()
	v, err := l.GetAttributes(h, o, a)
	must(t, err)
	return v[0]
}

func getBool(t testing.TB, l *Library, h SessionHandle, o ObjectHandle, a ck.Attribute) bool {
	b, ok := DecodeBool(getAttr(t, l, h, o, a))
	if !ok {
		t.Fatalf("%v is not a bool", a)
	}
	return b
}

func find(t testing.TB, l *Library, h SessionHandle, tmpl ...Attribute) []ObjectHandle {
	t.Helper()
	must(t, l.FindObjectsInit(h, tmpl))
	var all []ObjectHandle
	for {
		hs, err := l.FindObjects(h, 3)
		must(t, err)
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	must(t, l.FindObjectsFinal(h))
	return all
}

func TestGeneratedKeyAttributes(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	o := genAES(t, l, h, "k1", true, Bool(ck.CKA_SENSITIVE, true), Bool(ck.CKA_EXTRACTABLE, false))
	for _, c := range []struct {
		a    ck.Attribute
		want bool
	}{
		{ck.CKA_LOCAL, true}, {ck.CKA_ALWAYS_SENSITIVE, true}, {ck.CKA_NEVER_EXTRACTABLE, true},
		{ck.CKA_TOKEN, true}, {ck.CKA_PRIVATE, true}, {ck.CKA_MODIFIABLE, true}, {ck.CKA_COPYABLE, true},
		{ck.CKA_DESTROYABLE, true}, {ck.CKA_ENCRYPT, true},
	} {
		if got := getBool(t, l, h, o, c.a); got != c.want {
			t.Errorf("%v = %v, want %v", c.a, got, c.want)
		}
	}
	if m, _ := DecodeUlong(getAttr(t, l, h, o, ck.CKA_KEY_GEN_MECHANISM)); ck.Mechanism(m) != ck.CKM_AES_KEY_GEN {
		t.Errorf("key gen mechanism %v", m)
	}
	if len(getAttr(t, l, h, o, CKA_UNIQUE_ID)) == 0 {
		t.Error("no unique id")
	}
	if len(getAttr(t, l, h, o, ck.CKA_IBM_OPAQUE)) == 0 {
		t.Error("no secure key")
	}
	// CKA_VALUE is never available; type-invalid attributes are reported
	// per entry; the length query works.
	req := []AttrRequest{{Type: ck.CKA_VALUE}, {Type: ck.CKA_MODULUS}, {Type: ck.CKA_LABEL}}
	wantRV(t, l.GetAttributeValue(h, o, req), ck.CKR_ATTRIBUTE_SENSITIVE)
	if req[0].Len != -1 || req[1].Len != -1 || req[2].Len != 2 {
		t.Fatalf("lengths %+v", req)
	}
	req = []AttrRequest{{Type: ck.CKA_LABEL, Buf: make([]byte, 1)}}
	wantRV(t, l.GetAttributeValue(h, o, req), ck.CKR_BUFFER_TOO_SMALL)
	wantRV(t, l.GetAttributeValue(h, o, []AttrRequest{{Type: ck.CKA_MODULUS}}), ck.CKR_ATTRIBUTE_TYPE_INVALID)
}

func TestSetAttributeRules(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotEP11)
	o := genAES(t, l, h, "k", true)
	cases := []struct {
		name string
		set  []Attribute
		rv   ck.RV
	}{
		{"label", []Attribute{String(ck.CKA_LABEL, "new")}, ck.CKR_OK},
		{"sensitive on", []Attribute{Bool(ck.CKA_SENSITIVE, true)}, ck.CKR_OK},
		{"sensitive off", []Attribute{Bool(ck.CKA_SENSITIVE, false)}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"extractable off", []Attribute{Bool(ck.CKA_EXTRACTABLE, false)}, ck.CKR_OK},
		{"extractable on", []Attribute{Bool(ck.CKA_EXTRACTABLE, true)}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"class", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA))}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"local", []Attribute{Bool(ck.CKA_LOCAL, false)}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"opaque", []Attribute{Bytes(ck.CKA_IBM_OPAQUE, []byte{1})}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"token", []Attribute{Bool(ck.CKA_TOKEN, false)}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"unknown", []Attribute{{Type: 0x7777, Value: []byte{1}}}, ck.CKR_ATTRIBUTE_TYPE_INVALID},
		{"bad bool", []Attribute{{Type: ck.CKA_SIGN, Value: []byte{1, 2}}}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"modulus on AES", []Attribute{Bytes(ck.CKA_MODULUS, []byte{1})}, ck.CKR_ATTRIBUTE_TYPE_INVALID},
		// The valid first attribute must not be applied when the second fails.
		{"all or nothing", []Attribute{String(ck.CKA_LABEL, "partial"), Bool(ck.CKA_LOCAL, false)}, ck.CKR_ATTRIBUTE_READ_ONLY},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantRV(t, l.SetAttributeValue(h, o, c.set), c.rv)
		})
	}
	if got := string(getAttr(t, l, h, o, ck.CKA_LABEL)); got != "new" {
		t.Fatalf("label %q", got)
	}
	// The key was sensitive from the start; it was extractable when made.
	if !getBool(t, l, h, o, ck.CKA_ALWAYS_SENSITIVE) || getBool(t, l, h, o, ck.CKA_NEVER_EXTRACTABLE) {
		t.Fatal("always-flags wrong after a later change")
	}
	// Non-modifiable objects refuse every change.
	nm := genAES(t, l, h, "fixed", false, Bool(ck.CKA_MODIFIABLE, false))
	wantRV(t, l.SetAttributeValue(h, nm, []Attribute{String(ck.CKA_LABEL, "x")}), ck.CKR_ACTION_PROHIBITED)
}

func TestCreateObjectValidation(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	key := bytes.Repeat([]byte{0x42}, 16)
	cases := []struct {
		name string
		tmpl []Attribute
		rv   ck.RV
	}{
		{"no class", []Attribute{String(ck.CKA_LABEL, "x")}, ck.CKR_TEMPLATE_INCOMPLETE},
		{"no key type", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Bytes(ck.CKA_VALUE, key)}, ck.CKR_TEMPLATE_INCOMPLETE},
		{"no value", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES))}, ck.CKR_TEMPLATE_INCOMPLETE},
		{"bad AES length", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, key[:5])}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"value len mismatch", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, key), Ulong(ck.CKA_VALUE_LEN, 32)}, ck.CKR_TEMPLATE_INCONSISTENT},
		{"duplicate", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), String(ck.CKA_LABEL, "a"), String(ck.CKA_LABEL, "b")}, ck.CKR_TEMPLATE_INCONSISTENT},
		{"read-only local", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), Bool(ck.CKA_LOCAL, true)}, ck.CKR_ATTRIBUTE_TYPE_INVALID},
		{"read-only always sensitive", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_AES)), Bytes(ck.CKA_VALUE, key), Bool(ck.CKA_ALWAYS_SENSITIVE, true)}, ck.CKR_ATTRIBUTE_READ_ONLY},
		{"unknown class", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DOMAIN_PARAMETERS))}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"bad ulong", []Attribute{{Type: ck.CKA_CLASS, Value: []byte{1}}}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"bad date", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_SECRET_KEY)), String(ck.CKA_START_DATE, "2024")}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
		{"EC wrong curve", []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_PUBLIC_KEY)), Ulong(ck.CKA_KEY_TYPE, uint(ck.CKK_EC)), Bytes(ck.CKA_EC_PARAMS, []byte{6, 1, 1}), Bytes(ck.CKA_EC_POINT, []byte{4})}, ck.CKR_ATTRIBUTE_VALUE_INVALID},
	}
	before := find(t, l, h)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.CreateObject(h, append(c.tmpl, Bool(ck.CKA_TOKEN, true)))
			wantRV(t, err, c.rv)
		})
	}
	if after := find(t, l, h); len(after) != len(before) {
		t.Fatalf("failed creates changed the token: %d objects, want %d", len(after), len(before))
	}
}

func TestObjectVisibilityAndSessions(t *testing.T) {
	l, layout := newTestLib(t)
	h := userSession(t, l, slotCCA)
	data := func(label string, token, private bool) []Attribute {
		return []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), String(ck.CKA_LABEL, label),
			Bool(ck.CKA_TOKEN, token), Bool(ck.CKA_PRIVATE, private), String(ck.CKA_VALUE, "payload")}
	}
	pubTok, err := l.CreateObject(h, data("pub-tok", true, false))
	must(t, err)
	_, err = l.CreateObject(h, data("priv-tok", true, true))
	must(t, err)
	sessObj, err := l.CreateObject(h, data("priv-sess", false, true))
	must(t, err)
	if n := len(find(t, l, h, Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)))); n != 3 {
		t.Fatalf("user sees %d objects, want 3", n)
	}
	if v := getAttr(t, l, h, pubTok, ck.CKA_VALUE); string(v) != "payload" {
		t.Fatalf("value %q", v)
	}
	// After logout only the public token object is visible; the private
	// session object is gone for good.
	must(t, l.Logout(h))
	got := find(t, l, h)
	if len(got) != 1 || got[0] != pubTok {
		t.Fatalf("public session sees %v", got)
	}
	_, err = l.CreateObject(h, data("x", false, true))
	wantRV(t, err, ck.CKR_USER_NOT_LOGGED_IN)
	must(t, l.Login(h, ck.CKU_USER, []byte(userPIN)))
	_, err = l.GetAttributes(h, sessObj, ck.CKA_LABEL)
	wantRV(t, err, ck.CKR_OBJECT_HANDLE_INVALID)

	// R/O sessions cannot write token objects, but may make session objects.
	ro, err := l.OpenSession(slotCCA, ck.CKF_SERIAL_SESSION)
	must(t, err)
	_, err = l.CreateObject(ro, data("ro", true, false))
	wantRV(t, err, ck.CKR_SESSION_READ_ONLY)
	wantRV(t, l.DestroyObject(ro, pubTok), ck.CKR_SESSION_READ_ONLY)
	s2, err := l.CreateObject(ro, data("ro-sess", false, false))
	must(t, err)
	// Session objects die with their session; other sessions see them
	// until then.
	if n := len(find(t, l, h, String(ck.CKA_LABEL, "ro-sess"))); n != 1 {
		t.Fatalf("session object not visible to the other session")
	}
	must(t, l.CloseSession(ro))
	_, err = l.GetAttributes(h, s2, ck.CKA_LABEL)
	wantRV(t, err, ck.CKR_OBJECT_HANDLE_INVALID)

	// Token objects persist in the store: a second Library sees them.
	l2 := openTestLib(t, layout)
	h2 := userSession(t, l2, slotCCA)
	if n := len(find(t, l2, h2, Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)))); n != 2 {
		t.Fatalf("second library sees %d token objects, want 2", n)
	}
	must(t, l2.DestroyObject(h2, pubTok))
	if n := len(find(t, l, h, Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)))); n != 1 {
		t.Fatalf("destroy in the other library not seen: %d objects", n)
	}
}

func TestCopyAndDestroy(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotEP11)
	o := genAES(t, l, h, "orig", false)
	c, err := l.CopyObject(h, o, []Attribute{Bool(ck.CKA_TOKEN, true), String(ck.CKA_LABEL, "copy")})
	must(t, err)
	if !getBool(t, l, h, c, ck.CKA_TOKEN) || string(getAttr(t, l, h, c, ck.CKA_LABEL)) != "copy" {
		t.Fatal("copy template not applied")
	}
	if bytes.Equal(getAttr(t, l, h, c, CKA_UNIQUE_ID), getAttr(t, l, h, o, CKA_UNIQUE_ID)) {
		t.Fatal("copy has the same unique id")
	}
	_, err = l.CopyObject(h, o, []Attribute{Bool(ck.CKA_LOCAL, false)})
	wantRV(t, err, ck.CKR_ATTRIBUTE_READ_ONLY)
	nc := genAES(t, l, h, "nocopy", false, Bool(ck.CKA_COPYABLE, false), Bool(ck.CKA_DESTROYABLE, false))
	_, err = l.CopyObject(h, nc, nil)
	wantRV(t, err, ck.CKR_ACTION_PROHIBITED)
	wantRV(t, l.DestroyObject(h, nc), ck.CKR_ACTION_PROHIBITED)
	must(t, l.DestroyObject(h, c))
	wantRV(t, l.DestroyObject(h, c), ck.CKR_OBJECT_HANDLE_INVALID)
	// Find state machine.
	wantRV(t, l.FindObjectsFinal(h), ck.CKR_OPERATION_NOT_INITIALIZED)
	_, err = l.FindObjects(h, 1)
	wantRV(t, err, ck.CKR_OPERATION_NOT_INITIALIZED)
	must(t, l.FindObjectsInit(h, nil))
	wantRV(t, l.FindObjectsInit(h, nil), ck.CKR_OPERATION_ACTIVE)
	must(t, l.FindObjectsFinal(h))
	if got := find(t, l, h, Attribute{Type: 0x7777, Value: []byte{1}}); len(got) != 0 {
		t.Fatalf("unknown attribute matched %v", got)
	}
}

func TestFindAfterLogout(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	genAES(t, l, h, "private", true)
	_, err := l.CreateObject(h, []Attribute{Ulong(ck.CKA_CLASS, uint(ck.CKO_DATA)), Bool(ck.CKA_TOKEN, true), String(ck.CKA_LABEL, "public")})
	must(t, err)
	must(t, l.FindObjectsInit(h, nil))
	must(t, l.Logout(h))
	hs, err := l.FindObjects(h, 10)
	must(t, err)
	if len(hs) != 1 {
		t.Fatalf("after logout the search returns %d objects, want the public one", len(hs))
	}
}

func TestOperationEndsWithLogin(t *testing.T) {
	l, _ := newTestLib(t)
	h := userSession(t, l, slotCCA)
	k := genAES(t, l, h, "k", false)
	must(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, k))
	must(t, l.Logout(h))
	must(t, l.Login(h, ck.CKU_USER, []byte(userPIN)))
	_, err := l.Encrypt(h, make([]byte, 16), nil)
	wantRV(t, err, ck.CKR_USER_NOT_LOGGED_IN)
	// The private session key itself died with the logout.
	wantRV(t, l.EncryptInit(h, Mechanism{Type: ck.CKM_AES_ECB}, k), ck.CKR_KEY_HANDLE_INVALID)
}
