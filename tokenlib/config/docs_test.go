package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var globalKeywords = []string{"version", "hsm-backend", "simulator-dir", "disable-event-support", "statistics", "slot"}

// TestManPageCoversKeywords keeps pkcshsm.conf(5) in step with the parsers:
// every keyword a parser accepts is documented.
func TestManPageCoversKeywords(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "man", "pkcshsm.conf.5"))
	if err != nil {
		t.Fatal(err)
	}
	// Drop roff escapes for hyphens so "hsm\-backend" matches.
	page := strings.ReplaceAll(string(data), `\-`, "-")
	var all []string
	all = append(all, globalKeywords...)
	all = append(all, slotKeys...)
	all = append(all, ccaKeywords...)
	all = append(all, ep11Keywords...)
	all = append(all, "APQN_WHITELIST", "END", "SYM", "AES", "APKA")
	for _, kw := range all {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(kw) + `\b`).MatchString(page) {
			t.Errorf("man/pkcshsm.conf.5 does not mention %s", kw)
		}
	}
}

// TestSamplesCoverKeywords checks that the sample files, which seed the
// fuzzers, use every keyword of their kind between them.
func TestSamplesCoverKeywords(t *testing.T) {
	tests := []struct {
		files    []string
		keywords []string
		fold     bool
	}{
		{[]string{"pkcshsm.conf"}, append(append([]string{}, globalKeywords...), slotKeys...), false},
		{[]string{"ccatok.conf", "ccatok-any.conf"}, append(append([]string{"version"}, ccaKeywords...), "SYM", "AES", "APKA"), true},
		{[]string{"ep11tok.conf", "ep11tok-fips.conf", "ep11tok-legacy.conf"}, append([]string{"version"}, ep11Keywords...), false},
	}
	for _, tt := range tests {
		var all strings.Builder
		for _, f := range tt.files {
			all.Write(readSample(t, f))
		}
		flags := "(?m)"
		if tt.fold {
			flags = "(?mi)"
		}
		for _, kw := range tt.keywords {
			if !regexp.MustCompile(flags + `^\s*` + regexp.QuoteMeta(kw) + `\b`).MatchString(all.String()) {
				t.Errorf("no sample of %v uses %s", tt.files, kw)
			}
		}
	}
}
