// Command pkcshsm administers pkcshsm tokens: it lists slots, initializes
// tokens, sets PINs and generates, lists and restores secure keys. See
// pkcshsm(1).
package main

import (
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/internal/interrupt"
	"github.com/pkcshsm/pkcshsm/cmd/pkcshsm/cli"
)

func main() {
	signals, stop := interrupt.Notify()
	code := cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, signals)
	stop()
	os.Exit(code)
}
