// Package oprules is the one table of PKCS#11 v2.40 §5 operation rules the
// module follows for its cryptographic function families (encrypt,
// decrypt, digest, sign, verify): which call may follow which, and which
// outcomes end the active operation. The engine (tokenlib) and the C
// layer (tokenlib/cabi) both consult it, so an error found while checking
// the C arguments ends an operation exactly as one found by the engine,
// and libpkcshsm(3) states the same rules.
//
// The rules, from §5.2 and the description of each function in §5.8–§5.12:
//
//   - A call that returns output in a variable-length buffer (C_Encrypt,
//     C_EncryptUpdate, C_EncryptFinal, the Decrypt ones, C_Digest,
//     C_DigestFinal, C_Sign, C_SignFinal) keeps the operation active when
//     it is a successful length query (NULL output buffer) or returns
//     CKR_BUFFER_TOO_SMALL; the application calls again with the same
//     input. Any other error ends the operation; so does success of a
//     single-part or Final call.
//   - C_DigestUpdate, C_SignUpdate and C_VerifyUpdate end the operation on
//     any error. C_Verify and C_VerifyFinal always end it (a verification
//     has no output to ask the length of).
//   - A single-part call after an Update of the same operation is
//     CKR_OPERATION_ACTIVE, and so is an Update after a length query of
//     the single-part call; both end the operation (the single-part call
//     "always terminates" except for the two cases above).
//   - Errors that say there is no operation to end (no session, no active
//     operation, the library not initialized) end nothing.
package oprules

import "github.com/pkcshsm/pkcshsm/tokenlib/ck"

// Family is a cryptographic function family; a session has at most one
// active operation per family.
type Family uint8

const (
	Encrypt Family = iota + 1
	Decrypt
	Sign
	Verify
	Digest
)

var familyNames = map[Family]string{Encrypt: "encrypt", Decrypt: "decrypt", Sign: "sign", Verify: "verify", Digest: "digest"}

func (f Family) String() string { return familyNames[f] }

// Kind is the role of a call within its family's operation.
type Kind uint8

const (
	Init   Kind = iota + 1
	Single      // C_Encrypt, C_Digest, ...: the whole operation in one call
	Update      // C_EncryptUpdate, C_DigestUpdate, ...
	Final       // C_EncryptFinal, ...
)

// Phase is how far an active operation got.
type Phase uint8

const (
	Fresh         Phase = iota // Init done, nothing else yet
	SinglePending              // a single-part length query or short buffer: the single-part call must come again
	Multi                      // an Update was called
	FinalPending               // a Final length query or short buffer: Final must come again
)

// Rule is one function of a family.
type Rule struct {
	Name   string // the C function
	Family Family
	Kind   Kind
	// Output: the function returns output in a variable-length buffer
	// (§5.2), so a length query and CKR_BUFFER_TOO_SMALL keep the
	// operation active.
	Output bool
}

// Table is every cryptographic function of the module's families. The
// dual-function calls (C_DigestEncryptUpdate, C_DecryptDigestUpdate,
// C_SignEncryptUpdate, C_DecryptVerifyUpdate), C_DigestKey and the
// Recover calls are not offered (CKR_FUNCTION_NOT_SUPPORTED, before any
// check), so they touch no operation.
var Table = []Rule{
	{"C_EncryptInit", Encrypt, Init, false},
	{"C_Encrypt", Encrypt, Single, true},
	{"C_EncryptUpdate", Encrypt, Update, true},
	{"C_EncryptFinal", Encrypt, Final, true},
	{"C_DecryptInit", Decrypt, Init, false},
	{"C_Decrypt", Decrypt, Single, true},
	{"C_DecryptUpdate", Decrypt, Update, true},
	{"C_DecryptFinal", Decrypt, Final, true},
	{"C_DigestInit", Digest, Init, false},
	{"C_Digest", Digest, Single, true},
	{"C_DigestUpdate", Digest, Update, false},
	{"C_DigestFinal", Digest, Final, true},
	{"C_SignInit", Sign, Init, false},
	{"C_Sign", Sign, Single, true},
	{"C_SignUpdate", Sign, Update, false},
	{"C_SignFinal", Sign, Final, true},
	{"C_VerifyInit", Verify, Init, false},
	{"C_Verify", Verify, Single, false},
	{"C_VerifyUpdate", Verify, Update, false},
	{"C_VerifyFinal", Verify, Final, false},
}

var byName = func() map[string]Rule {
	m := make(map[string]Rule, len(Table))
	for _, r := range Table {
		m[r.Name] = r
	}
	return m
}()

// Lookup returns the rule of C function name.
func Lookup(name string) (Rule, bool) {
	r, ok := byName[name]
	return r, ok
}

// For returns the rule of the call of kind k in family f.
func For(f Family, k Kind) Rule {
	for _, r := range Table {
		if r.Family == f && r.Kind == k {
			return r
		}
	}
	panic("oprules: no rule for " + f.String())
}

// noOperation are the errors that mean there is no active operation the
// call could end (or no session, or no library).
var noOperation = map[ck.RV]bool{
	ck.CKR_CRYPTOKI_NOT_INITIALIZED:  true,
	ck.CKR_SESSION_HANDLE_INVALID:    true,
	ck.CKR_SESSION_CLOSED:            true,
	ck.CKR_OPERATION_NOT_INITIALIZED: true,
	ck.CKR_FUNCTION_NOT_SUPPORTED:    true,
}

// Ends reports whether a call of r that returned rv ends the active
// operation of its family. lengthQuery says the call had no output buffer
// (asked for the length only). Init calls never end the operation that is
// active (their CKR_OPERATION_ACTIVE leaves it alone).
func (r Rule) Ends(rv ck.RV, lengthQuery bool) bool {
	if r.Kind == Init || noOperation[rv] {
		return false
	}
	if r.Output && (rv == ck.CKR_BUFFER_TOO_SMALL || (rv == ck.CKR_OK && lengthQuery)) {
		return false
	}
	if rv == ck.CKR_OK {
		// Success ends a single-part or Final call; an Update continues.
		return r.Kind != Update
	}
	return true
}

// Allowed reports whether a call of r may run on an operation in phase p;
// when it may not, the answer is CKR_OPERATION_ACTIVE (which ends the
// operation, see Ends). Single-part calls come only first (or again after
// their own length query); Update calls only before any single-part
// length query or Final length query; Final after anything but a pending
// single-part call.
func (r Rule) Allowed(p Phase) bool {
	switch r.Kind {
	case Single:
		return p == Fresh || p == SinglePending
	case Update:
		return p == Fresh || p == Multi
	case Final:
		return p == Fresh || p == Multi || p == FinalPending
	}
	return true
}

// After is the phase an operation is in after a call of r that kept it
// active (see Ends).
func (r Rule) After(p Phase) Phase {
	switch r.Kind {
	case Single:
		return SinglePending
	case Update:
		return Multi
	case Final:
		return FinalPending
	}
	return p
}
