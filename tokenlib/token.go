package tokenlib

import (
	"context"
	"errors"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
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

	mu         sync.Mutex
	login      ck.UserType // noUser, CKU_USER or CKU_SO
	loginEpoch uint64      // bumped on every login and logout
	dataKey    *store.DataKey
	sessions   map[SessionHandle]*session
	sessObjs   map[ObjectHandle]*object
	nextObj    ObjectHandle

	// cache holds the decoded token objects visible in the current login
	// state, valid while the store's generation equals cacheGen.
	cache      map[ObjectHandle]*object
	cacheGen   uint64
	cacheValid bool
}

func (t *token) userLoggedIn() bool { return t.login == ck.CKU_USER }

// logoutLocked ends the login: the data key is destroyed, private session
// objects are destroyed, private token objects leave the cache. The caller
// holds t.mu.
func (t *token) logoutLocked() {
	if t.login == noUser {
		return
	}
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
func (t *token) invalidateCache() {
	t.cacheValid = false
	clear(t.cache)
}

// readKey returns the data key to read private objects with: only a USER
// login may see them.
func (t *token) readKey() *store.DataKey {
	if t.login == ck.CKU_USER {
		return t.dataKey
	}
	return nil
}

// refreshLocked makes the cache current: one cheap generation read, and a
// reload only when another process (or this one) changed the store since.
// The caller holds t.mu.
func (t *token) refreshLocked(ctx context.Context) error {
	gen, err := t.db.generation(ctx)
	if err != nil {
		return err
	}
	if t.cacheValid && gen == t.cacheGen {
		return nil
	}
	objs, gen, err := t.db.list(ctx, t.readKey())
	if err != nil {
		return err
	}
	next := make(map[ObjectHandle]*object, len(objs))
	for _, o := range objs {
		if o.isPrivate() && !t.userLoggedIn() {
			continue
		}
		next[o.handle] = o
	}
	t.cache, t.cacheGen, t.cacheValid = next, gen, true
	return nil
}

// noteWrite records a write this process just committed: if nobody else
// wrote in between, the cache is updated in place instead of reloaded.
func (t *token) noteWrite(ctx context.Context, before uint64, apply func()) {
	gen, err := t.db.generation(ctx)
	if err == nil && t.cacheValid && before == t.cacheGen && gen == before+1 {
		apply()
		t.cacheGen = gen
		return
	}
	t.invalidateCache()
}

func errObjectHandle(h ObjectHandle) error {
	return newErrh(ck.CKR_OBJECT_HANDLE_INVALID, errclass.NotFound,
		"find the object again; it may have been destroyed", "object handle %d is not valid", h)
}

// objectLocked returns the object h as the session sees it. The caller
// holds t.mu. The returned object must not be modified.
func (t *token) objectLocked(ctx context.Context, h ObjectHandle) (*object, error) {
	if h >= sessionObjectBase {
		o, ok := t.sessObjs[h]
		if !ok || (o.isPrivate() && !t.userLoggedIn()) {
			return nil, errObjectHandle(h)
		}
		return o, nil
	}
	if t.cacheValid {
		gen, err := t.db.generation(ctx)
		if err != nil {
			return nil, err
		}
		if gen != t.cacheGen {
			return t.revalidateLocked(ctx, h)
		}
	} else if err := t.refreshLocked(ctx); err != nil {
		return nil, err
	}
	o, ok := t.cache[h]
	if !ok {
		return nil, errObjectHandle(h)
	}
	return o, nil
}

// revalidateLocked returns object h from a stale cache (someone committed
// a write since it was loaded) without reloading the whole cache: the
// object's stored version, one indexed read, says whether the cached copy
// is still current, and only a changed object is read and decoded again.
// A master key change pass commits a batch of thousands of objects every
// few milliseconds; reloading (decoding) every object of the token after
// each batch, while holding t.mu, stalls all operations of the token.
// The cache stays marked stale (cacheGen is not moved), so a search still
// reloads it as a whole; objects it does not hold (made by another
// process) are found that way too. The caller holds t.mu.
func (t *token) revalidateLocked(ctx context.Context, h ObjectHandle) (*object, error) {
	o, ok := t.cache[h]
	if !ok {
		if err := t.refreshLocked(ctx); err != nil {
			return nil, err
		}
		if o, ok = t.cache[h]; !ok {
			return nil, errObjectHandle(h)
		}
		return o, nil
	}
	gone := func(err error) bool {
		switch {
		case errclass.Of(err) == errclass.NotFound, errclass.Of(err) == errclass.DataLoss,
			errors.Is(err, store.ErrLoginRequired):
			// Gone, unreadable or no longer visible: a reload would
			// drop it from the cache, so do the same.
			delete(t.cache, h)
			return true
		}
		return false
	}
	ver, err := t.db.st.Version(ctx, uint64(h))
	if gone(err) {
		return nil, errObjectHandle(h)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	if ver == o.version {
		return o, nil
	}
	so, err := t.db.st.Get(ctx, t.readKey(), uint64(h))
	if gone(err) {
		return nil, errObjectHandle(h)
	}
	if err != nil {
		return nil, storeErr(err)
	}
	fresh := fromStore(so)
	if fresh.isPrivate() && !t.userLoggedIn() {
		delete(t.cache, h)
		return nil, errObjectHandle(h)
	}
	t.cache[h] = fresh
	return fresh, nil
}

// visibleLocked returns every object the Library can see now. The caller
// holds t.mu.
func (t *token) visibleLocked(ctx context.Context) ([]*object, error) {
	if err := t.refreshLocked(ctx); err != nil {
		return nil, err
	}
	out := make([]*object, 0, len(t.cache)+len(t.sessObjs))
	for _, o := range t.cache {
		out = append(out, o)
	}
	for _, o := range t.sessObjs {
		if o.isPrivate() && !t.userLoggedIn() {
			continue
		}
		out = append(out, o)
	}
	return out, nil
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
	before := t.cacheGen
	if err := t.refreshLocked(ctx); err != nil {
		return 0, err
	}
	before = t.cacheGen
	h, ver, err := t.db.create(ctx, t.dataKey, o)
	if err != nil {
		return 0, err
	}
	o.handle, o.version, o.session = h, ver, 0
	t.noteWrite(ctx, before, func() { t.cache[h] = o })
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
	before := t.cacheGen
	ver, err := t.db.update(ctx, t.dataKey, n)
	if err != nil {
		return err
	}
	n.version = ver
	t.noteWrite(ctx, before, func() { t.cache[n.handle] = n })
	return nil
}

// removeLocked destroys an object. The caller holds t.mu.
func (t *token) removeLocked(ctx context.Context, o *object) error {
	if !o.isToken() {
		delete(t.sessObjs, o.handle)
		return nil
	}
	before := t.cacheGen
	if err := t.db.remove(ctx, o.handle); err != nil {
		return err
	}
	t.noteWrite(ctx, before, func() { delete(t.cache, o.handle) })
	return nil
}

// noUser is the login state "nobody logged in" (CKU_SO is 0).
const noUser ck.UserType = ^ck.UserType(0)
