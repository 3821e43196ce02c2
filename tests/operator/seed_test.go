package operator

import (
	"regexp"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/internal/testenv"
	"github.com/pkcshsm/pkcshsm/mkvp"
)

// seedLines checks that out holds the lines of seed 002 for the command
// (with the operation's id) exactly, in order, and that every other
// non-blank line is one of the extra lines that explain themselves.
func seedLines(t *testing.T, what, out string, seed []string, extra []*regexp.Regexp) {
	t.Helper()
	lines := strings.Split(out, "\n")
	i := 0
	for _, l := range lines {
		l = strings.TrimRight(l, " ")
		if i < len(seed) && l == seed[i] {
			i++
			continue
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		ok := false
		for _, re := range extra {
			ok = ok || re.MatchString(l)
		}
		if !ok {
			t.Errorf("%s: a line the seed does not have and that does not explain itself: %q\n%s", what, l, out)
		}
	}
	if i < len(seed) {
		t.Errorf("%s: the seed's line %q is missing (or out of order):\n%s", what, seed[i], out)
	}
}

var (
	// The per-slot summary: a count and, in parentheses, what it means.
	summary = regexp.MustCompile(`^Slot \d+: \d+ secure keys? [a-z -]+ \([a-z ,-]+\)\.$`)
	// The seed's advice after reencipher, as this tool words it.
	advice = regexp.MustCompile(`^( - If you specified EXPECTED_MKVPS| {3}configuration file\(s\)| {3}new ones\.| - Run 'pkcshsm_mk_change finalize| {3}keys have been set/activated\.)`)
	listed = regexp.MustCompile(`^  Slot \d+: Label: \S+$`)
)

// TestOutputAsSeed002 (issue 19.10): reencipher, finalize and cancel print
// the lines of seed 002 exactly; the lines they add explain themselves (a
// finalize prints one summary per slot, not one per pass; a cancel does not
// say keys were "restored"); the general reasons for an absent token are
// behind -v info.
func TestOutputAsSeed002(t *testing.T) {
	t.Parallel()
	r := testenv.NewRootParallel(t, testenv.CCA(2), testenv.CCA(3))
	r.Token(2, 5) // slot 3 has no token
	aes := r.LoadNew(mkvp.CCAAES, 7, testenv.CCAAPQNs...)
	r.Daemon()
	r.App([]uint{2})

	res := r.Run("pkcshsm_mk_change", testenv.PIN("y", testenv.UserPIN), "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	id := opID(t, res.Stdout)
	seedLines(t, "reencipher", res.Stdout, []string{
		"The following tokens are affected by this master key change:",
		"Re-enciphering, please wait...",
		"Completed.",
		"Master key change operation '" + id + "' created.",
		"Once the new master keys have been set/activated:",
	}, []*regexp.Regexp{summary, advice, listed})
	seedLines(t, "reencipher's warning", res.Stderr, []string{
		"WARNING: The following slots have no token present:",
		"ATTENTION: If you start a concurrent master key change operation while not",
	}, []*regexp.Regexp{
		regexp.MustCompile(`^  Slot 3 \(.+\)$`),
		regexp.MustCompile(`^(all expected tokens are present|if the token would be affected)`),
		regexp.MustCompile(`^Continue \[y/N\]\? Enter the USER PIN for slot 2:$`),
	})
	if res := r.Run("pkcshsm_mk_change", testenv.PIN("n"), "-v", "info", "reencipher", "-a", "01.0033,02.0033", "-A", aes); !strings.Contains(res.Stderr, "Reasons for a token not being present") {
		t.Errorf("-v info does not give the reasons:\n%s", res.Stderr)
	}

	res = r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "cancel", "-i", id)
	seedLines(t, "cancel", res.Stdout, []string{
		"Canceling, please wait...",
		"Master key change operation '" + id + "' successfully canceled.",
	}, []*regexp.Regexp{summary})
	if strings.Contains(res.Stdout, "restored") || strings.Count(res.Stdout, "Slot 2:") != 1 {
		t.Errorf("cancel's summary:\n%s", res.Stdout)
	}

	id = reencipher2(t, r, aes)
	r.SetNew(mkvp.CCAAES, testenv.CCAAPQNs...)
	res = r.Run("pkcshsm_mk_change", testenv.PIN(testenv.UserPIN), "finalize", "-i", id)
	seedLines(t, "finalize", res.Stdout, []string{
		"Finalizing, please wait...",
		"Master key change operation '" + id + "' successfully finalized.",
	}, []*regexp.Regexp{summary})
	if strings.Count(res.Stdout, "Slot 2:") != 1 {
		t.Errorf("finalize prints more than one summary for slot 2:\n%s", res.Stdout)
	}
}

// reencipher2 is reencipher with the absent slot's question answered.
func reencipher2(t *testing.T, r *testenv.Root, aes string) string {
	t.Helper()
	res := r.Run("pkcshsm_mk_change", testenv.PIN("y", testenv.UserPIN), "reencipher", "-a", "01.0033,02.0033", "-A", aes)
	if res.Code != 0 {
		t.Fatalf("reencipher: exit %d\n%s", res.Code, res.Out())
	}
	return opID(t, res.Stdout)
}

func opID(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`operation '([A-Za-z0-9]{6})' created`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no operation id in:\n%s", out)
	}
	return m[1]
}
