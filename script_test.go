package pkcshsm

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

var (
	scriptBinOnce sync.Once
	scriptBin     string
	scriptBinErr  error
)

// buildTools builds the real binaries the scripts run, once per test run.
func buildTools(t *testing.T) string {
	scriptBinOnce.Do(func() {
		// The binaries of this go test run (internal/testenv).
		scriptBin, scriptBinErr = testenv.BinDir()
	})
	if scriptBinErr != nil {
		t.Fatal(scriptBinErr)
	}
	return scriptBin
}

// TestScripts runs testdata/script/*.txtar: the operator's procedure and
// the mistakes an operator makes, with the real binaries in a temporary
// root ($PKCSHSM_ROOT = $WORK/root). Each script reads as an example.
//
// Commands besides testscript's own:
//
//	exits CODE PROG ARGS...   run PROG and require exit status CODE
//	grab VAR FILE REGEXP      set $VAR to REGEXP's first group in FILE
func TestScripts(t *testing.T) {
	t.Parallel()
	bin := buildTools(t)
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", bin+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("PKCSHSM_ROOT", filepath.Join(env.WorkDir, "root"))
			return os.MkdirAll(filepath.Join(env.WorkDir, "root", "etc", "pkcshsm"), 0o755)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exits CODE PROG ARGS...")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exits: bad code %q", args[0])
				}
				err = ts.Exec(args[1], args[2:]...)
				got := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					got = ee.ExitCode()
				} else if err != nil {
					ts.Fatalf("exits: %v", err)
				}
				if got != want {
					ts.Fatalf("%s exited %d, want %d", args[1], got, want)
				}
			},
			"grab": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 3 {
					ts.Fatalf("usage: grab VAR FILE REGEXP")
				}
				m := regexp.MustCompile(args[2]).FindStringSubmatch(ts.ReadFile(args[1]))
				if len(m) < 2 {
					ts.Fatalf("grab: no match for %q in %s", args[2], args[1])
				}
				ts.Setenv(args[0], m[1])
			},
		},
	})
}
