//go:build race

package testenv

// RaceFlags are the go build flags (for Program) of a program the race
// detector should watch as it watches the tests: "-race" when the tests
// run with -race.
var RaceFlags = []string{"-race"}
