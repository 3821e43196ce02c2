// Package operator holds the tests of what operators hit running the
// procedure through a real terminal (issue 19): prompts, output errors,
// hints against the man pages. Every test runs the real binaries in a
// temporary root made by internal/testenv.
package operator
