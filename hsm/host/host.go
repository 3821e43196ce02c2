// Package host routes each APQN to the IBM host library of its adapter
// mode: CCA queues to the CCA backend (hsm/cca, libcsulcca.so), EP11
// queues to the EP11 backend (hsm/ep11, libep11.so). It is what
// `hsm-backend = host` opens (see hsm/open). A library the configured
// tokens do not need may be absent; an APQN of that mode is then an
// error naming the library.
package host

import (
	"context"
	"errors"
	"slices"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
)

// Backend is the composite.
type Backend struct {
	bus apqn.Bus
	// CCA and EP11 serve their modes; nil when that library is not loaded.
	CCA, EP11 hsm.Backend
	// Missing says why a nil backend is absent (the load error), for the
	// error of a call that needs it.
	MissingCCA, MissingEP11 error
}

var (
	_ hsm.Backend  = (*Backend)(nil)
	_ hsm.Sessions = (*Backend)(nil)
)

// New returns a composite over the AP bus at sysfsRoot.
func New(sysfsRoot string, cca, ep11 hsm.Backend) *Backend {
	return &Backend{bus: apqn.Bus{Root: sysfsRoot}, CCA: cca, EP11: ep11}
}

// pick returns the backend of q's mode.
func (b *Backend) pick(q apqn.ID) (hsm.Backend, error) {
	c, err := b.bus.Card(q.Card)
	if err != nil {
		if errors.Is(err, errclass.NotFound) {
			return nil, errclass.Newh(errclass.NotFound, "list the APQNs with lszcrypt", "APQN %s: %w", q, hsm.ErrNoSuchAPQN)
		}
		return nil, err
	}
	switch c.Mode {
	case apqn.ModeCCA:
		if b.CCA == nil {
			return nil, b.missing(q, "CCA", b.MissingCCA)
		}
		return b.CCA, nil
	case apqn.ModeEP11:
		if b.EP11 == nil {
			return nil, b.missing(q, "EP11", b.MissingEP11)
		}
		return b.EP11, nil
	}
	return nil, errclass.New(errclass.InvalidArgument, "APQN %s is on a %s card, neither CCA nor EP11: %w", q, c.Type, hsm.ErrWrongMode)
}

func (b *Backend) missing(q apqn.ID, mode string, why error) error {
	if why != nil {
		return errclass.New(errclass.Of(why), "APQN %s needs the %s host library: %w", q, mode, why)
	}
	return errclass.Newh(errclass.FailedPrecondition, "configure a "+mode+" token in pkcshsm.conf so the library is loaded",
		"APQN %s is a %s queue and the %s host library is not loaded", q, mode, mode)
}

// Queues lists the APQNs of both libraries in ascending order.
func (b *Backend) Queues(ctx context.Context) ([]hsm.QueueInfo, error) {
	var out []hsm.QueueInfo
	for _, be := range []hsm.Backend{b.CCA, b.EP11} {
		if be == nil {
			continue
		}
		qs, err := be.Queues(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, qs...)
	}
	slices.SortFunc(out, func(a, c hsm.QueueInfo) int { return a.ID.Compare(c.ID) })
	return out, nil
}

func (b *Backend) Queue(ctx context.Context, q apqn.ID) (hsm.QueueInfo, error) {
	be, err := b.pick(q)
	if err != nil {
		return hsm.QueueInfo{}, err
	}
	return be.Queue(ctx, q)
}

func (b *Backend) GenerateKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.GenerateKey(ctx, q, spec)
}

func (b *Backend) GenerateKeyPair(ctx context.Context, q apqn.ID, spec hsm.KeySpec) ([]byte, []byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, nil, err
	}
	return be.GenerateKeyPair(ctx, q, spec)
}

func (b *Backend) ImportKey(ctx context.Context, q apqn.ID, spec hsm.KeySpec, material []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.ImportKey(ctx, q, spec, material)
}

func (b *Backend) PublicKey(ctx context.Context, q apqn.ID, key []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.PublicKey(ctx, q, key)
}

func (b *Backend) Encrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.Encrypt(ctx, q, key, m, p, data)
}

func (b *Backend) Decrypt(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.Decrypt(ctx, q, key, m, p, data)
}

func (b *Backend) Sign(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.Sign(ctx, q, key, m, p, data)
}

func (b *Backend) Verify(ctx context.Context, q apqn.ID, key []byte, m hsm.Mechanism, p hsm.Params, data, sig []byte) error {
	be, err := b.pick(q)
	if err != nil {
		return err
	}
	return be.Verify(ctx, q, key, m, p, data, sig)
}

func (b *Backend) WrapKey(ctx context.Context, q apqn.ID, wrapping []byte, m hsm.Mechanism, p hsm.Params, target []byte) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.WrapKey(ctx, q, wrapping, m, p, target)
}

func (b *Backend) UnwrapKey(ctx context.Context, q apqn.ID, unwrapping []byte, m hsm.Mechanism, p hsm.Params, wrapped []byte, spec hsm.KeySpec) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.UnwrapKey(ctx, q, unwrapping, m, p, wrapped, spec)
}

func (b *Backend) Reencipher(ctx context.Context, q apqn.ID, blob []byte, d hsm.Direction) ([]byte, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	return be.Reencipher(ctx, q, blob, d)
}

// sessions returns the EP11 backend's sessions for q.
func (b *Backend) sessions(q apqn.ID) (hsm.Sessions, error) {
	be, err := b.pick(q)
	if err != nil {
		return nil, err
	}
	s, ok := be.(hsm.Sessions)
	if !ok || be != b.EP11 {
		return nil, errclass.New(errclass.InvalidArgument, "APQN %s has no EP11 sessions: %w", q, hsm.ErrWrongMode)
	}
	return s, nil
}

func (b *Backend) Login(ctx context.Context, q apqn.ID, pin, nonce []byte) ([]byte, error) {
	s, err := b.sessions(q)
	if err != nil {
		return nil, err
	}
	return s.Login(ctx, q, pin, nonce)
}

func (b *Backend) Logout(ctx context.Context, q apqn.ID, pinBlob []byte) error {
	s, err := b.sessions(q)
	if err != nil {
		return err
	}
	return s.Logout(ctx, q, pinBlob)
}

func (b *Backend) SessionStatus(ctx context.Context, q apqn.ID) (hsm.SessionStatus, error) {
	s, err := b.sessions(q)
	if err != nil {
		return hsm.SessionStatus{}, err
	}
	return s.SessionStatus(ctx, q)
}
