package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestPlainRewrite: the plain-SQLite reference rewrites every row once,
// each to its next version, with values of the requested sizes, and
// refuses a shape it cannot run.
func TestPlainRewrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plain")
	shape := RowShape{Rows: 1234, Blobs: 180.4, Summ: 40}
	res, err := PlainRewrite(context.Background(), dir, shape, 500, 100)
	if err != nil || res.Rows != shape.Rows || res.CPU <= 0 || res.Wall <= 0 {
		t.Fatalf("%+v, %v", res, err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "plain.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, v2, okSize int
	if err := db.QueryRow(`SELECT count(*), sum(version = 2), sum(length(blobs) = 180 AND length(mk) = 40) FROM blob`).Scan(&n, &v2, &okSize); err != nil {
		t.Fatal(err)
	}
	if n != shape.Rows || v2 != n || okSize != n {
		t.Fatalf("%d rows, %d at version 2, %d of the shape", n, v2, okSize)
	}
	if _, err := PlainRewrite(context.Background(), filepath.Join(t.TempDir(), "x"), RowShape{}, 500, 100); err == nil {
		t.Fatal("an empty shape was accepted")
	}
}

// BenchmarkPlainRewrite: the reference alone, 100,000 rows of the pass's
// shape after reencipher (about 170 + 30 bytes).
func BenchmarkPlainRewrite(b *testing.B) {
	for b.Loop() {
		res, err := PlainRewrite(context.Background(), filepath.Join(b.TempDir(), "plain"), RowShape{Rows: 100000, Blobs: 170, Summ: 30}, 2000, 250)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Rows)/res.CPU.Seconds(), "rows/cpu-s")
	}
}
