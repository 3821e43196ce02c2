package command

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/apqn"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/hsmsim")

const goldenDir = "../../../testdata/hsmsim"

type result struct {
	code           int
	stdout, stderr string
}

// run executes hsmsim in-process with --dir dir.
func run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), append([]string{"--dir", dir}, args...), strings.NewReader(""), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func mustRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	r := run(t, dir, args...)
	if r.code != 0 {
		t.Fatalf("hsmsim %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func hexKey(b byte, n int) string {
	return strings.Repeat(string("0123456789abcdef"[b>>4])+string("0123456789abcdef"[b&15]), n)
}

var goldenAPQNs = []string{"01.0033", "02.0033", "06.0033", "0e.0033"}

// TestGoldenMKVPs drives the officer steps with fixed keys and compares the
// mkvps attributes with what the kernel prints, kept as golden files.
func TestGoldenMKVPs(t *testing.T) {
	dir := t.TempDir()
	stages := []struct {
		name  string
		steps [][]string
	}{
		{"init", [][]string{{"init", "--seed", "golden", "--cca", "01.0033,02.0033", "--ep11", "06.0033,0e.0033"}}},
		{"load-new", [][]string{
			{"load-new", "--apqns", "01.0033,02.0033", "--type", "AES", "--key", hexKey(0x11, 32)},
			{"load-new", "--apqns", "01.0033", "--type", "APKA", "--key", hexKey(0x22, 32), "--part", "1/2"},
			{"load-new", "--apqns", "02.0033", "--type", "ASYM", "--key", hexKey(0x55, 24)},
			{"load-new", "--apqns", "06.0033", "--type", "WK", "--key", hexKey(0x44, 32)},
		}},
		{"set", [][]string{
			{"load-new", "--apqns", "01.0033", "--type", "APKA", "--key", hexKey(0x3c, 32), "--part", "2/2"},
			{"commit", "--apqns", "06.0033"},
			{"set", "--apqns", "01.0033,02.0033", "--type", "AES"},
			{"set", "--apqns", "06.0033"},
			{"offline", "0e.0033"},
		}},
	}
	bus := apqn.Bus{Root: filepath.Join(dir, "sys")}
	for _, st := range stages {
		for _, s := range st.steps {
			mustRun(t, dir, s...)
		}
		for _, q := range goldenAPQNs {
			id := apqn.MustParse(q)
			got, err := os.ReadFile(filepath.Join(bus.QueueDir(id), "mkvps"))
			if err != nil {
				t.Fatal(err)
			}
			if out := mustRun(t, dir, "mkvps", q); out != string(got) {
				t.Errorf("hsmsim mkvps %s prints %q, sysfs holds %q", q, out, got)
			}
			// The link the openCryptoki man page tells admins to cat.
			viaBus, err := os.ReadFile(filepath.Join(dir, "sys", "bus", "ap", "devices", q, "mkvps"))
			if err != nil || !bytes.Equal(viaBus, got) {
				t.Errorf("bus/ap/devices/%s/mkvps = %q (%v)", q, viaBus, err)
			}
			if _, err := apqn.ParseMKVPs(got); err != nil {
				t.Errorf("%s mkvps does not parse: %v", q, err)
			}
			compareGolden(t, filepath.Join(goldenDir, st.name, q+".mkvps"), got)
		}
	}
	compareGolden(t, filepath.Join(goldenDir, "show.golden"), []byte(mustRun(t, dir, "show")))
	compareGolden(t, filepath.Join(goldenDir, "show.json.golden"), []byte(mustRun(t, dir, "show", "--json")))
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// snapshotDir reads every file, mode and link below dir.
func snapshotDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			out[rel] = "link:" + l
			return err
		case fi.IsDir():
			out[rel] = "dir " + fi.Mode().String()
		default:
			b, err := os.ReadFile(p)
			out[rel] = fi.Mode().String() + ":" + string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnap(a, b map[string]string) string {
	for k, v := range a {
		if w, ok := b[k]; !ok {
			return k + " vanished"
		} else if w != v {
			return k + " changed"
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return k + " appeared"
		}
	}
	return ""
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033,02.0033", "--ep11", "06.0033,0e.0033")
	mustRun(t, dir, "load-new", "--apqns", "02.0033", "--type", "SYM", "--part", "1/3")
	cases := []struct {
		name string
		args []string
		code int
		want string // in the error line
	}{
		{"no command", []string{"frobnicate"}, 2, "unknown command"},
		{"unknown flag", []string{"show", "--colour"}, 2, "unknown flag"},
		{"init again", []string{"init", "--cca", "01.0033"}, 5, "already exists"},
		{"init dup APQN", []string{"init", "--force", "--cca", "01.0033,01.0033"}, 2, "more than once"},
		{"init dup across groups", []string{"init", "--force", "--cca", "01.0033", "--cca", "01.0033"}, 2, "more than once"},
		{"init both modes", []string{"init", "--force", "--cca", "01.0033", "--ep11", "01.0033"}, 2, "both CCA and EP11"},
		{"init card both modes", []string{"init", "--force", "--cca", "01.0033", "--ep11", "01.0034"}, 2, "cannot be both"},
		{"init empty", []string{"init", "--force"}, 2, "no APQNs"},
		{"init empty list", []string{"init", "--force", "--cca", ""}, 2, "empty APQN list"},
		{"init bad APQN", []string{"init", "--force", "--cca", "1g.0033"}, 2, "invalid APQN"},
		{"init bad card type", []string{"init", "--force", "--cca", "01.0033", "--cca-type", "CEX8P"}, 2, "not a CCA-Coproc card"},
		{"init args", []string{"init", "01.0033"}, 2, "takes no arguments"},
		{"load-new no apqns", []string{"load-new", "--type", "AES"}, 2, "--apqns is required"},
		{"load-new no type", []string{"load-new", "--apqns", "01.0033"}, 2, "--type is required"},
		{"load-new bad type", []string{"load-new", "--apqns", "01.0033", "--type", "DES"}, 2, "unknown master key type"},
		{"load-new bad APQN", []string{"load-new", "--apqns", "01.00331", "--type", "AES"}, 2, "invalid APQN"},
		{"load-new unknown APQN", []string{"load-new", "--apqns", "09.0001", "--type", "AES"}, 3, "no such APQN"},
		{"load-new key not hex", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--key", "zz" + hexKey(1, 31)}, 2, "not hexadecimal"},
		{"load-new key short", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--key", hexKey(1, 24)}, 2, "needs 64"},
		{"load-new SYM key long", []string{"load-new", "--apqns", "01.0033", "--type", "SYM", "--key", hexKey(1, 32)}, 2, "needs 48"},
		{"part reversed", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--part", "3/2"}, 2, "invalid --part"},
		{"part word", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--part", "one/two"}, 2, "invalid --part"},
		{"part three fields", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--part", "1/2/3"}, 2, "invalid --part"},
		{"part zero", []string{"load-new", "--apqns", "01.0033", "--type", "AES", "--part", "0/2"}, 2, "invalid --part"},
		{"part EP11", []string{"load-new", "--apqns", "06.0033", "--type", "WK", "--part", "1/2"}, 2, "not loaded in parts"},
		{"part out of order", []string{"load-new", "--apqns", "02.0033", "--type", "SYM", "--part", "3/3"}, 4, "part 3/3 needs"},
		{"WK on CCA", []string{"load-new", "--apqns", "01.0033", "--type", "WK"}, 2, "has no EP11 master key"},
		{"mixed modes", []string{"load-new", "--apqns", "01.0033,06.0033", "--type", "AES"}, 2, "has no CCA AES master key"},
		{"set NEW empty", []string{"set", "--apqns", "01.0033", "--type", "AES"}, 4, "want full"},
		{"set partial", []string{"set", "--apqns", "02.0033", "--type", "SYM"}, 4, "want full"},
		{"set CCA without type", []string{"set", "--apqns", "01.0033"}, 2, "--type is required"},
		{"set EP11 uncommitted", []string{"set", "--apqns", "06.0033"}, 4, "want committed"},
		{"commit CCA", []string{"commit", "--apqns", "01.0033"}, 2, "does not fit the adapter mode"},
		{"commit empty", []string{"commit", "--apqns", "06.0033"}, 4, "want uncommitted"},
		{"clear-new bad type", []string{"clear-new", "--apqns", "01.0033", "--type", "BOGUS"}, 2, "unknown master key type"},
		{"mkvps no APQN", []string{"mkvps"}, 2, "exactly one APQN"},
		{"mkvps bad APQN", []string{"mkvps", "01.00333"}, 2, "invalid APQN"},
		{"mkvps unknown APQN", []string{"mkvps", "09.0001"}, 3, "no such APQN"},
		{"offline nothing", []string{"offline"}, 2, "no APQN given"},
		{"offline bad APQN", []string{"offline", "xx"}, 2, "invalid APQN"},
		{"offline unknown APQN", []string{"offline", "01.0033", "09.0001"}, 3, "no such APQN"},
		{"fault no knob", []string{"fault", "01.0033"}, 2, "no fault given"},
		{"fault negative", []string{"fault", "01.0033", "--fail-after", "-1"}, 2, "negative"},
		{"fault bad latency", []string{"fault", "01.0033", "--latency", "soon"}, 2, "invalid argument"},
		{"fault huge latency", []string{"fault", "01.0033", "--latency", "2h"}, 2, "out of range"},
		{"fault too many engines", []string{"fault", "01.0033", "--latency", "1ms", "--engines", "65"}, 2, "out of range"},
		{"fault negative engines", []string{"fault", "01.0033", "--engines", "-1"}, 2, "out of range"},
		{"fault clear and set", []string{"fault", "01.0033", "--clear", "--checkstop"}, 2, "cannot be combined"},
		{"empty dir flag", []string{"--dir", "", "show"}, 2, "--dir is empty"},
		{"show args", []string{"show", "extra"}, 2, "takes no arguments"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshotDir(t, dir)
			r := run(t, dir, c.args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "hsmsim: error: ") || !strings.HasPrefix(lines[1], "hsmsim: hint: ") {
				t.Errorf("stderr is not one error and one hint line:\n%s", r.stderr)
			}
			if !strings.Contains(lines[0], c.want) {
				t.Errorf("error %q does not mention %q", lines[0], c.want)
			}
			if r.stdout != "" {
				t.Errorf("failed command printed %q", r.stdout)
			}
			if d := diffSnap(before, snapshotDir(t, dir)); d != "" {
				t.Errorf("state changed: %s", d)
			}
		})
	}
	// A topology error must not even create the directory.
	fresh := filepath.Join(t.TempDir(), "sim")
	if r := run(t, fresh, "init", "--cca", "01.0033,1.33"); r.code != 2 {
		t.Fatalf("duplicate in a fresh dir: exit %d", r.code)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatal("rejected init created the directory")
	}
	if r := run(t, fresh, "show"); r.code != 3 || !strings.Contains(r.stderr, "hsmsim init") {
		t.Fatalf("show without a simulator: exit %d\n%s", r.code, r.stderr)
	}
}

func TestCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033", "--ep11", "06.0033")
	path := filepath.Join(dir, "state")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-3] ^= 0x20
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"show"},
		{"mkvps", "01.0033"},
		{"load-new", "--apqns", "01.0033", "--type", "AES"},
		{"set", "--apqns", "06.0033"},
		{"offline", "01.0033"},
		{"fault", "01.0033", "--clear"},
	} {
		before := snapshotDir(t, dir)
		r := run(t, dir, args...)
		if r.code != 8 || !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "corrupt") ||
			!strings.Contains(r.stderr, "hint: ") {
			t.Errorf("%v on a corrupt state: exit %d\n%s", args, r.code, r.stderr)
		}
		if d := diffSnap(before, snapshotDir(t, dir)); d != "" {
			t.Errorf("%v changed the state directory: %s", args, d)
		}
	}
	// --force re-creates it.
	mustRun(t, dir, "init", "--force", "--cca", "01.0033")
	mustRun(t, dir, "show")
}

func TestKeyFromStdin(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033")
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"--dir", dir, "load-new", "--apqns", "01.0033", "--type", "AES", "--key", "-"},
		strings.NewReader(hexKey(0x11, 32)+"\n"), &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	// AES pattern of 32 bytes of 0x11, as IBM computes it: SHA-256(0x01 || key)[:8].
	if want := "01.0033 AES NEW: full 0x"; !strings.HasPrefix(out.String(), want) {
		t.Fatalf("output %q", out.String())
	}
	viaFlag := t.TempDir()
	mustRun(t, viaFlag, "init", "--cca", "01.0033")
	if got := mustRun(t, viaFlag, "load-new", "--apqns", "01.0033", "--type", "AES", "--key", hexKey(0x11, 32)); got != out.String() {
		t.Fatalf("stdin key gives %q, flag key %q", out.String(), got)
	}
}

// TestFaultEngines: --engines sets the adapter model, show reports it,
// --clear keeps it (it is the adapter's, not a fault) and drops the
// latency.
func TestFaultEngines(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, dir, "init", "--cca", "01.0033,02.0033")
	out := mustRun(t, dir, "fault", "01.0033", "02.0033", "--latency", "1ms", "--engines", "4")
	for _, id := range []string{"01.0033", "02.0033"} {
		if !strings.Contains(out, id+" fail-after off, latency 1ms, engines 4, checkstop false") {
			t.Fatalf("fault output:\n%s", out)
		}
	}
	var qs []struct {
		APQN      string  `json:"apqn"`
		LatencyMS float64 `json:"latency_ms"`
		Engines   int     `json:"engines"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, dir, "show", "--json")), &qs); err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Engines != 4 || qs[0].LatencyMS != 1 {
		t.Fatalf("show --json: %+v", qs)
	}
	if s := mustRun(t, dir, "show"); !strings.Contains(s, "online (latency 1ms, 4 engines)") {
		t.Fatalf("show:\n%s", s)
	}
	if out := mustRun(t, dir, "fault", "01.0033", "--clear"); !strings.Contains(out, "latency 0s, engines 4,") {
		t.Fatalf("after --clear:\n%s", out)
	}
}
