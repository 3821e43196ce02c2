// Command pkcshsm_mk_change initiates, lists, finalizes and cancels
// concurrent HSM master key changes of pkcshsm tokens. See
// pkcshsm_mk_change(1).
package main

import (
	"context"
	"os"
	"os/user"
	"runtime/debug"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/cmd/internal/clierr"
	"github.com/pkcshsm/pkcshsm/cmd/internal/cpuprofile"
	"github.com/pkcshsm/pkcshsm/cmd/internal/interrupt"
	"github.com/pkcshsm/pkcshsm/cmd/pkcshsm_mk_change/cli"
	"github.com/pkcshsm/pkcshsm/paths"
	"github.com/pkcshsm/pkcshsm/runtime/admin"
	"github.com/pkcshsm/pkcshsm/tokenlib/config"
)

func main() {
	stopProfile, err := cpuprofile.Start()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	tuneGC()
	layout := paths.FromEnv()
	name := "?"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	deps := cli.Deps{
		Stdin: os.Stdin, Stdout: clierr.Stdout(), Stderr: os.Stderr,
		Layout:   layout,
		UserName: name,
		OpenTokens: func(ctx context.Context, log zerolog.Logger, configPath string) (cli.Tokens, error) {
			return openTokens(ctx, layout, configPath, log)
		},
		DialAdmin: func(ctx context.Context, socket, configPath string) (cli.Broadcaster, error) {
			g, err := config.LoadGlobal(configPath)
			if err != nil {
				return nil, err
			}
			if g.DisableEventSupport {
				return nil, nil
			}
			c, err := admin.Dial(ctx, socket)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	}
	signals, stop := interrupt.Notify()
	deps.Signals = signals
	code := cli.Main(deps, os.Args[1:])
	stop()
	stopProfile()
	os.Exit(code)
}

// tuneGC lets the heap grow to five times what is live before a
// collection (GOGC=400) instead of twice, capped at 96 MiB by a soft
// memory limit: a pass over a token allocates small objects at a high
// rate but keeps only two pages of keys alive (a few MB), and with the
// default the collector cost a fifth of a pass's CPU (docs/bench.md,
// "Narrow blob table"). GOGC or GOMEMLIMIT in the environment win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(96 << 20)
	}
}
