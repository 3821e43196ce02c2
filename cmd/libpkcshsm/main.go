// Command libpkcshsm is the PKCS#11 module of pkcshsm's tokens, built as a
// shared library that applications load like opencryptoki.so:
//
//	go build -buildmode=c-shared -o libpkcshsm.so ./cmd/libpkcshsm
//
// All of it is in tokenlib/cabi; see libpkcshsm(3).
//
// With PKCSHSM_CPUPROFILE=FILE in its environment, an application that
// loads the module writes a CPU profile of the whole process (the module's
// Go code and, as far as Go's profiler sees, the time spent in the host's
// C code) from the moment the module is loaded until the first
// C_Finalize: `go tool pprof libpkcshsm.so FILE`. An unusable FILE is
// reported on standard error and the module runs without profiling.
package main

import (
	"fmt"
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/internal/cpuprofile"
	"github.com/pkcshsm/pkcshsm/tokenlib/cabi"
)

func init() {
	stop, err := cpuprofile.Start()
	if err != nil {
		// Only when the user asked for a profile: a module otherwise
		// never writes to its host's standard error.
		fmt.Fprintln(os.Stderr, "libpkcshsm:", err)
		return
	}
	cabi.OnFinalize(stop)
}

func main() {}
