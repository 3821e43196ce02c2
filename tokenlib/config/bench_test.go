package config

import "testing"

func BenchmarkParseGlobal(b *testing.B) {
	data := readSample(b, "pkcshsm.conf")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseGlobal("/etc/pkcshsm/pkcshsm.conf", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseCCA(b *testing.B) {
	data := readSample(b, "ccatok.conf")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseCCA("/etc/pkcshsm/ccatok.conf", data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseEP11(b *testing.B) {
	data := readSample(b, "ep11tok.conf")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseEP11("/etc/pkcshsm/ep11tok.conf", data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseEP11MaxAPQNs parses the largest allowed APQN list.
func BenchmarkParseEP11MaxAPQNs(b *testing.B) {
	data := []byte("APQN_ALLOWLIST\n" + manyPairs(maxAPQNs) + "END\n")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseEP11("/etc/pkcshsm/ep11tok.conf", data); err != nil {
			b.Fatal(err)
		}
	}
}
