// Command pkcshsmd is the pkcshsm token daemon. See man/pkcshsmd.8 and
// package runtime/slotd.
package main

import (
	"context"
	"os"

	"github.com/pkcshsm/pkcshsm/cmd/pkcshsmd/internal/daemoncmd"
)

func main() {
	os.Exit(daemoncmd.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
