// Package sim simulates IBM crypto adapters — CCA and EP11 coprocessors —
// faithfully enough that the whole master key change procedure runs on any
// Linux machine, and that an operator who learned on it is at home on real
// CEX adapters.
//
// # Life cycle
//
// [Init] creates a simulator in a directory: a state file, a lock file, a
// generation counter and a sysfs-shaped view in dir/sys. [Open] opens it;
// the returned [HSM] is an [hsm.Backend] for the tokens and an
// [hsm.Officer] for the security officer (the hsmsim command). Tokens open
// the simulator at paths.FromEnv().SimDir().
//
//	err := sim.Init(dir, sim.Topology{Groups: []sim.Group{
//		{Mode: apqn.ModeCCA, APQNs: []apqn.ID{apqn.MustParse("01.0033"), apqn.MustParse("02.0033")}},
//		{Mode: apqn.ModeEP11, APQNs: []apqn.ID{apqn.MustParse("06.0033")}},
//	}})
//	h, err := sim.Open(dir, sim.Options{})
//	defer h.Close()
//
// # Registers
//
// A CCA APQN has SYM, ASYM, AES and APKA master keys, each with a NEW
// register (empty, partial, full) and CURRENT and OLD registers (invalid,
// valid). An EP11 APQN has one wrapping key (WK) with CURRENT (invalid,
// valid) and NEW (empty, uncommitted, committed) and no OLD. Init gives
// every APQN valid CURRENT keys — the same within a [Group], as a TKE domain
// group would have — and empty NEW registers.
//
// The officer steps are those of a TKE: load a new key (CCA: possibly in
// parts, each part XORed into NEW, which stays partial until the last),
// commit it (EP11), set it (CCA: CURRENT→OLD, NEW→CURRENT; EP11: committed
// NEW→CURRENT; NEW emptied), or clear NEW. A step in the wrong register
// state fails with hsm.ErrRegisterState and changes nothing. [HSM.Do] runs
// several steps, on several APQNs, all-or-nothing.
//
// # Patterns
//
// Verification patterns are derived from the register content: AES and
// APKA as IBM does (leftmost 8 bytes of SHA-256(0x01 ‖ key)); SYM, ASYM and
// the EP11 WK with the same construction and the prefixes 0x02, 0x03 and
// 0x04 (ASYM printed as 16 bytes, WK as 32 of which the WKVP is the first
// 16). See [PatternOf].
//
// # Secure keys
//
// Blobs use the real layouts (see hsm.Inspect). The key material after the
// header is sealed with AES-256-GCM under a key derived from the master key
// register content, with the header as associated data. A CCA blob works
// while its pattern is the CURRENT or the OLD one; an EP11 blob only while
// it is the CURRENT one, else hsm.ErrWrongMK.
//
// # EP11 sessions
//
// Each EP11 APQN keeps EP11 sessions (hsm.Sessions) in the shared state, so
// they outlive the process that logged them in, up to a limit per APQN
// (DefaultMaxSessions, or Topology.MaxSessions / Tx.SetMaxSessions). A
// login derives the session from the PIN and the nonce; its pin blob and
// session field are derived from that and the CURRENT wrapping key, so
// APQNs with the same wrapping key return equal pin blobs. Keys made under
// a context with an hsm.Binder are bound to the binder's session and work
// only while it is logged in on the APQN used (else hsm.ErrSessionBound);
// a re-encipher to NEW moves a bound key to the session's field under the
// new wrapping key. See session.go.
//
// # Sharing between processes
//
// Every process that opens the directory sees the same adapters. Writers
// (officer steps, fault knobs) take an exclusive flock on dir/lock, read
// the state, write the new state atomically (temp file, fsync, rename,
// fsync of the directory), render the sysfs view and then bump a counter
// in dir/generation, which every process maps shared. Each operation
// compares that counter with the value seen at the last load — one atomic
// load — and re-reads the state file only when it moved, so a process sees
// an officer's change at its next operation. A corrupt state file is
// reported as errclass.DataLoss naming the file.
//
// # The sysfs view
//
// dir/sys mirrors the kernel's AP bus: devices/ap/cardXX with type,
// online, config, chkstop, serialnr and ap_functions; devices/ap/cardXX/
// XX.YYYY with online, config, chkstop and mkvps (byte-exact to the
// kernel's format, "- -" lines for an offline or checkstopped queue); and
// links in bus/ap/devices. Read it with apqn.Bus{Root: dir + "/sys"}. The
// real /sys is never written.
//
// # Faults
//
// Faults are persisted and seen by every process: an APQN can be taken
// offline, checkstopped, made to fail after N more operations, or slowed
// by a fixed latency per operation. Unavailable APQNs fail with
// hsm.ErrOffline.
//
// # Adapter time
//
// The latency is the service time of a request; with an engine count an
// APQN serves that many requests at once and queues the rest, across all
// processes, through a shared table of engine busy-until times (see
// adapter.go and hsmsim(1), ADAPTER TIME). Backend operations hold no
// lock while they wait or work; only officer steps, EP11 logins and
// logouts and an armed fail-after count take the state lock.
package sim
