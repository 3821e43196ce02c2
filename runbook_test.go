package pkcshsm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
)

// runbookBlock is one fenced block of docs/runbook.md: commands (```sh)
// or the output they must print (```output, right after its ```sh).
type runbookBlock struct {
	line   int
	kind   string
	text   string
	expect *runbookBlock
}

// parseRunbook returns the ```sh blocks in order, each with the ```output
// block that follows it, if any.
func parseRunbook(doc []byte) ([]*runbookBlock, error) {
	var blocks []*runbookBlock
	var cur *runbookBlock
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(l, "```"):
			kind := strings.TrimSpace(strings.TrimPrefix(l, "```"))
			cur = &runbookBlock{line: n, kind: kind}
		case cur != nil && l == "```":
			switch cur.kind {
			case "sh":
				blocks = append(blocks, cur)
			case "output":
				if len(blocks) == 0 || blocks[len(blocks)-1].expect != nil {
					return nil, fmt.Errorf("line %d: an output block must follow a sh block", cur.line)
				}
				blocks[len(blocks)-1].expect = cur
			}
			cur = nil
		case cur != nil:
			cur.text += l + "\n"
		}
	}
	if cur != nil {
		return nil, fmt.Errorf("line %d: unterminated block", cur.line)
	}
	return blocks, nil
}

// placeholders stand for what differs from run to run in an expected line.
var placeholders = strings.NewReplacer(
	`<ID>`, `[A-Za-z0-9]{6}`,
	`<MKVP>`, `[0-9A-Fa-f]{16,32}`,
	`<TIME>`, `[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8} UTC`,
	`<N>`, `[0-9]+`,
	`<PID>`, `[0-9]+`,
	`<ANY>`, `.*`,
)

// expectedLine turns one line of an output block into a regexp: literal
// text with placeholders, blanks collapsed.
func expectedLine(l string) (*regexp.Regexp, error) {
	q := regexp.QuoteMeta(strings.TrimSpace(l))
	for _, p := range []string{"<ID>", "<MKVP>", "<TIME>", "<N>", "<PID>", "<ANY>"} {
		q = strings.ReplaceAll(q, regexp.QuoteMeta(p), p)
	}
	q = placeholders.Replace(q)
	q = regexp.MustCompile(`(\\ )+|\s+`).ReplaceAllString(q, `\s+`)
	return regexp.Compile(`^` + q + `$`)
}

// matchOutput checks that the non-blank expected lines appear in order
// among the output's lines (other lines may come between them).
func matchOutput(expect, out string) error {
	lines := strings.Split(out, "\n")
	i := 0
	for _, e := range strings.Split(expect, "\n") {
		if strings.TrimSpace(e) == "" {
			continue
		}
		re, err := expectedLine(e)
		if err != nil {
			return fmt.Errorf("bad expected line %q: %v", e, err)
		}
		for ; i < len(lines) && !re.MatchString(strings.TrimSpace(lines[i])); i++ {
		}
		if i == len(lines) {
			return fmt.Errorf("expected line not printed (in this order): %q", strings.TrimSpace(e))
		}
		i++
	}
	return nil
}

func TestRunbookMatcher(t *testing.T) {
	out := "Operation:       aB3dE9\n    State:       Key objects have been re-enciphered,\nother\n  Slot: 2 Label: cca\n"
	for _, tc := range []struct {
		expect string
		ok     bool
	}{
		{"Operation: <ID>\nState: Key objects have been re-enciphered,\nSlot: <N> Label: cca", true},
		{"Slot: <N> Label: cca\nOperation: <ID>", false}, // order matters
		{"Operation: <ID>x", false},
		{"State: Key objects have been finalized,", false},
	} {
		if err := matchOutput(tc.expect, out); (err == nil) != tc.ok {
			t.Errorf("matchOutput(%q) = %v, want ok=%v", tc.expect, err, tc.ok)
		}
	}
}

// TestRunbook runs every command of docs/runbook.md, block by block in one
// shell, in a temporary root with binaries built from this tree, and checks
// each output block against what its commands printed. Every block gets a
// fresh standard input of USER PIN lines (the procedure's commands ask for
// the PIN of each affected slot), so a block holds at most one command that
// reads a PIN.
func TestRunbook(t *testing.T) {
	t.Parallel()
	// ansible-playbook, ansible-galaxy, ansible-vault: chapter 10 (many
	// hosts) rotates a practice fleet with the collection in ansible/.
	requireTools(t, "bash", "jq", "ansible-playbook", "ansible-galaxy", "ansible-vault")
	blocks := runbookBlocks(t)
	if len(blocks) < 10 {
		t.Fatalf("docs/runbook.md has %d command blocks: the parser found almost nothing", len(blocks))
	}
	dir := t.TempDir()
	// The binaries of this go test run, shared by every package
	// (internal/testenv).
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(dir, "pins")
	if err := os.WriteFile(pins, bytes.Repeat([]byte("12345678\n"), 16), 0o600); err != nil {
		t.Fatal(err)
	}
	// One bash runs every block: variables set in one block are seen by the
	// next. Each block's output goes to its own file, then a marker line.
	var script strings.Builder
	src, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// PKCSHSM_SRC: the source tree, whose ansible/ the runbook installs.
	fmt.Fprintf(&script, "set -euo pipefail\nexport PATH=%q:$PATH\nexport PKCSHSM_SRC=%q\ncd %q\n", bin, src, dir)
	for i, b := range blocks {
		fmt.Fprintf(&script, "exec 0<%q\n{\n%s} >%q 2>%q\necho block %d done >>%q\n",
			pins, b.text, filepath.Join(dir, fmt.Sprintf("out.%d", i)), filepath.Join(dir, fmt.Sprintf("err.%d", i)), i, filepath.Join(dir, "done"))
	}
	runOut, runErr := runbookShell(t, dir, script.String())
	done, _ := os.ReadFile(filepath.Join(dir, "done"))
	ran := strings.Count(string(done), "\n")
	for i, b := range blocks {
		out, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("out.%d", i)))
		errOut, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("err.%d", i)))
		if i >= ran {
			t.Fatalf("docs/runbook.md:%d: the block failed (%v):\n%s\nstdout:\n%s\nstderr:\n%s\n%s", b.line, runErr, b.text, out, errOut, runOut)
		}
		if b.expect != nil {
			if err := matchOutput(b.expect.text, string(out)); err != nil {
				t.Errorf("docs/runbook.md:%d: %v\ncommands:\n%s\nstdout:\n%s\nstderr:\n%s", b.expect.line, err, b.text, out, errOut)
			}
		}
	}
	if runErr != nil {
		t.Fatalf("the runbook's shell failed after every block: %v\n%s", runErr, runOut)
	}
}

// runbookShell runs script in one bash, in its own process group:
// whatever the runbook left running (the daemon, an application) is
// killed with it when the test ends.
func runbookShell(t *testing.T, dir, script string) ([]byte, error) {
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	return cmd.CombinedOutput()
}

// TestRunbookSlip is issue 16's finding 3: an operator pastes the runbook
// block after block into a shell (no set -e: a failed command does not
// stop the paste) and mistypes the USER PIN at the EP11 reencipher. Before
// the fix §3 checked only the CCA operation and §4 set the new wrapping
// key, and every EP11 key was lost. Now the EP11 reencipher block says
// STOP, §3's verify of every operation fails, §4 sets nothing on the EP11
// APQNs, and the EP11 keys still decrypt the data of before.
func TestRunbookSlip(t *testing.T) {
	t.Parallel()
	requireTools(t, "bash", "jq")
	blocks := runbookBlocks(t)
	doc, err := os.ReadFile("docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	stop := bytes.Index(doc, []byte("\n## 5."))
	if stop < 0 {
		t.Fatal("docs/runbook.md has no section 5")
	}
	stopLine := bytes.Count(doc[:stop], []byte("\n")) + 1
	dir := t.TempDir()
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	good, bad := filepath.Join(dir, "pins"), filepath.Join(dir, "wrong-pins")
	os.WriteFile(good, bytes.Repeat([]byte("12345678\n"), 16), 0o600)
	os.WriteFile(bad, bytes.Repeat([]byte("11112222\n"), 16), 0o600)
	var script strings.Builder
	fmt.Fprintf(&script, "export PATH=%q:$PATH\ncd %q\n", bin, dir)
	slipped, set := -1, -1
	for i, b := range blocks {
		if b.line > stopLine {
			break
		}
		in := good
		if strings.Contains(b.text, "reencipher -a 06.0033,0e.0033 -e") && !strings.Contains(b.text, "--dry-run") {
			in, slipped = bad, i
		}
		if strings.Contains(b.text, "hsmsim set") {
			set = i
		}
		fmt.Fprintf(&script, "exec 0<%q\n{\n%s} >%q 2>%q\n", in, b.text,
			filepath.Join(dir, fmt.Sprintf("out.%d", i)), filepath.Join(dir, fmt.Sprintf("err.%d", i)))
	}
	if slipped < 0 || set < slipped {
		t.Fatalf("runbook: EP11 reencipher block %d, set block %d", slipped, set)
	}
	// What the test checks afterwards, in the same shell.
	fmt.Fprintf(&script, `exec 0<%[1]q
hsmsim show --json | jq -r '.[] | select(.apqn == "06.0033" or .apqn == "0E.0033") | .registers.WK.current.pattern' >wk.now
echo "$OLD_WK" >wk.old
p11load -slots 2,4 -duration 1s -check "$PKCSHSM_ROOT/before.json" >check.out 2>&1; echo $? >check.rc
kill -TERM $APP; wait $APP
jq -r .failed "$PKCSHSM_ROOT/app.json" >app.failed
`, good)
	runOut, _ := runbookShell(t, dir, script.String())
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		return strings.TrimSpace(string(b))
	}
	if e := read(fmt.Sprintf("err.%d", slipped)); !strings.Contains(e, "STOP: the EP11 reencipher failed") {
		t.Errorf("the EP11 reencipher with a wrong PIN does not say STOP:\n%s", e)
	}
	if e := read(fmt.Sprintf("err.%d", set)); !strings.Contains(e, "STOP: not set on 06.0033") || !strings.Contains(e, "STOP: not set on 0e.0033") {
		t.Errorf("the set block does not refuse the EP11 APQNs:\n%s", e)
	}
	old := read("wk.old")
	now := strings.Fields(read("wk.now"))
	if old == "" || len(now) != 2 || !strings.EqualFold(now[0], old) || !strings.EqualFold(now[1], old) {
		t.Errorf("the EP11 wrapping key was set after the slip: CURRENT %v, before %q\n%s", now, old, runOut)
	}
	if rc := read("check.rc"); rc != "0" {
		t.Errorf("the EP11 keys no longer decrypt the data of before (exit %s):\n%s", rc, read("check.out"))
	}
	if f := read("app.failed"); f != "0" {
		t.Errorf("the application failed %s operations", f)
	}
}

// TestRunbookPipesEveryPIN (issue 19.1): a PIN prompt inside a pasted block
// would read the operator's next pasted lines as the PIN. Every p11load in
// the runbook gets its PIN on a pipe.
func TestRunbookPipesEveryPIN(t *testing.T) {
	blocks := runbookBlocks(t)
	n := 0
	for _, b := range blocks {
		for i, l := range strings.Split(b.text, "\n") {
			if !regexp.MustCompile(`(^|[;&|(]\s*)p11load\s`).MatchString(l) {
				continue
			}
			n++
			if !regexp.MustCompile(`\|\s*p11load\s`).MatchString(l) {
				t.Errorf("docs/runbook.md:%d: p11load without its PIN on a pipe: %s", b.line+1+i, l)
			}
		}
	}
	if n < 3 {
		t.Fatalf("found %d p11load lines", n)
	}
}

// runbookBlocks reads and parses docs/runbook.md.
func runbookBlocks(t *testing.T) []*runbookBlock {
	t.Helper()
	doc, err := os.ReadFile("docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseRunbook(doc)
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}
