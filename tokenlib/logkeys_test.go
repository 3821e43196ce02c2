package tokenlib

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// lineBuffer collects log lines and signals each write.
type lineBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{}
}

func (w *lineBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *lineBuffer) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Split(strings.TrimSpace(w.b.String()), "\n")
}

// duplicateKeys returns the keys that occur more than once at the top
// level of a JSON object.
func duplicateKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil { // {
		return nil, err
	}
	seen := map[string]bool{}
	var dups []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k := tok.(string)
		if seen[k] {
			dups = append(dups, k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return dups, nil
}

// TestAgentLogHasNoDuplicateKeys: the runtime agent inside the library
// logs (here: that pkcshsmd is not running) with "component":"agent" once,
// not once from the library and once from the agent.
func TestAgentLogHasNoDuplicateKeys(t *testing.T) {
	layout := writeTestRoot(t)
	w := &lineBuffer{wrote: make(chan struct{}, 1)}
	l, err := Open(Options{Layout: layout, Logger: zerolog.New(w).Level(zerolog.WarnLevel), kdf: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	deadline := time.After(20 * time.Second)
	for {
		for _, line := range w.lines() {
			if !strings.Contains(line, `"agent"`) {
				continue
			}
			dups, err := duplicateKeys(line)
			if err != nil || len(dups) > 0 {
				t.Fatalf("log line %s: duplicate keys %v (%v)", line, dups, err)
			}
			return
		}
		select {
		case <-w.wrote:
		case <-deadline:
			t.Fatalf("the agent logged nothing: %q", w.lines())
		}
	}
}
