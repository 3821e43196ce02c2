package tokenlib

import (
	"context"
	"errors"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// tokenDB adapts the token store to the engine: PKCS#11 user types in,
// errors with their exact CK_RV out.
type tokenDB struct {
	st *store.Store
}

func storeUser(u ck.UserType) store.UserType {
	if u == ck.CKU_SO {
		return store.SO
	}
	return store.User
}

// storeErr gives store errors the CK_RV PKCS#11 prescribes.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var rv ck.RV
	switch {
	case errors.Is(err, store.ErrPINIncorrect):
		rv = ck.CKR_PIN_INCORRECT
	case errors.Is(err, store.ErrPINLocked):
		rv = ck.CKR_PIN_LOCKED
	case errors.Is(err, store.ErrPINLen):
		rv = ck.CKR_PIN_LEN_RANGE
	case errors.Is(err, store.ErrTokenNotInitialized):
		rv = ck.CKR_TOKEN_NOT_RECOGNIZED
	case errors.Is(err, store.ErrUserPINNotInitialized):
		rv = ck.CKR_USER_PIN_NOT_INITIALIZED
	case errors.Is(err, store.ErrStaleDataKey), errors.Is(err, store.ErrLoginRequired):
		rv = ck.CKR_USER_NOT_LOGGED_IN
	case errclass.Of(err) == errclass.Unavailable || errclass.Of(err) == errclass.DataLoss:
		rv = ck.CKR_DEVICE_ERROR
	case errclass.Of(err) == errclass.NotFound:
		rv = ck.CKR_OBJECT_HANDLE_INVALID
	default:
		rv = ck.RVFromError(err)
	}
	return &Error{rv: rv, err: err}
}

func (d *tokenDB) login(u ck.UserType, pin []byte) (*store.DataKey, error) {
	k, err := d.st.Login(context.Background(), storeUser(u), pin)
	return k, storeErr(err)
}

func (d *tokenDB) info() (store.TokenInfo, error) {
	i, err := d.st.Info(context.Background())
	return i, storeErr(err)
}

// toStore converts an engine object to the store's form. CKA_UNIQUE_ID is
// the store's own column, not an attribute.
func toStore(o *object) *store.Object {
	so := &store.Object{
		Handle:   uint64(o.handle),
		UniqueID: string(o.attrs[CKA_UNIQUE_ID]),
		Class:    uint(o.class()),
		Private:  o.isPrivate(),
		Attrs:    make(map[uint32][]byte, len(o.attrs)),
		Version:  o.version,
	}
	for a, v := range o.attrs {
		if a != CKA_UNIQUE_ID {
			so.Attrs[uint32(a)] = storedValue(a, v)
		}
	}
	return so
}

func fromStore(so *store.Object) *object {
	o := &object{handle: ObjectHandle(so.Handle), version: so.Version, attrs: make(template, len(so.Attrs)+1)}
	for a, v := range so.Attrs {
		o.attrs[ck.Attribute(a)] = memoryValue(ck.Attribute(a), v)
	}
	o.attrs[CKA_UNIQUE_ID] = []byte(so.UniqueID)
	return o
}

func (d *tokenDB) create(ctx context.Context, dk *store.DataKey, o *object) (ObjectHandle, uint64, error) {
	so := toStore(o)
	so.Handle, so.UniqueID, so.Version = 0, "", 0
	if err := d.st.Create(ctx, dk, so); err != nil {
		return 0, 0, storeErr(err)
	}
	if so.Handle >= uint64(sessionObjectBase) {
		return 0, 0, newErr(ck.CKR_DEVICE_MEMORY, errclass.Internal, "token object handle %d out of range", so.Handle)
	}
	o.attrs[CKA_UNIQUE_ID] = []byte(so.UniqueID)
	return ObjectHandle(so.Handle), so.Version, nil
}

func (d *tokenDB) update(ctx context.Context, dk *store.DataKey, o *object) (uint64, error) {
	so := toStore(o)
	if err := d.st.Update(ctx, dk, so); err != nil {
		if errclass.Of(err) == errclass.Conflict {
			return 0, &Error{rv: ck.CKR_FUNCTION_FAILED, err: errclass.WithHint(err, "another process changed the object at the same time; retry")}
		}
		return 0, storeErr(err)
	}
	return so.Version, nil
}

func (d *tokenDB) remove(ctx context.Context, h ObjectHandle) error {
	return storeErr(d.st.Delete(ctx, uint64(h)))
}
