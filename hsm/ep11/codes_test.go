package ep11

import (
	"errors"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

func TestRVError(t *testing.T) {
	q := apqn.MustParse("06.0033")
	for _, tc := range []struct {
		rv       uint64
		sentinel error
		class    errclass.Class
	}{
		{ckrIBMWKIDMismatch, hsm.ErrWrongMK, errclass.FailedPrecondition},
		{ckrIBMBlobError, hsm.ErrBadBlob, errclass.InvalidArgument},
		{ckrSessionClosed, hsm.ErrSessionBound, errclass.PermissionDenied},
		{ckrSignatureInvalid, hsm.ErrSignature, errclass.InvalidArgument},
		{ckrEncryptedDataInv, hsm.ErrBadData, errclass.InvalidArgument},
		{ckrMechanismInvalid, hsm.ErrMechanism, errclass.InvalidArgument},
		{ckrIBMTargetInvalid, hsm.ErrOffline, errclass.Unavailable},
		{ckrFunctionNotSupp, nil, errclass.FailedPrecondition},
		{0x8001FFFF, nil, errclass.Internal},
	} {
		err := rvError("m_EncryptSingle", q, tc.rv)
		if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
			t.Errorf("0x%X: %v, want %v", tc.rv, err, tc.sentinel)
		}
		if errclass.Of(err) != tc.class {
			t.Errorf("0x%X: class %s, want %s", tc.rv, errclass.Of(err), tc.class)
		}
		if !strings.Contains(err.Error(), "m_EncryptSingle") || !strings.Contains(err.Error(), "06.0033") {
			t.Errorf("0x%X: %q does not name the function and the APQN", tc.rv, err)
		}
	}
}

func TestCompare(t *testing.T) {
	q := apqn.MustParse("06.0033")
	cur, _ := mkvp.New(make([]byte, 16))
	raw := make([]byte, 16)
	raw[0] = 1
	other, _ := mkvp.New(raw)
	lib := hsm.Registers{Current: hsm.Register{State: apqn.StateValid, Pattern: cur}, New: hsm.Register{State: apqn.StateEmpty}}
	if err := compare(q, lib, lib); err != nil {
		t.Fatal(err)
	}
	sys := lib
	sys.Current.Pattern = other
	err := compare(q, lib, sys)
	if err == nil || errclass.Of(err) != errclass.FailedPrecondition || !strings.Contains(err.Error(), "06.0033") ||
		!strings.Contains(err.Error(), "CK_IBM_XCPQ_DOMAIN") {
		t.Fatalf("disagreement: %v", err)
	}
	// The kernel could not ask the card: nothing to compare.
	sys.Current = hsm.Register{State: apqn.StateUnknown}
	if err := compare(q, lib, sys); err != nil {
		t.Fatal(err)
	}
}
