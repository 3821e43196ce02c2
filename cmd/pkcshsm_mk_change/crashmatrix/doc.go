// Package crashmatrix holds the crash-point matrix of the master key change
// (its tests only): the real pkcshsm_mk_change, pkcshsmd and p11load,
// built with the failpoints tag, run a rotation on the simulator in a
// temporary root; for every named failpoint (package failpoint) one run
// kills the process that reaches it with SIGKILL, then completes the
// operation the way `pkcshsm_mk_change list` advises and verifies every key
// and every operation file.
//
// The points are not listed by hand: a first run of each scenario records
// the points every process passes (PKCSHSM_FAILPOINT_TRACE), and the matrix
// kills at each of them. A point added to the code joins the matrix by
// itself. The per-commit run kills once per point; scripts/crash-sweep.sh
// kills at every hit of every point, with more keys.
package crashmatrix
