// Package daemoncmd is the command line of pkcshsmd: flag parsing, logging
// setup, signals and readiness around [slotd.Server].
package daemoncmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/pkcshsm/pkcshsm/cmd/internal/verbose"
	"github.com/pkcshsm/pkcshsm/errclass"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/slotd"
)

// Exit statuses.
const (
	ExitOK    = 0 // clean shutdown after SIGTERM or SIGINT
	ExitFail  = 1 // could not start or serve
	ExitUsage = 2 // bad flags
)

type options struct {
	appSocket, adminSocket         string
	appGroup, adminGroup           string
	appMode, adminMode, runDirMode string
	timeout, maxTimeout            time.Duration
	maxProcesses                   int
	sandbox                        bool
	logLevel, logFormat            string
	verbose                        string // -v/--verbose, the level names every pkcshsm tool takes
}

func (o *options) addFlags(cmd *cobra.Command) {
	l := paths.FromEnv()
	f := cmd.Flags()
	f.StringVar(&o.appSocket, "app-socket", l.AppSocket(), "socket the runtime agents connect to")
	f.StringVar(&o.adminSocket, "admin-socket", l.AdminSocket(), "socket the admin tools connect to")
	f.StringVar(&o.appGroup, "app-group", "pkcs11", "group allowed on the app socket (\"\" for none)")
	f.StringVar(&o.adminGroup, "admin-group", "pkcshsm-admin", "group allowed to broadcast (\"\" for none)")
	f.StringVar(&o.appMode, "app-socket-mode", "0660", "mode of the app socket (octal)")
	f.StringVar(&o.adminMode, "admin-socket-mode", "0660", "mode of the admin socket (octal)")
	f.StringVar(&o.runDirMode, "run-dir-mode", "0755", "mode of a run directory the daemon creates (octal)")
	f.DurationVar(&o.timeout, "timeout", slotd.DefaultTimeout, "deadline of a broadcast that names none")
	f.DurationVar(&o.maxTimeout, "max-timeout", slotd.DefaultMaxTimeout, "longest deadline a broadcast may ask for")
	f.IntVar(&o.maxProcesses, "max-processes", slotd.DefaultMaxApps, "most application connections at once")
	f.BoolVar(&o.sandbox, "sandbox", l.Root != "/", "let the daemon's own uid act as root and tolerate missing groups (default on when PKCSHSM_ROOT is set)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVarP(&o.verbose, "verbose", "v", "", verbose.Usage+", as in every pkcshsm tool (overrides --log-level)")
	f.StringVar(&o.logFormat, "log-format", "json", "log format: json (journald) or text")
}

func parseMode(name, s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return 0, errclass.Newh(errclass.InvalidArgument, "give an octal permission such as 0660",
			"--%s %q is not a file mode", name, s)
	}
	return fs.FileMode(v), nil
}

// NewCommand returns the pkcshsmd root command. It runs until ctx ends or a
// SIGTERM/SIGINT arrives.
func NewCommand(ctx context.Context) *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "pkcshsmd",
		Short: "pkcshsm token daemon: relays master key change events to every process",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return errclass.Newh(errclass.InvalidArgument, "pkcshsmd takes flags only; see pkcshsmd --help",
					"unknown command %q", args[0])
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(ctx, o, cmd.ErrOrStderr())
		},
	}
	o.addFlags(cmd)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return errclass.Newh(errclass.InvalidArgument, "see pkcshsmd --help", "%w", err)
	})
	return cmd
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func newLogger(o *options, stderr io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(o.logLevel)
	if err != nil || o.logLevel == "" {
		return zerolog.Logger{}, errclass.Newh(errclass.InvalidArgument, "use debug, info, warn or error",
			"--log-level %q is not a level", o.logLevel)
	}
	if o.verbose != "" {
		if lvl, err = verbose.Level(o.verbose); err != nil {
			return zerolog.Logger{}, err
		}
	}
	var w io.Writer
	switch o.logFormat {
	case "json":
		w = stderr
	case "text":
		w = zerolog.ConsoleWriter{Out: stderr, NoColor: true, TimeFormat: verbose.TimeFormat}
	default:
		return zerolog.Logger{}, errclass.Newh(errclass.InvalidArgument, "use json or text",
			"--log-format %q is not a format", o.logFormat)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func run(ctx context.Context, o *options, stderr io.Writer) error {
	log, err := newLogger(o, stderr)
	if err != nil {
		return err
	}
	appMode, err := parseMode("app-socket-mode", o.appMode)
	if err != nil {
		return err
	}
	adminMode, err := parseMode("admin-socket-mode", o.adminMode)
	if err != nil {
		return err
	}
	dirMode, err := parseMode("run-dir-mode", o.runDirMode)
	if err != nil {
		return err
	}
	if o.maxProcesses <= 0 {
		return errclass.Newh(errclass.InvalidArgument, "give a positive number", "--max-processes %d", o.maxProcesses)
	}
	if o.timeout <= 0 || o.maxTimeout <= 0 {
		return errclass.Newh(errclass.InvalidArgument, "give positive durations such as 60s",
			"--timeout %v / --max-timeout %v", o.timeout, o.maxTimeout)
	}
	srv, err := slotd.New(slotd.Config{
		AppSocket: o.appSocket, AdminSocket: o.adminSocket,
		AppGroup: o.appGroup, AdminGroup: o.adminGroup, Sandbox: o.sandbox,
		AppSocketMode: appMode, AdminSocketMode: adminMode, RunDirMode: dirMode,
		DefaultTimeout: o.timeout, MaxTimeout: o.maxTimeout, MaxApps: o.maxProcesses,
		Logger: log,
	})
	if err != nil {
		return err
	}
	// Sockets are born with the umask's mode and then widened by chmod;
	// a strict umask keeps that window closed.
	unix.Umask(0o077)
	if err := srv.Listen(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if ok, err := slotd.Notify("READY=1"); err != nil {
		log.Warn().Err(err).Msg("readiness notification failed")
	} else if ok {
		log.Debug().Msg("notified service manager")
	}
	log.Info().Int("pid", os.Getpid()).Str("version", version()).Msg("pkcshsmd ready")
	err = srv.Serve(ctx)
	_, _ = slotd.Notify("STOPPING=1")
	return err
}

// Main runs pkcshsmd with args and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := NewCommand(ctx)
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "pkcshsmd: error: %v\n", err)
	if h := errclass.Hint(err); h != "" {
		fmt.Fprintf(stderr, "pkcshsmd: hint: %s\n", h)
	}
	if errors.Is(err, errclass.InvalidArgument) {
		return ExitUsage
	}
	return ExitFail
}
