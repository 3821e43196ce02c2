// Package cli is the pkcshsm command: token administration on top of the
// token engine (tokenlib), in process. Every subcommand lives in its own
// file with an options struct and a RunE function; output goes only to the
// command's writers; errors are printed once, in Main, as "error:" and
// "hint:" lines, and their class picks the exit code (see clierr).
package cli

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/pinentry"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
)

// Prog is the program name in messages.
const Prog = "pkcshsm"

// globalOptions are the options of every subcommand.
type globalOptions struct {
	config  string
	verbose bool
	pr      *pinentry.Reader // one per run: it buffers standard input
}

// NewRootCommand builds the command tree.
func NewRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:           Prog,
		Short:         "Administer pkcshsm tokens: slots, token init, PINs, keys",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.config, "config", "", "global configuration file (default $PKCSHSM_ROOT/etc/pkcshsm/pkcshsm.conf)")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log diagnostics to standard error")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return errclass.Newh(errclass.InvalidArgument, "see '"+cmd.CommandPath()+" --help'", "%v", err)
	})
	root.AddCommand(newSlotsCommand(g), newTokenCommand(g), newPINCommand(g), newMechanismsCommand(g), newKeysCommand(g),
		newEP11SessionCommand(g))
	return root
}

// Main runs the command with args and returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if err != nil && errclass.Of(err) == errclass.Unknown && strings.HasPrefix(err.Error(), "unknown command") {
		err = errclass.Newh(errclass.InvalidArgument, "run 'pkcshsm --help' for the commands", "%s", strings.SplitN(err.Error(), "\n", 2)[0])
	} else if err != nil && errclass.Of(err) == errclass.Unknown && isUsageError(err) {
		err = errclass.Newh(errclass.InvalidArgument, "run 'pkcshsm --help'", "%v", err)
	}
	clierr.Print(stderr, Prog, err)
	return clierr.ExitCode(err)
}

func isUsageError(err error) bool {
	m := err.Error()
	return strings.Contains(m, "required flag") || strings.Contains(m, "accepts ") || strings.Contains(m, "unknown flag")
}

// open opens the token library as the options say.
func (g *globalOptions) open(cmd *cobra.Command) (*tokenlib.Library, error) {
	log := zerolog.Nop()
	if g.verbose {
		log = zerolog.New(zerolog.ConsoleWriter{Out: cmd.ErrOrStderr(), NoColor: true}).With().Timestamp().Logger()
	}
	return tokenlib.Open(tokenlib.Options{Layout: paths.FromEnv(), ConfigPath: g.config, Logger: log, NoAgent: true})
}

// prompter reads PINs and answers: from the terminal without echo, or line
// by line from standard input. Prompts go to standard error so that
// standard output stays parseable.
func (g *globalOptions) prompter(cmd *cobra.Command) *pinentry.Reader {
	if g.pr == nil {
		in := cmd.InOrStdin()
		if in == nil {
			in = os.Stdin
		}
		g.pr = pinentry.New(in, cmd.ErrOrStderr())
	}
	return g.pr
}

// newPIN asks for a new PIN twice.
func newPIN(r *pinentry.Reader, what string) ([]byte, error) {
	p1, err := r.PIN("Enter the new " + what + ": ")
	if err != nil {
		return nil, err
	}
	p2, err := r.PIN("Re-enter the new " + what + ": ")
	if err != nil {
		return nil, err
	}
	if string(p1) != string(p2) {
		return nil, errclass.Newh(errclass.InvalidArgument, "type the same PIN twice", "the new %ss do not match", what)
	}
	clear(p2)
	return p1, nil
}
