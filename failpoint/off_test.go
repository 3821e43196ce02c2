//go:build !failpoints

package failpoint

import (
	"os"
	"path/filepath"
	"testing"
)

// Without the tag the environment is never acted on: a kill rule would end
// this test binary, an error rule would make Err fail, a trace would write.
func TestInertWithoutTag(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	t.Setenv(EnvSpec, "test.kill=kill,test.err=error,test.knob=value:3,test.bad=nonsense")
	t.Setenv(EnvTrace, trace)
	if Enabled {
		t.Fatal("Enabled in a build without the failpoints tag")
	}
	Hit("test.kill")
	if err := Err("test.err"); err != nil {
		t.Fatalf("Err = %v in a build without the tag", err)
	}
	if n := Int("test.knob", 7); n != 7 {
		t.Fatalf("Int = %d in a build without the tag, want the default 7", n)
	}
	if _, err := os.Stat(trace); !os.IsNotExist(err) {
		t.Fatalf("trace file written in a build without the tag: %v", err)
	}
}
