// Command pkcshsm administers pkcshsm tokens: it lists slots, initializes
// tokens, sets PINs and generates, lists and restores secure keys. See
// pkcshsm(1).
package main

import (
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/pkcshsm/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
