// Package paths is the one place that knows where pkcshsm keeps its files.
//
// Every default path hangs off one root directory: PKCSHSM_ROOT, or "/" when
// it is unset. A demo or a test sets the root to a temporary directory and
// runs every binary unprivileged; each binary also takes explicit path flags
// that override what this package derives.
//
//	<root>/etc/pkcshsm/pkcshsm.conf             global token configuration
//	<root>/etc/pkcshsm/ccatok.conf, ep11tok.conf token configurations
//	<root>/var/lib/pkcshsm/tokens/<name>/        one token's object store
//	<root>/var/lib/pkcshsm/HSM_MK_CHANGE/        master key change operations
//	<root>/var/lib/pkcshsm/sim/                  simulated adapters (state)
//	<root>/var/lib/pkcshsm/sim/sys/              simulated sysfs view
//	<root>/run/pkcshsm/                          daemon sockets
//
// On real hardware the sysfs root is /sys; when the simulator is configured
// it is the simulator's own view. The real /sys is never written.
package paths

import (
	"os"
	"path/filepath"
)

// EnvRoot names the environment variable holding the root directory.
const EnvRoot = "PKCSHSM_ROOT"

// Layout derives every default path from one root.
type Layout struct {
	Root string
}

// FromEnv returns the layout rooted at $PKCSHSM_ROOT, or at "/".
func FromEnv() Layout {
	root := os.Getenv(EnvRoot)
	if root == "" {
		root = "/"
	}
	return Layout{Root: filepath.Clean(root)}
}

func (l Layout) join(elem ...string) string {
	root := l.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(append([]string{root}, elem...)...)
}

// ConfDir is <root>/etc/pkcshsm.
func (l Layout) ConfDir() string { return l.join("etc", "pkcshsm") }

// GlobalConf is the global token configuration file.
func (l Layout) GlobalConf() string { return filepath.Join(l.ConfDir(), "pkcshsm.conf") }

// StateDir is <root>/var/lib/pkcshsm.
func (l Layout) StateDir() string { return l.join("var", "lib", "pkcshsm") }

// TokensDir holds one subdirectory per token.
func (l Layout) TokensDir() string { return filepath.Join(l.StateDir(), "tokens") }

// TokenDir is the object store directory of the named token.
func (l Layout) TokenDir(name string) string { return filepath.Join(l.TokensDir(), name) }

// MKChangeDir holds the master key change operation files.
func (l Layout) MKChangeDir() string { return filepath.Join(l.StateDir(), "HSM_MK_CHANGE") }

// SimDir holds the simulated adapters' state.
func (l Layout) SimDir() string { return filepath.Join(l.StateDir(), "sim") }

// SimSysfs is the sysfs-shaped view the simulator renders.
func (l Layout) SimSysfs() string { return filepath.Join(l.SimDir(), "sys") }

// RunDir holds the daemon's sockets.
func (l Layout) RunDir() string { return l.join("run", "pkcshsm") }

// AppSocket is the socket applications' runtime agents connect to.
func (l Layout) AppSocket() string { return filepath.Join(l.RunDir(), "app.sock") }

// AdminSocket is the socket pkcshsm_mk_change talks to.
func (l Layout) AdminSocket() string { return filepath.Join(l.RunDir(), "admin.sock") }

// LogDir is where the token library writes its log when asked to.
func (l Layout) LogDir() string { return l.join("var", "log", "pkcshsm") }
