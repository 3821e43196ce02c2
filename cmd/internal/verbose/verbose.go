// Package verbose is the -v/--verbose option shared by every pkcshsm
// command: the same six levels everywhere (the levels of upstream's
// pkcshsm_mk_change), mapped onto zerolog levels.
package verbose

import (
	"io"

	"github.com/rs/zerolog"

	"github.com/pkcshsm/pkcshsm/errclass"
)

// Usage is the flag's help text.
const Usage = "log level: none, error, warn, info, devel or debug"

// Names lists the levels from quietest to loudest.
var Names = []string{"none", "error", "warn", "info", "devel", "debug"}

var levels = map[string]zerolog.Level{
	"none": zerolog.Disabled, "error": zerolog.ErrorLevel, "warn": zerolog.WarnLevel,
	"info": zerolog.InfoLevel, "devel": zerolog.DebugLevel, "debug": zerolog.TraceLevel,
}

// Level parses a level name.
func Level(name string) (zerolog.Level, error) {
	l, ok := levels[name]
	if !ok {
		return zerolog.Disabled, errclass.Newh(errclass.InvalidArgument, "use one of none, error, warn, info, devel, debug",
			"invalid verbose level '%s'", name)
	}
	return l, nil
}

// Logger returns a human-readable logger on w at the named level, with
// timestamps to the millisecond.
func Logger(w io.Writer, name string) (zerolog.Logger, error) {
	l, err := Level(name)
	if err != nil {
		return zerolog.Nop(), err
	}
	if l == zerolog.Disabled {
		return zerolog.Nop(), nil
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "2006-01-02T15:04:05.000Z07:00"}).
		Level(l).With().Timestamp().Logger(), nil
}

// TimeFormat is the timestamp format of JSON logs: RFC 3339 with
// milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"
