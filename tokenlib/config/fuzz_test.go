package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

func addSamples(f *testing.F, names ...string) {
	for _, n := range names {
		f.Add(readSample(f, n))
	}
}

// FuzzGrammar checks the shared grammar: no panic, and rendering the nodes
// of an accepted input parses to the same nodes.
func FuzzGrammar(f *testing.F) {
	addSamples(f, "pkcshsm.conf", "ccatok.conf", "ccatok-any.conf", "ep11tok.conf", "ep11tok-fips.conf", "ep11tok-legacy.conf")
	f.Add([]byte("a\n1 2\nEND\nb = 0x10\nc 3\n{\n}\nd ( x, y )\n\"s\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := parseFile("fuzz.conf", data)
		if err != nil {
			return
		}
		out := render(nodes)
		again, err := parseFile("fuzz.conf", out)
		if err != nil {
			t.Fatalf("re-parsing rendered nodes: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(stripLines(nodes), stripLines(again)) {
			t.Fatalf("render round trip changed the nodes\ninput:\n%s\nrendered:\n%s", data, out)
		}
	})
}

// stripLines zeroes line numbers so node trees compare by content.
func stripLines(nodes []*node) []*node {
	out := make([]*node, len(nodes))
	for i, n := range nodes {
		c := *n
		c.line = 0
		c.pairs = nil
		for _, p := range n.pairs {
			c.pairs = append(c.pairs, pair{a: p.a, b: p.b})
		}
		c.body = stripLines(n.body)
		out[i] = &c
	}
	return out
}

var fuzzDir = filepath.Join("/", "etc", "pkcshsm")

func FuzzGlobal(f *testing.F) {
	addSamples(f, "pkcshsm.conf")
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGlobal(filepath.Join(fuzzDir, "pkcshsm.conf"), data)
		if err != nil {
			return
		}
		checkGlobalRoundTrip(t, g)
	})
}

func FuzzCCA(f *testing.F) {
	addSamples(f, "ccatok.conf", "ccatok-any.conf")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCCA(filepath.Join(fuzzDir, "ccatok.conf"), data)
		if err != nil {
			return
		}
		checkCCARoundTrip(t, c)
	})
}

func FuzzEP11(f *testing.F) {
	addSamples(f, "ep11tok.conf", "ep11tok-fips.conf", "ep11tok-legacy.conf")
	f.Add([]byte("APQN_ANY\nEXPECTED_WKVP = \"00112233445566778899AABBCCDDEEFF0011\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseEP11(filepath.Join(fuzzDir, "ep11tok.conf"), data)
		if err != nil {
			return
		}
		checkEP11RoundTrip(t, e)
	})
}
