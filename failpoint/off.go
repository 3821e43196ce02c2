//go:build !failpoints

package failpoint

// Enabled reports whether this binary was built with the failpoints tag.
const Enabled = false

// Hit marks a durable step. Without the failpoints tag it does nothing.
func Hit(string) {}

// Err marks a durable step at which a test may inject an error. Without the
// failpoints tag it returns nil.
func Err(string) error { return nil }

// Int returns def: without the failpoints tag no knob is ever turned.
func Int(_ string, def int) int { return def }
