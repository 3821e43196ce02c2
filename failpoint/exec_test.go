package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	demoOnce  sync.Once
	demoBins  map[bool]string
	demoError error
)

// TestMain removes the binaries built for the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if b := demoBins[true]; b != "" {
		os.RemoveAll(filepath.Dir(b))
	}
	os.Exit(code)
}

// demo builds testdata/fpdemo with and without the failpoints tag, once.
func demo(t *testing.T, tagged bool) string {
	t.Helper()
	demoOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fpdemo")
		if err != nil {
			demoError = err
			return
		}
		demoBins = map[bool]string{}
		for _, tag := range []bool{false, true} {
			bin := filepath.Join(dir, "fpdemo-"+strconv.FormatBool(tag))
			args := []string{"build", "-o", bin}
			if tag {
				args = append(args, "-tags", "failpoints")
			}
			out, err := exec.Command("go", append(args, "./testdata/fpdemo")...).CombinedOutput()
			if err != nil {
				demoError = errors.New("go build: " + err.Error() + "\n" + string(out))
				return
			}
			demoBins[tag] = bin
		}
	})
	if demoError != nil {
		t.Fatal(demoError)
	}
	return demoBins[tagged]
}

type result struct {
	stdout, stderr string
	status         int  // exit status, -1 if signalled
	killed         bool // ended by SIGKILL
}

func runDemo(t *testing.T, tagged bool, env []string, points ...string) result {
	t.Helper()
	cmd := exec.Command(demo(t, tagged), points...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.status = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.killed = ws.Signal() == syscall.SIGKILL
		}
	default:
		t.Fatal(err)
	}
	return r
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

func TestTaggedBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	pid := func(line string) string { f := strings.Fields(line); return f[len(f)-1] }
	t.Run("kill stops at the point and logs it first", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "log")
		r := runDemo(t, true, []string{EnvSpec + "=p.two", EnvLog + "=" + log}, "p.one", "p.two", "p.three")
		if !r.killed {
			t.Fatalf("not killed by SIGKILL: %+v", r)
		}
		if got := lines(r.stdout); strings.Join(got, "|") != "enabled true|passed p.one" {
			t.Fatalf("stdout = %q; want the process to stop before passing p.two", r.stdout)
		}
		b, _ := os.ReadFile(log)
		if l := lines(string(b)); len(l) != 1 || !strings.HasPrefix(l[0], "p.two kill ") || pid(l[0]) == "" {
			t.Fatalf("log = %q", b)
		}
	})
	t.Run("kill at the nth hit", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=p=kill@3"}, "p", "hit:p", "p", "p")
		if !r.killed || strings.Join(lines(r.stdout), "|") != "enabled true|passed p|passed p" {
			t.Fatalf("%+v; want a kill at the third hit", r)
		}
	})
	t.Run("error only through Err", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=p=error"}, "hit:p", "p", "q", "p")
		want := "enabled true|passed p|error failpoint p: injected failure|passed q|error failpoint p: injected failure"
		if r.status != 0 || strings.Join(lines(r.stdout), "|") != want {
			t.Fatalf("%+v; want %q", r, want)
		}
	})
	t.Run("error at the nth hit", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=p=error@2"}, "p", "p", "p")
		want := "enabled true|passed p|error failpoint p: injected failure|passed p"
		if strings.Join(lines(r.stdout), "|") != want {
			t.Fatalf("%+v; want %q", r, want)
		}
	})
	t.Run("exit", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=a=exit:0,b=exit:9"}, "x", "b", "a")
		if r.killed || r.status != 9 || strings.Join(lines(r.stdout), "|") != "enabled true|passed x" {
			t.Fatalf("%+v; want exit 9 at b", r)
		}
	})
	t.Run("sleep", func(t *testing.T) {
		start := time.Now()
		r := runDemo(t, true, []string{EnvSpec + "=s=sleep:300ms"}, "s", "hit:s")
		if took := time.Since(start); took < 600*time.Millisecond {
			t.Fatalf("two sleeps of 300ms took %v", took)
		}
		if strings.Join(lines(r.stdout), "|") != "enabled true|passed s|passed s" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("value knob", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=k=value:5"}, "int:k", "int:other", "k", "hit:k")
		want := "enabled true|value k 5|value other 42|passed k|passed k"
		if r.status != 0 || strings.Join(lines(r.stdout), "|") != want {
			t.Fatalf("%+v; want %q", r, want)
		}
	})
	t.Run("trace records every point in order", func(t *testing.T) {
		trace := filepath.Join(t.TempDir(), "trace")
		r := runDemo(t, true, []string{EnvTrace + "=" + trace}, "a", "hit:b", "a")
		if r.status != 0 {
			t.Fatalf("%+v", r)
		}
		b, _ := os.ReadFile(trace)
		var names []string
		for _, l := range lines(string(b)) {
			names = append(names, strings.Fields(l)[0])
			if pid(l) == "" {
				t.Fatalf("trace line %q has no pid", l)
			}
		}
		if strings.Join(names, " ") != "a b a" {
			t.Fatalf("trace = %q", b)
		}
	})
	t.Run("malformed spec fails loudly", func(t *testing.T) {
		r := runDemo(t, true, []string{EnvSpec + "=p=explode"}, "q")
		if r.status != 2 || !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "hint: ") ||
			!strings.Contains(r.stderr, "unknown action") || strings.Contains(r.stdout, "passed") {
			t.Fatalf("%+v; want exit 2 with error: and hint: lines", r)
		}
	})
	t.Run("untagged binary ignores the environment", func(t *testing.T) {
		trace := filepath.Join(t.TempDir(), "trace")
		r := runDemo(t, false, []string{EnvSpec + "=p=kill,q=error,k=value:5,r=explode", EnvTrace + "=" + trace}, "p", "q", "hit:p", "int:k")
		if r.killed || r.status != 0 || strings.Join(lines(r.stdout), "|") != "enabled false|passed p|passed q|passed p|value k 42" {
			t.Fatalf("%+v", r)
		}
		if _, err := os.Stat(trace); !os.IsNotExist(err) {
			t.Fatalf("untagged binary wrote a trace: %v", err)
		}
	})
}
