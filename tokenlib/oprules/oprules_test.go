package oprules

import (
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
)

// TestTableShape: every family has exactly one function of each kind, and
// only the calls with output buffers have the §5.2 exceptions.
func TestTableShape(t *testing.T) {
	seen := map[Family]map[Kind]bool{}
	for _, r := range Table {
		if seen[r.Family] == nil {
			seen[r.Family] = map[Kind]bool{}
		}
		if seen[r.Family][r.Kind] {
			t.Errorf("%s: second function of its kind", r.Name)
		}
		seen[r.Family][r.Kind] = true
		if got, ok := Lookup(r.Name); !ok || got != r {
			t.Errorf("Lookup(%s) = %+v", r.Name, got)
		}
		if For(r.Family, r.Kind) != r {
			t.Errorf("For(%s)", r.Name)
		}
	}
	for _, f := range []Family{Encrypt, Decrypt, Sign, Verify, Digest} {
		if len(seen[f]) != 4 {
			t.Errorf("%s has %d kinds", f, len(seen[f]))
		}
	}
	for _, name := range []string{"C_Verify", "C_VerifyFinal", "C_DigestUpdate", "C_SignUpdate", "C_VerifyUpdate"} {
		if r, _ := Lookup(name); r.Output {
			t.Errorf("%s has no output buffer", name)
		}
	}
}

// TestEnds: PKCS#11 v2.40 §5.2 and the function descriptions.
func TestEnds(t *testing.T) {
	cases := []struct {
		name  string
		rv    ck.RV
		query bool
		ends  bool
	}{
		{"C_Encrypt", ck.CKR_OK, true, false},
		{"C_Encrypt", ck.CKR_BUFFER_TOO_SMALL, false, false},
		{"C_Encrypt", ck.CKR_OK, false, true},
		{"C_Encrypt", ck.CKR_ARGUMENTS_BAD, false, true},
		{"C_Encrypt", ck.CKR_DATA_LEN_RANGE, false, true},
		{"C_Encrypt", ck.CKR_OPERATION_ACTIVE, false, true},
		{"C_EncryptUpdate", ck.CKR_OK, false, false},
		{"C_EncryptUpdate", ck.CKR_OK, true, false},
		{"C_EncryptUpdate", ck.CKR_BUFFER_TOO_SMALL, false, false},
		{"C_EncryptUpdate", ck.CKR_DEVICE_ERROR, false, true},
		{"C_DigestUpdate", ck.CKR_ARGUMENTS_BAD, false, true},
		{"C_DigestUpdate", ck.CKR_OK, false, false},
		{"C_Digest", ck.CKR_OK, true, false},
		{"C_Digest", ck.CKR_ARGUMENTS_BAD, false, true},
		{"C_Verify", ck.CKR_SIGNATURE_INVALID, false, true},
		{"C_Verify", ck.CKR_OK, false, true},
		{"C_VerifyFinal", ck.CKR_BUFFER_TOO_SMALL, false, true}, // no output: no exception
		{"C_Sign", ck.CKR_SESSION_HANDLE_INVALID, false, false},
		{"C_Sign", ck.CKR_OPERATION_NOT_INITIALIZED, false, false},
		{"C_Sign", ck.CKR_CRYPTOKI_NOT_INITIALIZED, false, false},
		{"C_SignInit", ck.CKR_OPERATION_ACTIVE, false, false},
		{"C_SignInit", ck.CKR_KEY_HANDLE_INVALID, false, false},
	}
	for _, c := range cases {
		r, _ := Lookup(c.name)
		if got := r.Ends(c.rv, c.query); got != c.ends {
			t.Errorf("%s %v (query %v): ends %v, want %v", c.name, c.rv, c.query, got, c.ends)
		}
	}
}

// TestPhases: single-part calls only first, Update never after a pending
// single-part or Final call.
func TestPhases(t *testing.T) {
	single, update, final := For(Digest, Single), For(Digest, Update), For(Digest, Final)
	want := map[Kind]map[Phase]bool{
		Single: {Fresh: true, SinglePending: true, Multi: false, FinalPending: false},
		Update: {Fresh: true, SinglePending: false, Multi: true, FinalPending: false},
		Final:  {Fresh: true, SinglePending: false, Multi: true, FinalPending: true},
	}
	for _, r := range []Rule{single, update, final} {
		for p, ok := range want[r.Kind] {
			if r.Allowed(p) != ok {
				t.Errorf("%s in phase %d: allowed %v, want %v", r.Name, p, r.Allowed(p), ok)
			}
		}
	}
	if single.After(Fresh) != SinglePending || update.After(Fresh) != Multi || final.After(Multi) != FinalPending {
		t.Error("phase transitions")
	}
}
