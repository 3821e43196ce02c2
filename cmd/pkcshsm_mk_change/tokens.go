package main

import (
	"context"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/cmd/pkcshsm_mk_change/cli"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/state"
	"github.com/pkcshsm/pkcshsm/tokenlib"
	"github.com/pkcshsm/pkcshsm/tokenlib/ck"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
)

// libTokens is cli.Tokens over the token library in this process.
type libTokens struct {
	lib      *tokenlib.Library
	confPath string

	mu       sync.Mutex
	sessions map[uint]tokenlib.SessionHandle // logged-in sessions by slot
}

func openTokens(ctx context.Context, layout paths.Layout, confPath string, log zerolog.Logger) (*libTokens, error) {
	if confPath == "" {
		confPath = layout.GlobalConf()
	}
	lib, err := tokenlib.Open(tokenlib.Options{Layout: layout, ConfigPath: confPath, Logger: log, NoAgent: true})
	if err != nil {
		return nil, err
	}
	return &libTokens{lib: lib, confPath: confPath, sessions: map[uint]tokenlib.SessionHandle{}}, nil
}

func (t *libTokens) Slots(ctx context.Context) ([]cli.Slot, error) {
	var out []cli.Slot
	for _, id := range t.lib.GetSlotList() {
		s := cli.Slot{ID: uint(id)}
		info, err := t.lib.GetTokenInfo(id)
		switch {
		case err != nil:
			s.Reason = err.Error()
		case info.Flags&ck.CKF_TOKEN_INITIALIZED == 0:
			s.Reason = "token not initialized"
		default:
			s.Present = true
			s.Label = strings.TrimRight(info.Label, " ")
			s.Serial = strings.TrimRight(info.SerialNumber, " ")
			s.Type = info.TokenType.String()
		}
		out = append(out, s)
	}
	return out, nil
}

func (t *libTokens) Census(ctx context.Context, slot uint, apqns apqn.List, newp map[mkvp.Type]mkvp.Pattern) (cli.CensusResult, error) {
	r, affected, err := t.lib.MKChangeCensus(ctx, tokenlib.SlotID(slot), apqns, newp)
	if err != nil || !affected {
		return cli.CensusResult{}, err
	}
	return cli.CensusResult{Affected: true, Keys: r.Keys, MissingNew: r.MissingNew, Unrecorded: r.Unrecorded,
		Unreadable: r.Unreadable, Lost: r.Lost}, nil
}

func (t *libTokens) LastPass(ctx context.Context, slot uint) (cli.LastPass, bool, error) {
	j, ok, err := t.lib.MKChangeLastPass(ctx, tokenlib.SlotID(slot))
	if err != nil || !ok {
		return cli.LastPass{}, ok, err
	}
	return cli.LastPass{Op: state.ID(j.Op), Action: j.Action, Done: j.Done}, true, nil
}

func (t *libTokens) Query(ctx context.Context, slot uint, op *state.Op, a state.Action) (cli.QueryResult, error) {
	mt, err := t.lib.MKChangeToken(ctx, tokenlib.SlotID(slot))
	if err != nil {
		return cli.QueryResult{}, err
	}
	if !mt.Affected(op) {
		return cli.QueryResult{}, nil
	}
	mt.Configured = func() (map[mkvp.Type]mkvp.Pattern, string, error) { return t.configured(slot) }
	var recorded map[mkvp.Type]mkvp.Pattern
	for _, s := range op.Slots {
		if s.ID == slot {
			recorded = s.Current
		}
	}
	cur, err := mt.Query(ctx, t.lib.Backend(), op, a, recorded)
	if err != nil {
		return cli.QueryResult{}, err
	}
	return cli.QueryResult{Affected: true, Current: cur}, nil
}

// configured re-reads the expected patterns of a slot's token
// configuration, which the operator must update before finalize.
func (t *libTokens) configured(slot uint) (map[mkvp.Type]mkvp.Pattern, string, error) {
	g, err := config.LoadGlobal(t.confPath)
	if err != nil {
		return nil, "", err
	}
	for i := range g.Slots {
		s := &g.Slots[i]
		if s.ID != slot {
			continue
		}
		switch s.Type {
		case config.TypeEP11:
			c, err := s.LoadEP11()
			if err != nil {
				return nil, "", err
			}
			out := map[mkvp.Type]mkvp.Pattern{}
			if !c.ExpectedWKVP.IsZero() {
				out[mkvp.EP11WK] = c.ExpectedWKVP
			}
			return out, c.File, nil
		default:
			c, err := s.LoadCCA()
			if err != nil {
				return nil, "", err
			}
			file := c.File
			if file == "" {
				file = "(no ccatok.conf)"
			}
			return c.ExpectedMKVPs, file, nil
		}
	}
	return nil, "", errclass.New(errclass.NotFound, "slot %d is no longer configured in %s", slot, t.confPath)
}

func (t *libTokens) Login(ctx context.Context, slot uint, pin []byte) error {
	s, err := t.lib.OpenSession(tokenlib.SlotID(slot), ck.CKF_SERIAL_SESSION|ck.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	if err := t.lib.Login(s, ck.CKU_USER, pin); err != nil && tokenlib.RV(err) != ck.CKR_USER_ALREADY_LOGGED_IN {
		t.lib.CloseSession(s)
		return err
	}
	t.mu.Lock()
	t.sessions[slot] = s
	t.mu.Unlock()
	return nil
}

func (t *libTokens) Pass(ctx context.Context, slot uint, op *state.Op, a state.Action, progress cli.Progress) (int, error) {
	t.mu.Lock()
	_, ok := t.sessions[slot]
	t.mu.Unlock()
	if !ok {
		return 0, errclass.New(errclass.Internal, "slot %d: no USER session", slot)
	}
	return t.lib.MKChangePass(ctx, tokenlib.SlotID(slot), op, a, progress)
}

func (t *libTokens) Queues(ctx context.Context) ([]hsm.QueueInfo, error) {
	return t.lib.Backend().Queues(ctx)
}

func (t *libTokens) Close() error {
	t.mu.Lock()
	for slot, s := range t.sessions {
		// Close ends every session anyway; a failed logout changes nothing.
		_ = t.lib.Logout(s)
		delete(t.sessions, slot)
	}
	t.mu.Unlock()
	return t.lib.Close()
}

func (t *libTokens) Check(ctx context.Context, slot uint, op *state.Op, current map[mkvp.Type]mkvp.Pattern) ([]string, int, error) {
	lost, n, err := t.lib.MKChangeCheck(ctx, tokenlib.SlotID(slot), op, current, maxLostNamed)
	if err != nil {
		return nil, 0, err
	}
	names := make([]string, len(lost))
	for i, k := range lost {
		names[i] = k.String()
	}
	return names, n, nil
}

// maxLostNamed bounds the LOST keys a check names per slot.
const maxLostNamed = 10

func (t *libTokens) CheckStore(ctx context.Context, slot uint) error {
	return t.lib.CheckStore(ctx, tokenlib.SlotID(slot))
}
