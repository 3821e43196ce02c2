package tokenlib

import (
	"context"
	"slices"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// CreateObject creates an object from a template (C_CreateObject). Secret
// and private keys given in the clear (CKA_VALUE, or the RSA components)
// are imported into the HSM: only the secure key blob is stored, the clear
// value is dropped.
func (l *Library) CreateObject(h SessionHandle, attrs []Attribute) (ObjectHandle, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	tmpl, err := parseTemplate(attrs)
	if err != nil {
		return 0, err
	}
	c, err := checkClass(tmpl)
	if err != nil {
		return 0, err
	}
	if err := checkAttrs(c, tmpl, nil); err != nil {
		return 0, err
	}
	if err := checkValues(c, tmpl); err != nil {
		return 0, err
	}
	if c == ck.CKO_PUBLIC_KEY && tmpl.has(ck.CKA_MODULUS_BITS) {
		return 0, newErrh(ck.CKR_ATTRIBUTE_READ_ONLY, errclass.InvalidArgument,
			"give CKA_MODULUS; the token derives the size", "CKA_MODULUS_BITS is read-only when creating a public key")
	}
	t := s.tok
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := objectDefaults(tmpl, c); err != nil {
		return 0, err
	}
	if err := t.checkWrite(s, tmpl.boolOr(ck.CKA_TOKEN, false), tmpl.boolOr(ck.CKA_PRIVATE, true)); err != nil {
		return 0, err
	}
	if err := t.checkTrusted(tmpl); err != nil {
		return 0, err
	}
	ctx = t.ep11Bind(ctx, s, tmpl)
	switch c {
	case ck.CKO_CERTIFICATE:
		err = completeCertificate(tmpl)
	case ck.CKO_SECRET_KEY:
		err = t.importSecret(ctx, tmpl)
	case ck.CKO_PRIVATE_KEY:
		err = t.importPrivate(ctx, tmpl)
	case ck.CKO_PUBLIC_KEY:
		err = completePublic(tmpl)
	}
	if err != nil {
		return 0, err
	}
	oh, err := t.insertLocked(ctx, s, tmpl)
	if err != nil {
		return 0, err
	}
	t.log.Debug().Uint("object", uint(oh)).Str("class", c.String()).Msg("object created")
	return oh, nil
}

// CopyObject copies an object, applying a template of changes
// (C_CopyObject). CKA_TOKEN and CKA_PRIVATE may change here, besides the
// attributes SetAttributeValue accepts. A key copy shares the secure key.
func (l *Library) CopyObject(h SessionHandle, oh ObjectHandle, attrs []Attribute) (ObjectHandle, error) {
	s, err := l.session(h)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	tmpl, err := parseTemplate(attrs)
	if err != nil {
		return 0, err
	}
	t := s.tok
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.objectLocked(ctx, oh)
	if err != nil {
		return 0, err
	}
	if !o.attrs.boolOr(ck.CKA_COPYABLE, true) {
		return 0, newErr(ck.CKR_ACTION_PROHIBITED, errclass.FailedPrecondition, "object %d has CKA_COPYABLE false", oh)
	}
	na, err := setAttrs(o, tmpl, true)
	if err != nil {
		return 0, err
	}
	if err := checkValues(o.class(), tmpl); err != nil {
		return 0, err
	}
	if err := t.checkTrusted(tmpl); err != nil {
		return 0, err
	}
	na[CKA_UNIQUE_ID] = newUniqueID()
	if err := t.checkWrite(s, na.boolOr(ck.CKA_TOKEN, false), na.boolOr(ck.CKA_PRIVATE, true)); err != nil {
		return 0, err
	}
	if err := t.ep11CheckCopy(ctx, s, na); err != nil {
		return 0, err
	}
	return t.insertLocked(ctx, s, na)
}

// writeObject runs fn for a change of object oh through session h: the
// session and its token stay locked while fn runs, and o is the object as
// the session sees it. fn checks the session may write it.
func (l *Library) writeObject(h SessionHandle, oh ObjectHandle, fn func(ctx context.Context, s *session, t *token, o *object) error) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	t := s.tok
	ctx := context.Background()
	t.mu.Lock()
	defer t.mu.Unlock()
	o, err := t.objectLocked(ctx, oh)
	if err != nil {
		return err
	}
	return fn(ctx, s, t, o)
}

// readObject returns object oh as session h sees it. The object is an
// immutable snapshot, read without holding any lock afterwards.
func (l *Library) readObject(h SessionHandle, oh ObjectHandle) (*object, error) {
	s, err := l.session(h)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.objectLocked(context.Background(), oh)
}

// DestroyObject destroys an object (C_DestroyObject).
func (l *Library) DestroyObject(h SessionHandle, oh ObjectHandle) error {
	return l.writeObject(h, oh, func(ctx context.Context, s *session, t *token, o *object) error {
		if err := t.checkWrite(s, o.isToken(), o.isPrivate()); err != nil {
			return err
		}
		if !o.attrs.boolOr(ck.CKA_DESTROYABLE, true) {
			return newErr(ck.CKR_ACTION_PROHIBITED, errclass.FailedPrecondition, "object %d has CKA_DESTROYABLE false", oh)
		}
		if err := t.removeLocked(ctx, o); err != nil {
			return err
		}
		t.log.Debug().Uint("object", uint(oh)).Msg("object destroyed")
		return nil
	})
}

// AttrRequest is one entry of a C_GetAttributeValue template. Buf is the
// caller's buffer; nil asks for the length only. Len is set to the value's
// length, or to -1 (CK_UNAVAILABLE_INFORMATION) when the attribute is
// sensitive, invalid, or Buf is too small.
type AttrRequest struct {
	Type ck.Attribute
	Buf  []byte
	Len  int
}

// GetAttributeValue reads attributes (C_GetAttributeValue). Every entry is
// processed; the error is CKR_ATTRIBUTE_SENSITIVE, CKR_ATTRIBUTE_TYPE_INVALID
// or CKR_BUFFER_TOO_SMALL if any entry had that problem.
func (l *Library) GetAttributeValue(h SessionHandle, oh ObjectHandle, req []AttrRequest) error {
	o, err := l.readObject(h, oh)
	if err != nil {
		return err
	}
	var rv ck.RV
	var bad ck.Attribute
	flags := keyFlagsView(o)
	for i := range req {
		r := &req[i]
		v, ok := o.attrs[r.Type]
		if f, isFlag := flags[r.Type]; isFlag {
			v, ok = f, true
		}
		switch {
		case o.isKey() && o.class() != ck.CKO_PUBLIC_KEY && keyMaterial[r.Type] && allowed(o.class(), r.Type):
			r.Len, rv, bad = -1, ck.CKR_ATTRIBUTE_SENSITIVE, r.Type
		case !ok:
			r.Len = -1
			if rv == 0 {
				rv, bad = ck.CKR_ATTRIBUTE_TYPE_INVALID, r.Type
			}
		case r.Buf == nil:
			r.Len = len(v)
		case len(r.Buf) < len(v):
			r.Len = -1
			if rv == 0 {
				rv, bad = ck.CKR_BUFFER_TOO_SMALL, r.Type
			}
		default:
			r.Len = copy(r.Buf, v)
		}
	}
	switch rv {
	case 0:
		return nil
	case ck.CKR_ATTRIBUTE_SENSITIVE:
		return newErrh(rv, errclass.PermissionDenied, "secure keys never reveal their clear value; use the HSM mechanisms",
			"%s of object %d is sensitive", attrName(bad), oh)
	case ck.CKR_ATTRIBUTE_TYPE_INVALID:
		return newErr(rv, errclass.InvalidArgument, "object %d has no %s", oh, attrName(bad))
	}
	return newErr(rv, errclass.InvalidArgument, "buffer for %s of object %d is too small", attrName(bad), oh)
}

// GetAttributes is GetAttributeValue for Go callers: it returns the values
// of the requested attributes, in order, or the first problem.
func (l *Library) GetAttributes(h SessionHandle, oh ObjectHandle, types ...ck.Attribute) ([][]byte, error) {
	req := make([]AttrRequest, len(types))
	for i, a := range types {
		req[i].Type = a
	}
	if err := l.GetAttributeValue(h, oh, req); err != nil {
		return nil, err
	}
	for i := range req {
		req[i].Buf = make([]byte, req[i].Len)
	}
	if err := l.GetAttributeValue(h, oh, req); err != nil {
		return nil, err
	}
	out := make([][]byte, len(req))
	for i := range req {
		out[i] = req[i].Buf[:req[i].Len]
	}
	return out, nil
}

// SetAttributeValue changes attributes (C_SetAttributeValue). Read-only
// attributes are refused; CKA_SENSITIVE can only become true and
// CKA_EXTRACTABLE only false. Nothing changes unless every attribute can.
func (l *Library) SetAttributeValue(h SessionHandle, oh ObjectHandle, attrs []Attribute) error {
	return l.writeObject(h, oh, func(ctx context.Context, s *session, t *token, o *object) error {
		tmpl, err := parseTemplate(attrs)
		if err != nil {
			return err
		}
		if err := t.checkWrite(s, o.isToken(), o.isPrivate()); err != nil {
			return err
		}
		na, err := setAttrs(o, tmpl, false)
		if err != nil {
			return err
		}
		if err := checkValues(o.class(), tmpl); err != nil {
			return err
		}
		if err := t.checkTrusted(tmpl); err != nil {
			return err
		}
		return t.replaceLocked(ctx, o, na)
	})
}

// findState is an active C_FindObjects search. Token objects are read
// from the store page by page as FindObjects asks for them, through the
// store's indexes (see findFilter), so a search over a million objects
// holds one page of handles, not the token. Session objects (in memory
// anyway) are matched at FindObjectsInit and returned after the token
// objects, so handles come in increasing order.
type findState struct {
	filter    store.Filter
	tokenDone bool // no (more) token objects match
	session   []ObjectHandle
	epoch     uint64
}

// FindObjectsInit starts a search for objects matching every attribute of
// the template (C_FindObjectsInit). Attributes the token does not know, or
// values of the wrong shape, match nothing.
func (l *Library) FindObjectsInit(h SessionHandle, attrs []Attribute) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.find != nil {
		return newErrh(ck.CKR_OPERATION_ACTIVE, errclass.FailedPrecondition,
			"call FindObjectsFinal first", "a search is already active in this session")
	}
	q := make(template, len(attrs))
	for _, a := range attrs {
		if prev, dup := q[a.Type]; dup && string(prev) != string(a.Value) {
			q = nil // contradictory: nothing matches
			break
		}
		q[a.Type] = a.Value
	}
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	fs := &findState{epoch: t.loginEpoch, tokenDone: q == nil}
	if q != nil {
		var ok bool
		fs.filter, ok = findFilter(q)
		fs.tokenDone = !ok
		for _, o := range t.sessObjs {
			if (!o.isPrivate() || t.userLoggedIn()) && o.attrs.matches(q) {
				fs.session = append(fs.session, o.handle)
			}
		}
		slices.Sort(fs.session)
	}
	s.find = fs
	return nil
}

// findFilter turns a search template into the store filter that selects
// the same token objects, using the store's own columns where they hold
// the attribute: CKA_CLASS (class), CKA_PRIVATE (private), CKA_UNIQUE_ID
// (unique id); every store object has CKA_TOKEN true. The engine keeps
// those columns equal to the attributes (see toStore), and the store
// compares every other attribute exactly as template.matches does. ok is
// false when no token object can match.
func findFilter(q template) (f store.Filter, ok bool) {
	for a, v := range q {
		switch a {
		case ck.CKA_CLASS:
			c, good := q.ulong(a)
			if !good || string(ulongBytes(c)) != string(v) {
				return f, false
			}
			f.Classes = []uint{c}
		case ck.CKA_TOKEN:
			if string(v) != string(boolBytes(true)) {
				return f, false
			}
		case ck.CKA_PRIVATE:
			switch string(v) {
			case string(boolBytes(true)):
				f.Private = new(bool)
				*f.Private = true
			case string(boolBytes(false)):
				f.Private = new(bool)
			default:
				return f, false
			}
		case CKA_UNIQUE_ID:
			if len(v) == 0 {
				return f, false
			}
			f.UniqueID = string(v)
		default:
			if f.Attrs == nil {
				f.Attrs = map[uint32][]byte{}
			}
			f.Attrs[uint32(a)] = storedValue(a, v)
		}
	}
	if len(f.Classes) == 0 {
		// The token's hidden objects (EP11 session and card-PIN records)
		// are CKO_HW_FEATURE objects, a class no application can create:
		// a search without a class leaves them out in SQL.
		f.ExcludeClasses = []uint{uint(ck.CKO_HW_FEATURE)}
	}
	return f, true
}

// FindObjects returns up to max more handles of the active search.
func (l *Library) FindObjects(h SessionHandle, max int) ([]ObjectHandle, error) {
	s, err := l.session(h)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	fs := s.find
	if fs == nil {
		return nil, newErrh(ck.CKR_OPERATION_NOT_INITIALIZED, errclass.FailedPrecondition,
			"call FindObjectsInit first", "no search is active in this session")
	}
	if max <= 0 {
		return nil, nil
	}
	t := s.tok
	t.mu.Lock()
	defer t.mu.Unlock()
	if fs.epoch != t.loginEpoch {
		// A logout (or login) since FindObjectsInit: drop the session
		// objects the session may no longer see. Token objects are read
		// with the current login state anyway.
		var keep []ObjectHandle
		for _, oh := range fs.session {
			if _, err := t.objectLocked(context.Background(), oh); err == nil {
				keep = append(keep, oh)
			}
		}
		fs.session, fs.epoch = keep, t.loginEpoch
	}
	var out []ObjectHandle
	if !fs.tokenDone {
		f := fs.filter
		f.Limit = max
		hs, err := t.db.st.Find(context.Background(), t.readKey(), f)
		if err != nil {
			return nil, storeErr(err)
		}
		for _, h := range hs {
			// Hidden objects (EP11 session and card-PIN records) are
			// CKO_HW_FEATURE objects; a search that may match that class
			// looks at each match, which objectLocked refuses for them.
			if mayMatchHidden(f) {
				if _, err := t.objectLocked(context.Background(), ObjectHandle(h)); errclass.Of(err) == errclass.NotFound {
					continue
				}
			}
			out = append(out, ObjectHandle(h))
		}
		if len(hs) < max {
			fs.tokenDone = true
		} else {
			fs.filter.After = hs[len(hs)-1]
		}
	}
	n := min(max-len(out), len(fs.session))
	out = append(out, fs.session[:n]...)
	fs.session = fs.session[n:]
	return out, nil
}

// mayMatchHidden says whether a search can find CKO_HW_FEATURE objects,
// the class of the token's hidden objects (findFilter excludes it from
// searches that name no class).
func mayMatchHidden(f store.Filter) bool {
	return slices.Contains(f.Classes, uint(ck.CKO_HW_FEATURE))
}

// FindObjectsFinal ends the active search.
func (l *Library) FindObjectsFinal(h SessionHandle) error {
	s, err := l.session(h)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.find == nil {
		return newErr(ck.CKR_OPERATION_NOT_INITIALIZED, errclass.FailedPrecondition, "no search is active in this session")
	}
	s.find = nil
	return nil
}
