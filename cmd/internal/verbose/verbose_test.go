package verbose

import (
	"bytes"
	"regexp"
	"testing"

	"github.com/pkcshsm/pkcshsm/errclass"
)

func TestLevels(t *testing.T) {
	for _, name := range Names {
		if _, err := Level(name); err != nil {
			t.Errorf("Level(%q): %v", name, err)
		}
	}
	if _, err := Level("loud"); errclass.Of(err) != errclass.InvalidArgument || errclass.Hint(err) == "" {
		t.Errorf("Level(loud) = %v", err)
	}
}

// TestLoggerTimestamps: log lines carry the date and the time to the
// millisecond (zerolog's console default is "3:04PM").
func TestLoggerTimestamps(t *testing.T) {
	var b bytes.Buffer
	log, err := Logger(&b, "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("hello")
	log.Debug().Msg("not at info")
	if !regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(Z|[+-]\d{2}:\d{2}) INF hello\n$`).Match(b.Bytes()) {
		t.Fatalf("log line %q", b.String())
	}
	b.Reset()
	if log, _ = Logger(&b, "none"); true {
		log.Error().Msg("quiet")
	}
	if b.Len() != 0 {
		t.Fatalf("level none logged %q", b.String())
	}
}
