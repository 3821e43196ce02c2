//go:build !race

package testenv

// RaceFlags: see race.go.
var RaceFlags []string
