// Package man holds the man pages. Its test keeps every page in line with
// the real --help of its command: every subcommand and every flag of the
// command is documented, and the page documents no flag the command does
// not have.
package man

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// pages maps each page to its command and to the flags of other programs
// the page quotes (panel.exe, ep11info, systemctl ...), which are not the
// command's own.
var pages = []struct {
	page, cmd string
	foreign   []string
}{
	{"pkcshsm_mk_change.1", "pkcshsm_mk_change", []string{"mk-query", "mktype", "mkregister"}},
	{"pkcshsm.1", "pkcshsm", nil},
	{"pkcshsmd.8", "pkcshsmd", []string{"exclude-pid"}}, // pkcshsm_mk_change's
	{"hsmsim.1", "hsmsim", nil},
}

// command is what --help shows of one (sub)command.
type command struct {
	path  string          // "keys restore-old"
	flags map[string]rune // long name -> shorthand (0: none)
	subs  []string
}

var (
	flagLine = regexp.MustCompile(`^\s+(?:-(\w), )?--([a-z0-9][a-z0-9-]*)`)
	subLine  = regexp.MustCompile(`^  ([a-z][a-z0-9-]*)\s+\S`)
	// A long option in roff source: \-\-apqns, \-\-hsm\-mkvp (or plain
	// dashes).
	roffLong = regexp.MustCompile(`(?:\\-|-){2}([a-z0-9]+(?:(?:\\-|-)[a-z0-9]+)*)`)
)

// parseHelp reads cobra's help text.
func parseHelp(path, text string) command {
	c := command{path: path, flags: map[string]rune{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":") {
			section = line
			continue
		}
		switch section {
		case "Flags:", "Global Flags:":
			if m := flagLine.FindStringSubmatch(line); m != nil {
				var short rune
				if m[1] != "" {
					short = rune(m[1][0])
				}
				c.flags[m[2]] = short
			}
		case "Available Commands:", "Additional Commands:":
			if m := subLine.FindStringSubmatch(line); m != nil && m[1] != "help" {
				c.subs = append(c.subs, m[1])
			}
		}
	}
	return c
}

// walk runs "bin args... --help" for the command and all its subcommands.
func walk(t *testing.T, bin string, root string, args []string) []command {
	t.Helper()
	cmd := exec.Command(bin, append(slices.Clone(args), "--help")...)
	cmd.Env = append(os.Environ(), "PKCSHSM_ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v --help: %v\n%s", bin, args, err, out)
	}
	c := parseHelp(strings.Join(args, " "), string(out))
	// Defaults are shown resolved: no variable is left to the reader.
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.Index(l, "(default "); i >= 0 && strings.Contains(l[i:], "$") {
			t.Errorf("%s %v --help shows an unresolved default: %s", filepath.Base(bin), args, strings.TrimSpace(l))
		}
	}
	all := []command{c}
	for _, s := range c.subs {
		all = append(all, walk(t, bin, root, append(slices.Clone(args), s))...)
	}
	return all
}

func build(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

func unroff(s string) string { return strings.ReplaceAll(s, `\-`, "-") }

func TestManPagesMatchHelp(t *testing.T) {
	dir := t.TempDir()
	root := t.TempDir()
	for _, p := range pages {
		t.Run(p.page, func(t *testing.T) {
			raw, err := os.ReadFile(p.page)
			if err != nil {
				t.Fatal(err)
			}
			page := unroff(string(raw))
			cmds := walk(t, build(t, dir, p.cmd), root, nil)
			// -v means the same everywhere: --verbose LEVEL, never --version.
			if short, ok := cmds[0].flags["verbose"]; !ok || short != 'v' {
				t.Errorf("%s has no -v/--verbose", p.cmd)
			}
			if short := cmds[0].flags["version"]; short != 0 {
				t.Errorf("%s --version has the short form -%c", p.cmd, short)
			}
			own := map[string]bool{}
			for _, c := range cmds {
				if c.path != "" && !strings.Contains(page, c.path) {
					t.Errorf("the page does not document the command %q", c.path)
				}
				for long, short := range c.flags {
					own[long] = true
					if long == "help" {
						continue
					}
					if !strings.Contains(page, "--"+long) {
						t.Errorf("%q: the page does not document --%s", c.path, long)
					}
					if short != 0 && !regexp.MustCompile(`(^|[^\w-])-`+regexp.QuoteMeta(string(short))+`\b`).MatchString(page) {
						t.Errorf("%q: the page does not document -%c (--%s)", c.path, short, long)
					}
				}
			}
			for _, m := range roffLong.FindAllStringSubmatch(string(raw), -1) {
				name := unroff(m[1])
				if !own[name] && !slices.Contains(p.foreign, name) {
					t.Errorf("the page documents --%s, which %s does not have", name, p.cmd)
				}
			}
		})
	}
}

// TestP11loadPage: p11load (Go flags, not cobra) has a page that documents
// every flag of p11load -h and where the USER PIN comes from.
func TestP11loadPage(t *testing.T) {
	raw, err := os.ReadFile("p11load.1")
	if err != nil {
		t.Fatal(err)
	}
	page := unroff(string(raw))
	bin := build(t, t.TempDir(), "p11load")
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	flags := regexp.MustCompile(`(?m)^  -([a-z][a-z-]*)`).FindAllStringSubmatch(string(out), -1)
	if len(flags) < 5 {
		t.Fatalf("p11load -h shows %d flags:\n%s", len(flags), out)
	}
	for _, f := range flags {
		if !strings.Contains(page, "-"+f[1]) {
			t.Errorf("p11load.1 does not document -%s", f[1])
		}
	}
	for _, want := range []string{"USER PIN", "echo off", "first line of standard input"} {
		if !strings.Contains(page, want) {
			t.Errorf("p11load.1 does not say %q", want)
		}
	}
}
