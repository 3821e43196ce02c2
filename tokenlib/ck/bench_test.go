package ck

import (
	"fmt"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

func BenchmarkRVFromError(b *testing.B) {
	errs := []error{
		Errorf(CKR_PIN_INCORRECT, "wrong PIN"),
		fmt.Errorf("sign: %w", hsm.ErrOffline),
		errclass.New(errclass.InvalidArgument, "bad template"),
	}
	for b.Loop() {
		for _, err := range errs {
			if RVFromError(err) == CKR_OK {
				b.Fatal("CKR_OK for an error")
			}
		}
	}
}

func BenchmarkMechanismName(b *testing.B) {
	for b.Loop() {
		if MechanismName(CKM_SHA256_RSA_PKCS_PSS) == "" {
			b.Fatal("no name")
		}
	}
}
