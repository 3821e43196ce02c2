package ck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

func TestKnownValues(t *testing.T) {
	tests := []struct {
		name string
		got  uint
		want uint
	}{
		{"CKR_OK", uint(CKR_OK), 0},
		{"CKR_PIN_INCORRECT", uint(CKR_PIN_INCORRECT), 0xA0},
		{"CKR_FUNCTION_FAILED", uint(CKR_FUNCTION_FAILED), 0x06},
		{"CKR_BUFFER_TOO_SMALL", uint(CKR_BUFFER_TOO_SMALL), 0x150},
		{"CKA_CLASS", uint(CKA_CLASS), 0},
		{"CKA_LABEL", uint(CKA_LABEL), 3},
		{"CKA_VALUE", uint(CKA_VALUE), 0x11},
		{"CKA_SENSITIVE", uint(CKA_SENSITIVE), 0x103},
		{"CKA_WRAP_TEMPLATE", uint(CKA_WRAP_TEMPLATE), 0x40000211},
		{"CKA_IBM_OPAQUE", uint(CKA_IBM_OPAQUE), 0x80000001},
		{"CKA_IBM_OPAQUE_REENC", uint(CKA_IBM_OPAQUE_REENC), 0x80000003},
		{"CKA_IBM_OPAQUE_OLD", uint(CKA_IBM_OPAQUE_OLD), 0x80000004},
		{"CKA_HIDDEN", uint(CKA_HIDDEN), 0x81000000},
		{"CKO_SECRET_KEY", uint(CKO_SECRET_KEY), 4},
		{"CKK_AES", uint(CKK_AES), 0x1F},
		{"CKK_EC", uint(CKK_EC), 3},
		{"CKM_AES_CBC_PAD", uint(CKM_AES_CBC_PAD), 0x1085},
		{"CKM_RSA_PKCS_PSS", uint(CKM_RSA_PKCS_PSS), 0x0D},
		{"CKM_SHA256", uint(CKM_SHA256), 0x250},
		{"CKM_AES_KEY_WRAP_PAD", uint(CKM_AES_KEY_WRAP_PAD), 0x210A},
		{"CKF_RW_SESSION", uint(CKF_RW_SESSION), 2},
		{"CKF_SERIAL_SESSION", uint(CKF_SERIAL_SESSION), 4},
		{"CKU_USER", uint(CKU_USER), 1},
		{"CKS_RW_USER_FUNCTIONS", uint(CKS_RW_USER_FUNCTIONS), 3},
		{"CKC_X_509", uint(CKC_X_509), 0},
		{"CKG_MGF1_SHA256", uint(CKG_MGF1_SHA256), 2},
		{"CKZ_DATA_SPECIFIED", CKZ_DATA_SPECIFIED, 1},
		{"CKH_IBM_EP11_SESSION", uint(CKH_IBM_EP11_SESSION), 0x80000001},
		{"CK_UNAVAILABLE_INFORMATION", CK_UNAVAILABLE_INFORMATION, ^uint(0)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		v    fmt.Stringer
		want string
	}{
		{CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
		{RV(0x80000123), "CKR_0x80000123"},
		{CKA_LABEL, "CKA_LABEL"},
		{CKA_IBM_OPAQUE_REENC, "CKA_IBM_OPAQUE_REENC"},
		{Attribute(0x7777), "CKA_0x00007777"},
		// Aliases print the current name, not the deprecated or aliased one.
		{CKA_ECDSA_PARAMS, "CKA_EC_PARAMS"},
		{CKK_ECDSA, "CKK_EC"},
		{CKM_ECDSA_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"},
		{CKA_SUB_PRIME_BITS, "CKA_SUBPRIME_BITS"},
		{CKM_SHA256_RSA_PKCS_PSS, "CKM_SHA256_RSA_PKCS_PSS"},
		{CKO_PRIVATE_KEY, "CKO_PRIVATE_KEY"},
		{CKK_AES, "CKK_AES"},
		{CKU_SO, "CKU_SO"},
		{CKS_RO_PUBLIC_SESSION, "CKS_RO_PUBLIC_SESSION"},
		{CKC_X_509, "CKC_X_509"},
		{CKG_MGF1_SHA384, "CKG_MGF1_SHA384"},
		{CKH_IBM_EP11_VHSMPIN, "CKH_IBM_EP11_VHSMPIN"},
		{CKD_SHA256_KDF, "CKD_SHA256_KDF"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("String(%#x) = %q, want %q", tt.v, got, tt.want)
		}
		if got := fmt.Sprint(tt.v); got != tt.want {
			t.Errorf("Sprint = %q, want %q", got, tt.want)
		}
	}
	if got := Describe(CKR_PIN_INCORRECT); got != "CKR_PIN_INCORRECT (0x000000A0)" {
		t.Errorf("Describe = %q", got)
	}
}

func TestByName(t *testing.T) {
	if v, ok := RVByName("CKR_PIN_LOCKED"); !ok || v != CKR_PIN_LOCKED {
		t.Errorf("RVByName(CKR_PIN_LOCKED) = %v, %v", v, ok)
	}
	if v, ok := AttributeByName("CKA_IBM_OPAQUE"); !ok || v != CKA_IBM_OPAQUE {
		t.Errorf("AttributeByName(CKA_IBM_OPAQUE) = %v, %v", v, ok)
	}
	if v, ok := AttributeByName("CKA_ECDSA_PARAMS"); !ok || v != CKA_EC_PARAMS {
		t.Errorf("AttributeByName(CKA_ECDSA_PARAMS) = %v, %v", v, ok)
	}
	if v, ok := MechanismByName("CKM_AES_GCM"); !ok || v != CKM_AES_GCM {
		t.Errorf("MechanismByName(CKM_AES_GCM) = %v, %v", v, ok)
	}
	if v, ok := KeyTypeByName("CKK_RSA"); !ok || v != CKK_RSA {
		t.Errorf("KeyTypeByName(CKK_RSA) = %v, %v", v, ok)
	}
	if v, ok := ObjectClassByName("CKO_DATA"); !ok || v != CKO_DATA {
		t.Errorf("ObjectClassByName(CKO_DATA) = %v, %v", v, ok)
	}
	for _, bad := range []string{"", "CKM_NOPE", "cka_label", "CKA_LABEL "} {
		if _, ok := AttributeByName(bad); ok {
			t.Errorf("AttributeByName(%q) found something", bad)
		}
		if _, ok := MechanismByName(bad); ok {
			t.Errorf("MechanismByName(%q) found something", bad)
		}
	}
	// Every name printed for a value looks up to that value again.
	for v, n := range namesMechanism {
		if w, ok := MechanismByName(n); !ok || w != v {
			t.Errorf("MechanismByName(%s) = %v, %v; want %#x", n, w, ok, uint(v))
		}
	}
	for v, n := range namesRV {
		if w, ok := RVByName(n); !ok || w != v {
			t.Errorf("RVByName(%s) = %v, %v; want %#x", n, w, ok, uint(v))
		}
	}
}

type customRV struct{}

func (customRV) Error() string { return "custom" }
func (customRV) CKRV() RV      { return CKR_TOKEN_NOT_PRESENT }

func TestRVFromError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want RV
	}{
		{"nil", nil, CKR_OK},
		{"plain", errors.New("boom"), CKR_FUNCTION_FAILED},
		{"invalid argument", errclass.New(errclass.InvalidArgument, "bad"), CKR_ARGUMENTS_BAD},
		{"not found", errclass.New(errclass.NotFound, "gone"), CKR_FUNCTION_FAILED},
		{"unavailable", errclass.New(errclass.Unavailable, "down"), CKR_DEVICE_ERROR},
		{"aborted", errclass.New(errclass.Aborted, "stop"), CKR_FUNCTION_CANCELED},
		{"internal", errclass.New(errclass.Internal, "bug"), CKR_GENERAL_ERROR},
		{"permission", errclass.New(errclass.PermissionDenied, "no"), CKR_FUNCTION_FAILED},
		{"data loss", errclass.New(errclass.DataLoss, "corrupt"), CKR_FUNCTION_FAILED},
		{"bare class", errclass.Conflict, CKR_FUNCTION_FAILED},
		{"context canceled", fmt.Errorf("wait: %w", context.Canceled), CKR_FUNCTION_CANCELED},
		{"explicit", Errorf(CKR_PIN_INCORRECT, "wrong PIN"), CKR_PIN_INCORRECT},
		{"explicit wrapped", fmt.Errorf("login: %w", Errorf(CKR_PIN_LOCKED, "locked")), CKR_PIN_LOCKED},
		{"interface", fmt.Errorf("x: %w", customRV{}), CKR_TOKEN_NOT_PRESENT},
		{"explicit beats class", WithRV(CKR_SESSION_HANDLE_INVALID, errclass.New(errclass.InvalidArgument, "h")), CKR_SESSION_HANDLE_INVALID},
		{"explicit beats hsm", WithRV(CKR_ENCRYPTED_DATA_INVALID, hsm.ErrBadData), CKR_ENCRYPTED_DATA_INVALID},
		{"explicit OK is not OK", WithRV(CKR_OK, errors.New("x")), CKR_FUNCTION_FAILED},
		{"hsm signature", fmt.Errorf("verify: %w", hsm.ErrSignature), CKR_SIGNATURE_INVALID},
		{"hsm offline", fmt.Errorf("sign: %w", hsm.ErrOffline), CKR_DEVICE_ERROR},
		{"hsm mechanism", hsm.ErrMechanism, CKR_MECHANISM_INVALID},
		{"hsm bad data", hsm.ErrBadData, CKR_DATA_INVALID},
		{"hsm wrong mk", hsm.ErrWrongMK, CKR_DEVICE_ERROR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RVFromError(tt.err); got != tt.want {
				t.Errorf("RVFromError(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	// Every class maps to something other than CKR_OK.
	for _, c := range errclass.Classes() {
		if rv := RVFromError(errclass.New(c, "x")); rv == CKR_OK {
			t.Errorf("class %v maps to CKR_OK", c)
		}
	}
}

func TestErrorfKeepsClassAndMessage(t *testing.T) {
	cause := errors.New("cause")
	err := Errorf(CKR_PIN_INCORRECT, "token %q: wrong PIN: %w", "t1", cause)
	if !errors.Is(err, errclass.PermissionDenied) {
		t.Errorf("class = %v, want permission denied", errclass.Of(err))
	}
	if !errors.Is(err, cause) {
		t.Error("cause not wrapped")
	}
	if got := err.Error(); got != `token "t1": wrong PIN: cause` {
		t.Errorf("message = %q", got)
	}
	hinted := errclass.Newh(errclass.NotFound, "create it", "missing")
	w := WithRV(CKR_SLOT_ID_INVALID, hinted)
	if errclass.Hint(w) != "create it" || !errors.Is(w, errclass.NotFound) {
		t.Errorf("WithRV lost hint or class: %q %v", errclass.Hint(w), errclass.Of(w))
	}
	if WithRV(CKR_OK, nil) != nil {
		t.Error("WithRV(nil) != nil")
	}
}

func TestClassOf(t *testing.T) {
	tests := []struct {
		rv   RV
		want errclass.Class
	}{
		{CKR_OK, errclass.Unknown},
		{CKR_ARGUMENTS_BAD, errclass.InvalidArgument},
		{CKR_ATTRIBUTE_VALUE_INVALID, errclass.InvalidArgument},
		{CKR_OBJECT_HANDLE_INVALID, errclass.NotFound},
		{CKR_PIN_INCORRECT, errclass.PermissionDenied},
		{CKR_USER_ALREADY_LOGGED_IN, errclass.Conflict},
		{CKR_CRYPTOKI_NOT_INITIALIZED, errclass.FailedPrecondition},
		{CKR_DEVICE_ERROR, errclass.Unavailable},
		{CKR_FUNCTION_CANCELED, errclass.Aborted},
		{CKR_GENERAL_ERROR, errclass.Internal},
		{CKR_FUNCTION_FAILED, errclass.Internal},
	}
	for _, tt := range tests {
		if got := ClassOf(tt.rv); got != tt.want {
			t.Errorf("ClassOf(%v) = %v, want %v", tt.rv, got, tt.want)
		}
	}
}

// TestGeneratedUpToDate re-runs gen.go into a temporary file and compares it
// with the committed zconst.go.
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go tool")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	dir, err := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11").Output()
	header := filepath.Join(strings.TrimSpace(string(dir)), "pkcs11t.h")
	if err != nil || strings.TrimSpace(string(dir)) == "" {
		t.Skipf("miekg/pkcs11 module source unavailable: %v", err)
	}
	if _, err := os.Stat(header); err != nil {
		t.Skipf("pkcs11t.h unavailable: %v", err)
	}
	out := filepath.Join(t.TempDir(), "zconst.go")
	cmd := exec.Command(goTool, "run", "gen.go", "-header", header, "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run gen.go: %v\n%s", err, msg)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("zconst.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Error("zconst.go is stale: run go generate ./tokenlib/ck")
	}
}
