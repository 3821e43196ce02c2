package tokenlib

import (
	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/open"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
	"github.com/pkcshsm/pkcshsm/tokenlib/ep11sess"
)

// slotConf is what the engine needs from the configuration files for one
// slot, whatever their syntax.
type slotConf struct {
	id             SlotID
	typ            TokenType
	tokname        string
	description    string
	apqnAny        bool
	apqns          []apqn.ID
	forceSensitive bool                       // FORCE_SENSITIVE: accepted; every key is sensitive anyway (keyFlags)
	expected       map[mkvp.Type]mkvp.Pattern // configured CURRENT patterns
	ep11Mode       ep11sess.Mode              // STRICT_MODE, VHSM_MODE (EP11)
	// ignored lists configured settings this engine does not implement,
	// logged when the token opens.
	ignored []string
}

// globalConf is the engine's view of pkcshsm.conf and the token files.
type globalConf struct {
	slots         []slotConf
	path          string // pkcshsm.conf, for messages
	backend       string // hsm-backend: "simulator" or "host"
	simulatorDir  string
	disableEvents bool // disable-event-support: no daemon connection
}

// openBackend opens the HSM backend the configuration names (hsm/open):
// the simulator, or IBM's host libraries for the token types configured.
func openBackend(gc *globalConf, layout paths.Layout, log zerolog.Logger) (hsm.Backend, func() error, error) {
	o := open.Options{Logger: log, Layout: layout, SimulatorDir: gc.simulatorDir, ConfPath: gc.path}
	for _, s := range gc.slots {
		o.CCA = o.CCA || s.typ == TokenCCA
		o.EP11 = o.EP11 || s.typ == TokenEP11
	}
	return open.Open(gc.backend, o)
}

// loadConfig reads pkcshsm.conf and every slot's token configuration.
func loadConfig(path string, layout paths.Layout) (*globalConf, error) {
	g, err := config.LoadGlobal(path)
	if err != nil {
		return nil, err
	}
	gc := &globalConf{path: path, backend: g.HSMBackend, simulatorDir: g.SimulatorDir, disableEvents: g.DisableEventSupport}
	for i := range g.Slots {
		s := &g.Slots[i]
		sc := slotConf{id: SlotID(s.ID), tokname: s.TokName, description: s.Description, expected: map[mkvp.Type]mkvp.Pattern{}}
		switch s.Type {
		case config.TypeCCA:
			c, err := s.LoadCCA()
			if err != nil {
				return nil, err
			}
			sc.typ, sc.apqnAny, sc.apqns, sc.forceSensitive = TokenCCA, c.APQNAny, c.APQNs, c.ForceSensitive
			for t, p := range c.ExpectedMKVPs {
				sc.expected[t] = p
			}
		case config.TypeEP11:
			c, err := s.LoadEP11()
			if err != nil {
				return nil, err
			}
			sc.typ, sc.apqnAny, sc.apqns, sc.forceSensitive = TokenEP11, c.APQNAny, c.APQNs, c.ForceSensitive
			sc.ep11Mode = ep11sess.Mode{Strict: c.StrictMode, VHSM: c.VHSMMode}
			if c.FIPSSessionMode {
				sc.ignored = append(sc.ignored, "FIPS_SESSION_MODE (EP11 FIPS session binding is not implemented)")
			}
			if !c.ExpectedWKVP.IsZero() {
				sc.expected[mkvp.EP11WK] = c.ExpectedWKVP
			}
		default:
			return nil, errclass.New(errclass.InvalidArgument, "%s: slot %d: unsupported token type %s", path, s.ID, s.Type)
		}
		if sc.tokname == "" {
			sc.tokname = s.Type.DefaultTokName()
		}
		gc.slots = append(gc.slots, sc)
	}
	return gc, nil
}
