// Command pkcshsm administers pkcshsm tokens: it lists slots, initializes
// tokens, sets PINs and generates, lists and restores secure keys. See
// pkcshsm(1).
package main

import (
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/internal/cpuprofile"
	"github.com/pkcshsm/pkcshsm/cmd/internal/interrupt"
	"github.com/pkcshsm/pkcshsm/cmd/pkcshsm/cli"
)

func main() {
	stopProfile, err := cpuprofile.Start()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	signals, stop := interrupt.Notify()
	code := cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, signals)
	stop()
	stopProfile()
	os.Exit(code)
}
