// Package command is the hsmsim command line: one file per subcommand, an
// options struct each, output only through the command's writers, and the
// error class → exit code mapping of cmd/internal/clierr applied in [Main]
// alone.
package command

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pkcshsm/pkcshsm/apqn"
	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/verbose"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/hsm"
	"github.com/pkcshsm/pkcshsm/hsm/sim"
	"github.com/pkcshsm/pkcshsm/mkvp"
	"github.com/pkcshsm/pkcshsm/paths"
)

// Prog is the program name in messages.
const Prog = "hsmsim"

// Main runs hsmsim with args and returns the exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && errclass.Of(err) == errclass.Unknown {
		// Only cobra's own parse errors (unknown command, bad arguments)
		// arrive unclassified; ours all carry a class.
		err = errclass.Newh(errclass.InvalidArgument, "run `hsmsim --help` for the commands and options", "%w", err)
	}
	clierr.Print(stderr, Prog, err)
	return clierr.ExitCode(err)
}

// globalOptions are valid for every subcommand.
type globalOptions struct {
	dir     string
	debug   bool
	verbose string
}

type app struct {
	opts globalOptions
	log  zerolog.Logger
}

// NewRootCommand builds the command tree.
func NewRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   Prog + " COMMAND [OPTIONS]",
		Short: "Simulated IBM CCA and EP11 crypto adapters, and their security officer",
		Long: `hsmsim creates simulated CCA and EP11 crypto adapters and drives their master
key registers as the security officer's TKE does: load a new master key,
commit it (EP11), set (activate) it, or clear it. It also takes APQNs offline
and injects faults. Every process using the simulator sees each change at
its next operation.

The simulator lives in $PKCSHSM_ROOT/var/lib/pkcshsm/sim (or --dir); its
sysfs-shaped view, readable like /sys, is in the sys subdirectory.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			level := a.opts.verbose
			if a.opts.debug && level == "none" {
				level = "devel"
			}
			log, err := verbose.Logger(cmd.ErrOrStderr(), level)
			if err != nil {
				return err
			}
			a.log = log
			if strings.TrimSpace(a.opts.dir) == "" {
				return errclass.Newh(errclass.InvalidArgument, "give a directory, or drop --dir to use the default",
					"--dir is empty")
			}
			return nil
		},
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return errclass.Newh(errclass.InvalidArgument, "run `"+cmd.CommandPath()+" --help` for the options", "%w", err)
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.opts.dir, "dir", paths.FromEnv().SimDir(), "simulator directory; the default follows PKCSHSM_ROOT")
	pf.BoolVar(&a.opts.debug, "debug", false, "log debug records to standard error (same as -v devel)")
	pf.StringVarP(&a.opts.verbose, "verbose", "v", "none", verbose.Usage+", to standard error")
	root.AddCommand(
		newInitCommand(a), newLoadNewCommand(a), newCommitCommand(a), newSetCommand(a),
		newClearNewCommand(a), newShowCommand(a), newMKVPsCommand(a), newOfflineCommand(a),
		newOnlineCommand(a), newFaultCommand(a), newHostDoubleCommand(a),
	)
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// open opens the simulator for a subcommand; the caller closes it.
func (a *app) open() (*sim.HSM, error) {
	return sim.Open(a.opts.dir, sim.Options{Logger: a.log})
}

// noArgs refuses positional arguments with a classified error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return errclass.Newh(errclass.InvalidArgument, "give APQNs with --apqns",
			"%s takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " "))
	}
	return nil
}

// apqnArgs parses positional APQN arguments (blanks or commas separate).
func apqnArgs(args []string) (apqn.List, error) {
	if len(args) == 0 {
		return nil, errclass.Newh(errclass.InvalidArgument, "name at least one APQN, e.g. 01.0033",
			"no APQN given")
	}
	return apqn.ParseList(strings.Join(args, " "))
}

// requireFlag fails when a required flag was not given.
func requireFlag(fs *pflag.FlagSet, name, example string) error {
	if !fs.Changed(name) {
		return errclass.Newh(errclass.InvalidArgument, "add --"+name+" "+example, "--%s is required", name)
	}
	return nil
}

// parseType reads a master key type name.
func parseType(s string) (mkvp.Type, error) {
	t, err := mkvp.ParseType(s)
	if err != nil {
		return 0, fmt.Errorf("--type: %w", err)
	}
	return t, nil
}

// parsePart reads a key part "I/N".
func parsePart(s string) (hsm.Part, error) {
	bad := func(why string) error {
		return errclass.Newh(errclass.InvalidArgument, "write the part as I/N, e.g. --part 1/3 for the first of three parts",
			"invalid --part %q: %s", s, why)
	}
	is, ns, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(ns, "/") {
		return hsm.Part{}, bad("want I/N")
	}
	num := func(x string) (int, bool) {
		if x == "" || len(x) > 2 || strings.TrimLeft(x, "0123456789") != "" {
			return 0, false
		}
		v, err := strconv.Atoi(x)
		return v, err == nil
	}
	i, ok1 := num(is)
	n, ok2 := num(ns)
	if !ok1 || !ok2 {
		return hsm.Part{}, bad("I and N must be small decimal numbers")
	}
	if i < 1 || n < 1 || i > n || n > 16 {
		return hsm.Part{}, bad("want 1 <= I <= N <= 16")
	}
	return hsm.Part{Index: i, Total: n}, nil
}

// parseKey reads a master key in hex for type t.
func parseKey(t mkvp.Type, s string) ([]byte, error) {
	size := sim.KeySize(t)
	hint := fmt.Sprintf("give the %s master key as %d hex digits (%d bytes), or omit --key for a random one", t, 2*size, size)
	h := strings.TrimSpace(s)
	if strings.HasPrefix(h, "0x") || strings.HasPrefix(h, "0X") {
		h = h[2:]
	}
	for i, r := range h {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return nil, errclass.Newh(errclass.InvalidArgument, hint,
				"--key: character %q at position %d is not hexadecimal", r, i+1)
		}
	}
	if len(h) != 2*size {
		return nil, errclass.Newh(errclass.InvalidArgument, hint,
			"--key has %d hex digits, a %s master key needs %d", len(h), t, 2*size)
	}
	k, err := hex.DecodeString(h)
	if err != nil {
		return nil, errclass.Newh(errclass.InvalidArgument, hint, "--key: %w", err)
	}
	return k, nil
}

// readKeyArg resolves --key: "-" reads one line of hex from standard input,
// which keeps the key out of the process list.
func readKeyArg(cmd *cobra.Command, s string) (string, error) {
	if s != "-" {
		return s, nil
	}
	b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 4096))
	if err != nil {
		return "", errclass.New(errclass.Unavailable, "read the key from standard input: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return line, nil
}

// patternText prints a pattern as sysfs does ("0x" and lower-case hex), or
// "-" for none.
func patternText(p mkvp.Pattern) string {
	if p.IsZero() {
		return "-"
	}
	return "0x" + strings.ToLower(p.String())
}

// modes fetches the mode of each APQN, failing for unknown ones.
func modes(ctx context.Context, h *sim.HSM, ids apqn.List) (map[apqn.ID]apqn.Mode, error) {
	out := map[apqn.ID]apqn.Mode{}
	for _, id := range ids {
		q, err := h.Queue(ctx, id)
		if err != nil {
			return nil, err
		}
		out[id] = q.Mode
	}
	return out, nil
}
