package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/interrupt"
	"github.com/pkcshsm/pkcshsm/cmd/internal/verbose"
	"github.com/pkcshsm/pkcshsm/errclass"
)

// Prog is the program name used in messages.
const Prog = "pkcshsm_mk_change"

// globalOptions are valid for every subcommand.
type globalOptions struct {
	verbose  string
	config   string
	stateDir string
	socket   string
	timeout  time.Duration
	progress bool
}

// command is the state every subcommand shares.
type command struct {
	deps Deps
	opts globalOptions
	log  zerolog.Logger
	intr *interrupt.Handler // SIGINT/SIGTERM: Context for the work, Cleanup for undoing it
	// exclude is --exclude-pid as given, excludePIDs parsed (stuck.go).
	exclude     []string
	excludePIDs []int32
}

// NewRootCommand builds the command tree.
func NewRootCommand(deps Deps) *cobra.Command {
	return newRoot(deps, interrupt.New(context.Background(), nil))
}

func newRoot(deps Deps, intr *interrupt.Handler) *cobra.Command {
	if deps.Now == nil {
		deps.Now = time.Now
	}
	c := &command{deps: deps, intr: intr}
	root := &cobra.Command{
		Use:   Prog + " COMMAND [OPTIONS]",
		Short: "Manage concurrent HSM master key changes of pkcshsm tokens",
		Long: `pkcshsm_mk_change re-enciphers the secure keys of every pkcshsm token for an
HSM master key change while applications keep running.

  1. The HSM security officer loads the new master key into the NEW register.
  2. "reencipher" re-enciphers every key object under the new master key.
  3. The officer sets (activates) the new master key on every APQN.
  4. "finalize" makes the new blobs current; "cancel" (before any APQN
     activated the new key) drops them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			log, err := verbose.Logger(cmd.ErrOrStderr(), c.opts.verbose)
			if err != nil {
				return err
			}
			c.log = log
			if c.opts.timeout <= 0 {
				return errclass.New(errclass.InvalidArgument, "--timeout must be positive, got %s", c.opts.timeout)
			}
			return nil
		},
	}
	root.SetIn(deps.Stdin)
	root.SetOut(deps.Stdout)
	root.SetErr(deps.Stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&c.opts.verbose, "verbose", "v", "none", verbose.Usage)
	pf.StringVar(&c.opts.config, "config", deps.Layout.GlobalConf(), "the token configuration (pkcshsm.conf)")
	pf.StringVar(&c.opts.stateDir, "state-dir", deps.Layout.MKChangeDir(), "directory of the operation files")
	pf.StringVar(&c.opts.socket, "socket", deps.Layout.AdminSocket(), "the daemon's admin socket")
	pf.DurationVar(&c.opts.timeout, "timeout", 2*time.Minute, "how long every process may take for one step")
	pf.BoolVar(&c.opts.progress, "progress", false, "print a progress line per batch of key objects even when standard error is not a terminal")
	root.AddCommand(c.newReencipherCommand(), c.newVerifyCommand(), c.newListCommand(), c.newFinalizeCommand(), c.newCancelCommand())
	root.SetFlagErrorFunc(flagError)
	for _, sub := range root.Commands() {
		sub.SetFlagErrorFunc(flagError)
	}
	return root
}

// onlyFor says which subcommand takes each option, for the message when it
// is given to another one.
var onlyFor = map[string]string{
	"apqns": "'reencipher' or 'verify'", "ep11-wkvp": "'reencipher' or 'verify'", "cca-sym-mkvp": "'reencipher' or 'verify'",
	"cca-asym-mkvp": "'reencipher' or 'verify'", "cca-aes-mkvp": "'reencipher' or 'verify'", "cca-apka-mkvp": "'reencipher' or 'verify'",
	"dry-run": "'reencipher'", "id": "'verify', 'finalize', 'cancel' or 'list'", "json": "'verify' or 'list'", "type": "'verify'",
	"exclude-pid": "'reencipher', 'finalize' or 'cancel'",
}

var shortNames = map[string]string{"a": "apqns", "e": "ep11-wkvp", "s": "cca-sym-mkvp",
	"S": "cca-asym-mkvp", "A": "cca-aes-mkvp", "p": "cca-apka-mkvp", "i": "id", "t": "type"}

var unknownFlag = regexp.MustCompile(`unknown (?:shorthand )?flag: (?:'(\w)' in -\S+|--([\w-]+))`)

// flagError turns cobra's flag errors into the tool's messages.
func flagError(cmd *cobra.Command, err error) error {
	if m := unknownFlag.FindStringSubmatch(err.Error()); m != nil {
		long := m[2]
		if m[1] != "" {
			long = shortNames[m[1]]
		}
		if where, ok := onlyFor[long]; ok {
			short := ""
			for s, l := range shortNames {
				if l == long {
					short = "-" + s + "/"
				}
			}
			return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("see '%s %s -h'", Prog, cmd.Name()),
				"option %s--%s is only valid for the %s command", short, long, where)
		}
	}
	return errclass.Newh(errclass.InvalidArgument, fmt.Sprintf("see '%s %s -h'", Prog, cmd.Name()), "%s", err)
}

// Main runs the command with args and returns the exit code. It prints
// errors and hints itself. A SIGINT or SIGTERM on deps.Signals interrupts
// the command: it undoes or records what it was doing, and the exit code
// is 128 + the signal number.
func Main(deps Deps, args []string) int {
	intr := interrupt.New(context.Background(), deps.Signals)
	defer intr.Stop()
	if deps.Stdout == nil {
		deps.Stdout = os.Stdout
	}
	out := clierr.NewOutput(deps.Stdout)
	deps.Stdout = out
	root := newRoot(deps, intr)
	root.SetArgs(args)
	err := root.ExecuteContext(intr.Context())
	if oerr := out.Err(); oerr != nil && (err == nil || errclass.Of(err) == errclass.Unknown) {
		// Output the operator never got is a failure, not a success; a
		// bare write error becomes the error with its hint.
		err = oerr
	}
	if err == nil {
		return 0
	}
	if strings.HasPrefix(err.Error(), "unknown command") {
		err = errclass.Newh(errclass.InvalidArgument, "the commands are reencipher, verify, list, finalize and cancel",
			"%s", strings.SplitN(err.Error(), "\n", 2)[0])
	}
	code := printError(deps, err)
	if sig := intr.ExitCode(); sig != 0 {
		return sig
	}
	return code
}

// interrupted turns the cancellation an interrupt causes into the error
// the operator sees.
func interrupted(err error) error {
	if errors.Is(err, context.Canceled) {
		return errclass.As(errclass.Aborted, fmt.Errorf("interrupted: %w", err))
	}
	return err
}

func printError(deps Deps, err error) int {
	w := deps.Stderr
	if w == nil {
		w = os.Stderr
	}
	return exitWith(w, err)
}
