package sim

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/gofrs/flock"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// Topology says which adapters a new simulator has.
type Topology struct {
	// Groups are domain groups: APQNs of one mode that a TKE manages
	// together. All APQNs of a group start with the same CURRENT master
	// keys; different groups get different keys.
	Groups []Group
	// Seed, when set, derives the initial master keys from it instead of
	// from the random source, so demos and golden tests are repeatable.
	Seed []byte
	// Force replaces an existing simulator (all its keys are lost).
	Force bool
	// MaxSessions is the EP11 session limit of every EP11 APQN (0: the
	// default, DefaultMaxSessions).
	MaxSessions int
}

// Group is one domain group.
type Group struct {
	Mode  apqn.Mode // apqn.ModeCCA or apqn.ModeEP11
	APQNs []apqn.ID
	// CardType is the card type sysfs shows, e.g. "CEX7C"; empty means
	// CEX8C for CCA and CEX8P for EP11.
	CardType string
}

func (g Group) cardType() string {
	switch {
	case g.CardType != "":
		return g.CardType
	case g.Mode == apqn.ModeEP11:
		return "CEX8P"
	}
	return "CEX8C"
}

// Validate checks a topology without touching any file.
func (t Topology) Validate() error {
	if t.MaxSessions < 0 || t.MaxSessions > MaxSessionLimit {
		return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("give a limit between 1 and %d", MaxSessionLimit),
			"EP11 session limit %d is out of range", t.MaxSessions)
	}
	if len(t.Groups) == 0 {
		return errclass.Newh(errclass.InvalidArgument, "name at least one APQN, e.g. --cca 01.0033 --ep11 06.0033",
			"empty topology: no APQNs")
	}
	seen := map[apqn.ID]apqn.Mode{}
	cards := map[uint8]string{}
	for i, g := range t.Groups {
		if g.Mode != apqn.ModeCCA && g.Mode != apqn.ModeEP11 {
			return errclass.Newh(errclass.InvalidArgument, "simulate CCA (--cca) or EP11 (--ep11) adapters",
				"group %d: mode %s cannot be simulated", i+1, g.Mode)
		}
		if len(g.APQNs) == 0 {
			return errclass.Newh(errclass.InvalidArgument, "give each group at least one APQN",
				"group %d (%s) has no APQNs", i+1, g.Mode)
		}
		typ := g.cardType()
		_, mode, err := apqn.ParseCardType(typ)
		if err != nil {
			return errclass.Newh(errclass.InvalidArgument, "use a card type such as CEX8C (CCA) or CEX8P (EP11)",
				"group %d: %w", i+1, err)
		}
		if mode != g.Mode {
			return errclass.Newh(errclass.InvalidArgument, "CCA cards end in C, EP11 cards in P",
				"group %d: card type %s is not a %s card", i+1, typ, g.Mode)
		}
		for _, id := range g.APQNs {
			if m, ok := seen[id]; ok {
				if m != g.Mode {
					return errclass.Newh(errclass.InvalidArgument, "an APQN is either CCA or EP11; remove it from one list",
						"APQN %s is listed as both CCA and EP11", id)
				}
				return errclass.Newh(errclass.InvalidArgument, "name each APQN once",
					"APQN %s is listed more than once", id)
			}
			seen[id] = g.Mode
			if ct, ok := cards[id.Card]; ok && ct != typ {
				return errclass.Newh(errclass.InvalidArgument,
					"all domains of one card have the card's mode; use another card number",
					"card %02x cannot be both %s and %s", id.Card, ct, typ)
			}
			cards[id.Card] = typ
		}
	}
	return nil
}

// Init creates a simulator in dir: the state file, the lock and generation
// files and the sysfs view in dir/sys. Every APQN gets valid CURRENT master
// keys (CCA: SYM, ASYM, AES and APKA) shared within its group, and empty
// NEW registers. An existing simulator is refused unless topo.Force.
func Init(dir string, topo Topology) error {
	if err := topo.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ioErr(err, "create simulator directory %s", dir)
	}
	lk := flock.New(filepath.Join(dir, lockName))
	if err := lk.Lock(); err != nil {
		return ioErr(err, "lock %s", lk.Path())
	}
	defer lk.Unlock()
	statePath := filepath.Join(dir, stateFileName)
	if _, err := os.Lstat(statePath); err == nil && !topo.Force {
		return errclass.Newh(errclass.Conflict,
			"use the existing simulator, or pass --force to replace it (all simulated keys are lost)",
			"a simulator already exists in %s", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ioErr(err, "stat %s", statePath)
	}
	st, err := newState(topo)
	if err != nil {
		return err
	}
	raw, err := encodeState(st)
	if err != nil {
		return err
	}
	sys := filepath.Join(dir, sysName)
	if topo.Force {
		if err := os.RemoveAll(sys); err != nil {
			return ioErr(err, "remove old sysfs view %s", sys)
		}
	}
	if err := writeFileAtomic(statePath, raw, 0o600, true); err != nil {
		return err
	}
	if err := renderSysfs(sys, st); err != nil {
		return err
	}
	genPath := filepath.Join(dir, genName)
	if err := createGen(genPath); err != nil {
		return err
	}
	g, err := openGen(genPath)
	if err != nil {
		return err
	}
	defer g.close()
	eng, err := openAdapter(filepath.Join(dir, adapterName), max(len(st.Queues), 16))
	if err != nil {
		return err
	}
	if err := eng.close(); err != nil {
		return errclass.New(errclass.Unavailable, "unmap the adapter engine table: %w", err)
	}
	g.bump() // processes that had the old simulator open reload
	return nil
}

func newState(topo Topology) (*stateFile, error) {
	st := &stateFile{Version: stateVersion}
	for gi, g := range topo.Groups {
		types := []mkvp.Type{mkvp.EP11WK}
		if g.Mode == apqn.ModeCCA {
			types = mkvp.CCATypes()
		}
		keys := map[mkvp.Type][]byte{}
		for _, t := range types {
			k := make([]byte, keySize(t))
			if topo.Seed != nil {
				h := sha256.New()
				fmt.Fprintf(h, "pkcshsm-sim initial key\x00%d\x00%s\x00", gi, t.Keyword())
				h.Write(topo.Seed)
				copy(k, h.Sum(nil))
			} else if _, err := rand.Read(k); err != nil {
				return nil, errclass.New(errclass.Internal, "random master key: %w", err)
			}
			keys[t] = k
		}
		for _, id := range g.APQNs {
			q := queueState{ID: id, Mode: modeName(g.Mode), Group: gi, CardType: g.cardType(), Online: true,
				Registers: map[mkvp.Type]*regSet{}}
			if g.Mode == apqn.ModeEP11 {
				q.MaxSessions = topo.MaxSessions
			}
			for _, t := range types {
				r := &regSet{
					New:     register{State: stateName(apqn.StateEmpty)},
					Current: register{State: stateName(apqn.StateValid), Key: slices.Clone(keys[t])},
				}
				if t != mkvp.EP11WK {
					r.Old = register{State: stateName(apqn.StateInvalid)}
				}
				q.Registers[t] = r
			}
			st.Queues = append(st.Queues, q)
		}
	}
	slices.SortFunc(st.Queues, func(a, b queueState) int { return a.ID.Compare(b.ID) })
	return st, nil
}
