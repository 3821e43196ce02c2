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
	for _, tool := range []string{"bash", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
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
	fmt.Fprintf(&script, "set -euo pipefail\nexport PATH=%q:$PATH\ncd %q\n", bin, dir)
	for i, b := range blocks {
		fmt.Fprintf(&script, "exec 0<%q\n{\n%s} >%q 2>%q\necho block %d done >>%q\n",
			pins, b.text, filepath.Join(dir, fmt.Sprintf("out.%d", i)), filepath.Join(dir, fmt.Sprintf("err.%d", i)), i, filepath.Join(dir, "done"))
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Env = append(os.Environ(), "TMPDIR="+dir)
	// Its own process group: whatever the runbook left running (the daemon,
	// an application) is killed with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	runOut, runErr := cmd.CombinedOutput()
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
