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

	"github.com/spf13/cobra"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/interrupt"
	"github.com/pkcshsm/pkcshsm/cmd/internal/pinentry"
	"github.com/pkcshsm/pkcshsm/cmd/internal/verbose"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/tokenlib"
)

// Prog is the program name in messages.
const Prog = "pkcshsm"

// globalOptions are the options of every subcommand.
type globalOptions struct {
	config  string
	verbose string
	pr      *pinentry.Reader // one per run: it buffers standard input
	intr    <-chan struct{}  // closed on SIGINT/SIGTERM
}

// NewRootCommand builds the command tree. intr, when closed, interrupts a
// pending prompt.
func NewRootCommand(intr <-chan struct{}) *cobra.Command {
	g := &globalOptions{intr: intr}
	root := &cobra.Command{
		Use:           Prog,
		Short:         "Administer pkcshsm tokens: slots, token init, PINs, keys",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.config, "config", paths.FromEnv().GlobalConf(), "global configuration file")
	root.PersistentFlags().StringVarP(&g.verbose, "verbose", "v", "none", verbose.Usage+", to standard error")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		_, err := verbose.Level(g.verbose)
		return err
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return errclass.Newh(errclass.InvalidArgument, "see '"+cmd.CommandPath()+" --help'", "%v", err)
	})
	root.AddCommand(newSlotsCommand(g), newTokenCommand(g), newPINCommand(g), newMechanismsCommand(g), newKeysCommand(g),
		newEP11SessionCommand(g))
	return root
}

// Main runs the command with args and returns the exit code. signals
// (nil: none) interrupts it: a prompt returns at once with the terminal's
// echo restored, and the exit code is 128 + the signal number.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, signals <-chan os.Signal) int {
	h := interrupt.New(context.Background(), signals)
	defer h.Stop()
	root := NewRootCommand(h.Done())
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(h.Context())
	if err != nil && errclass.Of(err) == errclass.Unknown && strings.HasPrefix(err.Error(), "unknown command") {
		err = errclass.Newh(errclass.InvalidArgument, "run 'pkcshsm --help' for the commands", "%s", strings.SplitN(err.Error(), "\n", 2)[0])
	} else if err != nil && errclass.Of(err) == errclass.Unknown && isUsageError(err) {
		err = errclass.Newh(errclass.InvalidArgument, "run 'pkcshsm --help'", "%v", err)
	}
	clierr.Print(stderr, Prog, err)
	if code := h.ExitCode(); code != 0 && err != nil {
		return code
	}
	return clierr.ExitCode(err)
}

func isUsageError(err error) bool {
	m := err.Error()
	return strings.Contains(m, "required flag") || strings.Contains(m, "accepts ") || strings.Contains(m, "unknown flag")
}

// open opens the token library as the options say.
func (g *globalOptions) open(cmd *cobra.Command) (*tokenlib.Library, error) {
	log, err := verbose.Logger(cmd.ErrOrStderr(), g.verbose)
	if err != nil {
		return nil, err
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
		g.pr = pinentry.NewWith(in, cmd.ErrOrStderr(), pinentry.Options{Interrupt: g.intr})
	}
	return g.pr
}
