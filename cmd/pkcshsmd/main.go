// Command pkcshsmd is the pkcshsm token daemon. See man/pkcshsmd.8 and
// package runtime/slotd.
package main

import (
	"context"
	"io"
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/pkcshsmd/internal/daemoncmd"
)

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func runMain(args []string, stdout, stderr io.Writer) int {
	return daemoncmd.Main(context.Background(), args, stdout, stderr)
}
