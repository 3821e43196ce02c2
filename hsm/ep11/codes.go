package ep11

import (
	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// CK_RV values the project can meet: the PKCS#11 ones (PKCS#11 v2.40 §5.1
// / pkcs11t.h) and IBM's vendor-defined ones from ep11.h, with the
// meaning openCryptoki gives them (ep11_error_to_pkcs11_error;
// host-libraries.md §2.9).
const (
	ckrFunctionFailed      = 0x06
	ckrFunctionNotSupp     = 0x54
	ckrArgumentsBad        = 0x07
	ckrAttributeValueInv   = 0x13
	ckrDataInvalid         = 0x20
	ckrDataLenRange        = 0x21
	ckrDeviceError         = 0x30
	ckrEncryptedDataInv    = 0x40
	ckrEncryptedDataLen    = 0x41
	ckrKeySizeRange        = 0x62
	ckrKeyTypeInconsistent = 0x63
	ckrKeyFunctionNotPerm  = 0x68
	ckrMechanismInvalid    = 0x70
	ckrMechanismParamInv   = 0x71
	ckrPinIncorrect        = 0xA0
	ckrPinInvalid          = 0xA1
	ckrPinLenRange         = 0xA2
	ckrSessionClosed       = 0xB0
	ckrSessionCount        = 0xB1
	ckrSessionHandleInv    = 0xB3
	ckrSignatureInvalid    = 0xC0
	ckrSignatureLenRange   = 0xC1
	ckrTemplateIncomplete  = 0xD0
	ckrTemplateInconsist   = 0xD1
	ckrUserNotLoggedIn     = 0x101
	ckrWrappedKeyInvalid   = 0x110
	ckrWrappedKeyLenRange  = 0x112
	ckrBufferTooSmall      = 0x150

	ckrIBMWKIDMismatch     = 0x80010001
	ckrIBMInternalError    = 0x80010002
	ckrIBMTransportError   = 0x80010003
	ckrIBMBlobError        = 0x80010004
	ckrIBMBlobkeyConflict  = 0x80010005
	ckrIBMModeConflict     = 0x80010006
	ckrIBMWKNotInitialized = 0x80010009
	ckrIBMReqTimeout       = 0x8001000B
	ckrIBMTargetInvalid    = 0x80010030
)

type rvClass struct {
	sentinel error
	class    errclass.Class
	meaning  string
	hint     string
}

var rvClasses = map[uint64]rvClass{
	ckrIBMWKIDMismatch: {sentinel: hsm.ErrWrongMK, meaning: "CKR_IBM_WKID_MISMATCH: the key is enciphered by another wrapping key",
		hint: "re-encipher the key with pkcshsm_mk_change, or use an APQN whose CURRENT wrapping key enciphers it"},
	ckrIBMWKNotInitialized: {sentinel: hsm.ErrRegisterState, meaning: "CKR_IBM_WK_NOT_INITIALIZED: the wrapping key register is not set"},
	ckrIBMBlobError:        {sentinel: hsm.ErrBadBlob, meaning: "CKR_IBM_BLOB_ERROR"},
	ckrIBMBlobkeyConflict:  {sentinel: hsm.ErrBadBlob, meaning: "CKR_IBM_BLOBKEY_CONFLICT"},
	ckrIBMModeConflict:     {sentinel: hsm.ErrMechanism, meaning: "CKR_IBM_MODE_CONFLICT"},
	ckrIBMTargetInvalid: {sentinel: hsm.ErrOffline, meaning: "CKR_IBM_TARGET_INVALID: the APQN is gone",
		hint: "check the APQN with lszcrypt"},
	ckrIBMTransportError: {sentinel: hsm.ErrOffline, meaning: "CKR_IBM_TRANSPORT_ERROR",
		hint: "check the adapter with lszcrypt and that this user may open /dev/z90crypt"},
	ckrIBMReqTimeout:    {sentinel: hsm.ErrOffline, meaning: "CKR_IBM_REQ_TIMEOUT"},
	ckrIBMInternalError: {class: errclass.Internal, meaning: "CKR_IBM_INTERNAL_ERROR"},
	ckrDeviceError: {sentinel: hsm.ErrOffline, meaning: "CKR_DEVICE_ERROR",
		hint: "check the adapter with lszcrypt and that this user may open /dev/z90crypt"},
	ckrSessionClosed:       {sentinel: hsm.ErrSessionBound, meaning: "CKR_SESSION_CLOSED: the key's EP11 session is not logged in on the APQN"},
	ckrPinIncorrect:        {sentinel: hsm.ErrSessionBound, meaning: "CKR_PIN_INCORRECT: the key's EP11 session is not logged in on the APQN"},
	ckrMechanismInvalid:    {sentinel: hsm.ErrMechanism, meaning: "CKR_MECHANISM_INVALID"},
	ckrMechanismParamInv:   {sentinel: hsm.ErrMechanism, meaning: "CKR_MECHANISM_PARAM_INVALID"},
	ckrKeyTypeInconsistent: {sentinel: hsm.ErrMechanism, meaning: "CKR_KEY_TYPE_INCONSISTENT"},
	ckrKeyFunctionNotPerm:  {sentinel: hsm.ErrMechanism, meaning: "CKR_KEY_FUNCTION_NOT_PERMITTED"},
	ckrDataInvalid:         {sentinel: hsm.ErrBadData, meaning: "CKR_DATA_INVALID"},
	ckrDataLenRange:        {sentinel: hsm.ErrBadData, meaning: "CKR_DATA_LEN_RANGE"},
	ckrEncryptedDataInv:    {sentinel: hsm.ErrBadData, meaning: "CKR_ENCRYPTED_DATA_INVALID"},
	ckrEncryptedDataLen:    {sentinel: hsm.ErrBadData, meaning: "CKR_ENCRYPTED_DATA_LEN_RANGE"},
	ckrWrappedKeyInvalid:   {sentinel: hsm.ErrBadData, meaning: "CKR_WRAPPED_KEY_INVALID"},
	ckrWrappedKeyLenRange:  {sentinel: hsm.ErrBadData, meaning: "CKR_WRAPPED_KEY_LEN_RANGE"},
	ckrSignatureInvalid:    {sentinel: hsm.ErrSignature, meaning: "CKR_SIGNATURE_INVALID"},
	ckrSignatureLenRange:   {sentinel: hsm.ErrSignature, meaning: "CKR_SIGNATURE_LEN_RANGE"},
	ckrKeySizeRange:        {class: errclass.InvalidArgument, meaning: "CKR_KEY_SIZE_RANGE: the adapter does not support this key size"},
	ckrAttributeValueInv:   {class: errclass.InvalidArgument, meaning: "CKR_ATTRIBUTE_VALUE_INVALID"},
	ckrTemplateIncomplete: {class: errclass.Internal, meaning: "CKR_TEMPLATE_INCOMPLETE",
		hint: "pkcshsm and the EP11 host library disagree about a key template; report it with the library version"},
	ckrTemplateInconsist: {class: errclass.Internal, meaning: "CKR_TEMPLATE_INCONSISTENT",
		hint: "pkcshsm and the EP11 host library disagree about a key template; report it with the library version"},
	ckrArgumentsBad: {class: errclass.Internal, meaning: "CKR_ARGUMENTS_BAD",
		hint: "pkcshsm and the EP11 host library disagree about a call; report it with the library version"},
	ckrBufferTooSmall: {class: errclass.Internal, meaning: "CKR_BUFFER_TOO_SMALL"},
	ckrFunctionNotSupp: {class: errclass.FailedPrecondition, meaning: "CKR_FUNCTION_NOT_SUPPORTED: the library or the adapter firmware does not offer this",
		hint: "update the EP11 host library and the adapter firmware (openCryptoki: \"possibly caused by missing EP11 firmware fix\")"},
}

// rvError turns a failed call into an error naming the function, the
// APQN and the CK_RV.
func rvError(fn string, q apqn.ID, rv uint64) error {
	c, ok := rvClasses[rv]
	if !ok {
		c = rvClass{class: errclass.Internal, meaning: "unexpected return value",
			hint: "look the value up in the EP11 library's ep11.h (vendor values 0x8001xxxx) or the PKCS#11 specification"}
	}
	var err error
	if c.sentinel != nil {
		err = errclass.New(errclass.Of(c.sentinel), "%s on APQN %s returned CK_RV 0x%X (%s): %w", fn, q, rv, c.meaning, c.sentinel)
	} else {
		err = errclass.New(c.class, "%s on APQN %s returned CK_RV 0x%X (%s)", fn, q, rv, c.meaning)
	}
	if c.hint != "" {
		err = errclass.WithHint(err, c.hint)
	}
	return err
}
