package cabi

// SetEntryHook sets the hook every entry point calls once it holds the
// module lock (nil removes it). Set it only while no call is running.
func SetEntryHook(f func(name string)) { testHookEntered = f }
