package tokenlib

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
	"github.com/pkcshsm/pkcshsm/tokenlib/objcache"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// token is one slot's token inside a Library.
//
// Locking: mu guards the login state, the session set, session objects and
// the token object cache. It is taken after a session's mutex, never
// before, and is not held across HSM calls.
type token struct {
	lib    *Library
	slot   SlotID
	conf   slotConf
	db     *tokenDB
	log    zerolog.Logger
	mechs  map[ck.Mechanism]mechSpec
	minPIN int
	maxPIN int

	hsmMu sync.Mutex // guards pool, hsmErr, mkOps and conf.expected
	pool  *apqnPool
	// mkOps are the master key change operations active in the token
	// (see mkchange_engine.go).
	mkOps map[state.ID]*state.Op
	// hsmErr is why the last HSM check failed (nil when it passed).
	hsmErr error
	// learned holds the CURRENT patterns the last passed HSM check
	// learned from the adapters (types without a configured expectation):
	// the master keys the token's keys are under. A later check after
	// failures expects them again instead of learning whatever the
	// adapters hold then; only the end of a master key change procedure
	// clears them (see deactivate).
	learned map[mkvp.Type]mkvp.Pattern
	// ep11 runs the EP11 session modes (nil: none; see ep11session.go).
	ep11 *ep11sess.Manager

	mu         sync.Mutex
	login      ck.UserType // noUser, CKU_USER or CKU_SO
	loginEpoch uint64      // bumped on every login and logout
	dataKey    *store.DataKey
	sessions   map[SessionHandle]*session
	sessObjs   map[ObjectHandle]*object
	nextObj    ObjectHandle

	// cache holds decoded token objects visible in the current login
	// state, each with its store version; a bounded set of the objects
	// this process used last (see objectLocked).
	cache *objcache.Cache[*object]
}

func (t *token) userLoggedIn() bool { return t.login == ck.CKU_USER }

// logoutLocked ends the login: the data key is destroyed, private session
// objects are destroyed, private token objects leave the cache. The caller
// holds t.mu.
func (t *token) logoutLocked() {
	if t.login == noUser {
		return
	}
	t.ep11EndAll()
	t.login = noUser
	t.loginEpoch++
	t.dataKey.Destroy()
	t.dataKey = nil
	for h, o := range t.sessObjs {
		if o.isPrivate() {
			delete(t.sessObjs, h)
		}
	}
	t.invalidateCache()
	t.log.Info().Msg("logged out")
}

// invalidateCache drops the token object cache. The caller holds t.mu.
func (t *token) invalidateCache() { t.cache.Clear() }

// readKey returns the data key to read private objects with: only a USER
// login may see them.
func (t *token) readKey() *store.DataKey {
	if t.login == ck.CKU_USER {
		return t.dataKey
	}
	return nil
}

func errObjectHandle(h ObjectHandle) error {
	return newErrh(ck.CKR_OBJECT_HANDLE_INVALID, errclass.NotFound,
		"find the object again; it may have been destroyed", "object handle %d is not valid", h)
}

// objectLocked returns the object h as the session sees it. The caller
// holds t.mu. The returned object must not be modified.
//
// A token object comes from the cache only if the store still has the
// version the cached copy was read at: one indexed read of the object's
// row, no decoding, and every committed write of any process is seen (a
// write bumps the version in the same transaction; a deleted object is
// gone; handles are never reused). Otherwise the object is read and
// decoded (its private attributes unsealed) now, and cached. An object
// that cannot be read gets an error naming its handle; other objects are
// not affected.
func (t *token) objectLocked(ctx context.Context, h ObjectHandle) (*object, error) {
	if h >= sessionObjectBase {
		o, ok := t.sessObjs[h]
		if !ok || (o.isPrivate() && !t.userLoggedIn()) {
			return nil, errObjectHandle(h)
		}
		return o, nil
	}
	if h == 0 {
		return nil, errObjectHandle(h)
	}
	ver, err := t.db.st.Version(ctx, uint64(h))
	if errclass.Of(err) == errclass.NotFound {
		t.cache.Delete(uint64(h))
		return nil, errObjectHandle(h)
	}
	if err != nil {
		return nil, storeErr(fmt.Errorf("object handle %d: %w", h, err))
	}
	if o, ok := t.cache.Get(uint64(h)); ok && o.version == ver {
		return o, nil
	}
	so, err := t.db.st.Get(ctx, t.readKey(), uint64(h))
	switch {
	case errclass.Of(err) == errclass.NotFound, errors.Is(err, store.ErrLoginRequired):
		t.cache.Delete(uint64(h))
		return nil, errObjectHandle(h)
	case err != nil:
		t.cache.Delete(uint64(h))
		t.log.Error().Err(err).Uint("object", uint(h)).Msg("token object unreadable")
		return nil, storeErr(fmt.Errorf("object handle %d: %w", h, err))
	}
	o := fromStore(so)
	if (o.isPrivate() && !t.userLoggedIn()) || o.isHidden() {
		t.cache.Delete(uint64(h))
		return nil, errObjectHandle(h)
	}
	t.cache.Put(uint64(h), o)
	return o, nil
}

// checkWrite says whether session s may create, change or destroy an
// object with the given token/private flags. The caller holds t.mu.
func (t *token) checkWrite(s *session, tokenObj, private bool) error {
	if tokenObj && !s.rw {
		return errReadOnly()
	}
	if private && !t.userLoggedIn() {
		return newErrh(ck.CKR_USER_NOT_LOGGED_IN, errclass.PermissionDenied,
			"log in as USER; private objects belong to the user", "private objects need a USER login")
	}
	return nil
}

// insertLocked stores a new object: token objects in the store, session
// objects in memory. The caller holds t.mu.
func (t *token) insertLocked(ctx context.Context, s *session, attrs template) (ObjectHandle, error) {
	o := &object{attrs: attrs, session: s.handle}
	if !o.isToken() {
		t.nextObj++
		o.handle = sessionObjectBase + t.nextObj
		t.sessObjs[o.handle] = o
		return o.handle, nil
	}
	h, ver, err := t.db.create(ctx, t.dataKey, o)
	if err != nil {
		return 0, err
	}
	o.handle, o.version, o.session = h, ver, 0
	t.cache.Put(uint64(h), o)
	return h, nil
}

// replaceLocked writes new attributes of an existing object. The caller
// holds t.mu.
func (t *token) replaceLocked(ctx context.Context, old *object, attrs template) error {
	n := old.clone()
	n.attrs = attrs
	if !old.isToken() {
		t.sessObjs[old.handle] = n
		return nil
	}
	ver, err := t.db.update(ctx, t.dataKey, n)
	if err != nil {
		t.cache.Delete(uint64(old.handle))
		return err
	}
	n.version = ver
	t.cache.Put(uint64(n.handle), n)
	return nil
}

// removeLocked destroys an object. The caller holds t.mu.
func (t *token) removeLocked(ctx context.Context, o *object) error {
	if !o.isToken() {
		delete(t.sessObjs, o.handle)
		return nil
	}
	t.cache.Delete(uint64(o.handle))
	return t.db.remove(ctx, o.handle)
}

// noUser is the login state "nobody logged in" (CKU_SO is 0).
const noUser ck.UserType = ^ck.UserType(0)
