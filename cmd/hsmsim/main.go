// Command hsmsim plays the HSM security officer's TKE for the simulated
// CCA and EP11 adapters of pkcshsm. See man/hsmsim.1 and package hsm/sim.
package main

import (
	"context"
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/hsmsim/command"
	"github.com/pkcshsm/pkcshsm/cmd/internal/cpuprofile"
)

func main() {
	stopProfile, err := cpuprofile.Start()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	code := command.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(code)
}
