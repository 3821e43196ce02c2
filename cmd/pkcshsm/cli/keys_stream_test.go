package cli

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pkcshsm/pkcshsm/tokenlib/store"
)

// TestKeysListStreamsAndReportsDamage: keys list pages through more keys
// than one page holds and writes the same JSON array json.Encoder would; a
// key whose stored attributes are damaged is reported by handle, every
// other key is still listed, and the exit code says data loss.
func TestKeysListStreamsAndReportsDamage(t *testing.T) {
	layout := newRoot(t)
	setupTokens(t)
	const n = 3
	for i := range n {
		ok(t, lines(userPIN), "keys", "generate", "--slot", "0", "--type", "aes", "--label", fmt.Sprint("k", i))
	}
	old := listPage
	listPage = 2 // cross page boundaries with few keys
	t.Cleanup(func() { listPage = old })
	out := ok(t, lines(userPIN), "keys", "list", "--slot", "0", "--json")
	var recs []keyRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) != n {
		t.Fatalf("keys list --json: %d records, %v\n%s", len(recs), err, out)
	}
	var want bytes.Buffer
	enc := json.NewEncoder(&want)
	enc.SetIndent("", "  ")
	if err := enc.Encode(recs); err != nil {
		t.Fatal(err)
	}
	if out != want.String() {
		t.Errorf("streamed JSON differs from json.Encoder's:\n%s\nwant:\n%s", out, want.String())
	}
	for i, r := range recs {
		if r.Label != fmt.Sprint("k", i) || (i > 0 && r.Handle <= recs[i-1].Handle) {
			t.Errorf("record %d: handle %d label %q", i, r.Handle, r.Label)
		}
	}
	table := ok(t, lines(userPIN), "keys", "list", "--slot", "0")
	if !strings.Contains(table, fmt.Sprintf("%d keys\n", n)) {
		t.Errorf("table: %s", table)
	}

	victim := recs[1].Handle
	db, err := sql.Open("sqlite", layout.TokenDir("ccatok")+"/"+store.DBName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE object SET attrs = substr(attrs, 1, 20) WHERE handle = ?`, victim); err != nil {
		t.Fatal(err)
	}
	db.Close()
	r := pkcshsm(t, lines(userPIN), "keys", "list", "--slot", "0", "--json")
	if r.code != 8 || !strings.Contains(r.stderr, fmt.Sprintf("key %d:", victim)) {
		t.Fatalf("keys list over a damaged key: exit %d\nstderr: %s", r.code, r.stderr)
	}
	recs = nil
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != n-1 {
		t.Fatalf("the other keys were not listed: %d, %v\n%s", len(recs), err, r.stdout)
	}
	for _, rec := range recs {
		if rec.Handle == victim {
			t.Errorf("the damaged key was listed as %+v", rec)
		}
	}
}
