// Command fpdemo passes the failpoints named by its arguments, in order,
// and prints a line after each: the failpoint package's tests build it with
// and without the failpoints tag and run it under rules.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/pkcshsm/pkcshsm/failpoint"
)

func main() {
	fmt.Println("enabled", failpoint.Enabled)
	for _, name := range os.Args[1:] {
		if knob, ok := strings.CutPrefix(name, "int:"); ok {
			fmt.Println("value", knob, failpoint.Int(knob, 42))
			continue
		}
		if hit, ok := strings.CutPrefix(name, "hit:"); ok {
			failpoint.Hit(hit)
			fmt.Println("passed", hit)
			continue
		}
		if err := failpoint.Err(name); err != nil {
			fmt.Println("error", err)
			continue
		}
		fmt.Println("passed", name)
	}
}
