//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether this binary was built with the failpoints tag.
const Enabled = true

var (
	loadOnce sync.Once
	rules    map[string]Rule
	logPath  string
	trace    string

	mu   sync.Mutex
	hits = map[string]int{}
)

func load() {
	parsed, err := Parse(os.Getenv(EnvSpec))
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\nhint: fix or unset %s (see package failpoint)\n", err, EnvSpec)
		os.Exit(2)
	}
	rules = make(map[string]Rule, len(parsed))
	for _, r := range parsed {
		rules[r.Name] = r
	}
	logPath, trace = os.Getenv(EnvLog), os.Getenv(EnvTrace)
}

// Hit marks a durable step: it records the step in the trace file and acts
// on a kill, sleep or exit rule for name. An error rule is ignored here.
func Hit(name string) { _ = act(name, false) }

// Err marks a durable step at which a test may inject an error: like Hit,
// and an error rule makes it return an error wrapping ErrInjected.
func Err(name string) error { return act(name, true) }

func act(name string, canFail bool) error {
	loadOnce.Do(load)
	if trace != "" {
		appendLine(trace, name+" "+strconv.Itoa(os.Getpid()))
	}
	r, ok := rules[name]
	if !ok {
		return nil
	}
	mu.Lock()
	hits[name]++
	n := hits[name]
	mu.Unlock()
	if r.Nth != 0 && r.Nth != n {
		return nil
	}
	if r.Action == Value || r.Action == Error && !canFail {
		return nil
	}
	if logPath != "" {
		appendLine(logPath, name+" "+r.Action.String()+" "+strconv.Itoa(os.Getpid()))
	}
	switch r.Action {
	case Kill:
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		for {
			time.Sleep(time.Hour) // never go on past the point, should the kill be late
		}
	case Exit:
		os.Exit(r.Status)
	case Sleep:
		time.Sleep(r.Sleep)
	case Error:
		return fmt.Errorf("failpoint %s: %w", name, ErrInjected)
	}
	return nil
}

// Int returns the number a rule "name=value:N" sets, or def.
func Int(name string, def int) int {
	loadOnce.Do(load)
	if r, ok := rules[name]; ok && r.Action == Value {
		return r.Value
	}
	return def
}

// appendLine appends one line and fsyncs it, so the line survives the kill
// that may follow at once. A failure to write is reported on stderr: the
// test reading the file will then fail on its own.
func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "failpoint: %v\n", err)
		return
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		fmt.Fprintf(os.Stderr, "failpoint: %v\n", err)
	}
	f.Sync()
}
