// Package open opens the HSM backend that pkcshsm.conf names with
// `hsm-backend`: "simulator" (hsm/sim, the default of the demo) or
// "host" (IBM's host libraries: CCA APQNs through libcsulcca.so, EP11
// APQNs through libep11.so, see hsm/host). The token engine and the tools
// call [Open]; a new backend is added here and in that one keyword.
package open

import (
	"errors"
	"os"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/cca"
	"github.com/pkcshsm/pkcshsm/hsm/ep11"
	"github.com/pkcshsm/pkcshsm/hsm/host"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/paths"
)

// Keywords of hsm-backend.
const (
	Simulator = "simulator"
	Host      = "host"
)

// EnvSysfsRoot overrides where the host backend reads the AP bus ("/sys").
// Tests and the demo point it at the simulator's sysfs view
// (paths.Layout.SimSysfs) when the host libraries are the test doubles.
const EnvSysfsRoot = "PKCSHSM_SYSFS_ROOT"

// Options say what to open.
type Options struct {
	Logger zerolog.Logger
	// Layout gives default paths (the simulator directory).
	Layout paths.Layout
	// SimulatorDir overrides Layout.SimDir() for the simulator.
	SimulatorDir string
	// ConfPath is the configuration file, named in errors.
	ConfPath string
	// CCA and EP11 say which host libraries the configured tokens need;
	// when both are false, both are loaded.
	CCA, EP11 bool
}

// Open opens the backend named by keyword ("" is the simulator). The
// closer releases it.
func Open(keyword string, o Options) (hsm.Backend, func() error, error) {
	switch keyword {
	case "", Simulator:
		dir := o.SimulatorDir
		if dir == "" {
			dir = o.Layout.SimDir()
		}
		h, err := sim.Open(dir, sim.Options{Logger: o.Logger})
		if err != nil {
			if errclass.Of(err) == errclass.NotFound {
				return nil, nil, errclass.WithHint(err, "create the simulator with `hsmsim init`, or set simulator-dir in pkcshsm.conf")
			}
			return nil, nil, err // the simulator is there: its own hint says what is wrong
		}
		return h, h.Close, nil
	case Host:
		return openHost(o)
	}
	return nil, nil, errclass.Newh(errclass.InvalidArgument, "set hsm-backend = simulator or hsm-backend = host in "+confName(o),
		"hsm-backend %q is not supported", keyword)
}

func confName(o Options) string {
	if o.ConfPath != "" {
		return o.ConfPath
	}
	return "pkcshsm.conf"
}

// SysfsRoot is the AP bus root the host backend reads.
func SysfsRoot() string {
	if r := os.Getenv(EnvSysfsRoot); r != "" {
		return r
	}
	return "/sys"
}

// openHost loads the libraries the tokens need. Every needed library
// that fails to load is reported, each error naming its file and
// package, before anything else happens.
func openHost(o Options) (hsm.Backend, func() error, error) {
	needCCA, needEP11 := o.CCA, o.EP11
	if !needCCA && !needEP11 {
		needCCA, needEP11 = true, true
	}
	root := SysfsRoot()
	var errs []error
	var cb *cca.Backend
	var eb *ep11.Backend
	var ccaLib *cca.Library
	var ep11Lib *ep11.Library
	if needCCA {
		l, err := cca.Load("")
		if err != nil {
			errs = append(errs, err)
		} else {
			ccaLib, cb = l, cca.New(l, root)
		}
	}
	if needEP11 {
		l, err := ep11.Load("")
		if err != nil {
			errs = append(errs, err)
		} else {
			ep11Lib, eb = l, ep11.New(l, root)
		}
	}
	closeAll := func() error {
		var err error
		if eb != nil {
			err = errors.Join(err, eb.Close(), ep11Lib.Close())
		}
		if ccaLib != nil {
			err = errors.Join(err, ccaLib.Close())
		}
		return err
	}
	if len(errs) > 0 {
		closeAll()
		err := errs[0]
		if len(errs) > 1 {
			err = errclass.Newh(errclass.FailedPrecondition, errclass.Hint(errs[0])+"\n"+errclass.Hint(errs[1]),
				"%v; %v", errs[0], errs[1])
		}
		return nil, nil, errclass.New(errclass.Of(err), "%s: hsm-backend = host: %w", confName(o), err)
	}
	h := host.New(root, nil, nil)
	if cb != nil {
		h.CCA = cb
	}
	if eb != nil {
		h.EP11 = eb
	}
	return h, closeAll, nil
}
