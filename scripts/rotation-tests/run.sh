#!/usr/bin/env bash
# Runs every rotation test scenario (NN-*.sh beside this file), each in its
# own temporary root, and ends with "N passed, N failed".
#
#   bash scripts/rotation-tests/run.sh            # build, then run all
#   bash scripts/rotation-tests/run.sh 02 14      # only these scenarios
#   PKCSHSM_BIN=DIR bash scripts/rotation-tests/run.sh   # prebuilt binaries
#   KEEP=1 ...                                    # keep every root
#
# A failed scenario prints its FAIL line with the steps it ran and keeps
# its root. Exit status: 0 when every scenario passed, 1 otherwise.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

if [ -z "${PKCSHSM_BIN:-}" ]; then
	PKCSHSM_BIN=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-rt-bin.XXXXXX")
	trap 'rm -rf "$PKCSHSM_BIN"' EXIT
	(cd "$top" && for c in hsmsim pkcshsm pkcshsmd pkcshsm_mk_change p11load; do
		go build -o "$PKCSHSM_BIN/$c" "./cmd/$c" || exit 1
	done) || { echo "build failed"; exit 1; }
fi
export PKCSHSM_BIN
command -v jq >/dev/null || { echo "rotation tests need jq (apt-get install jq)"; exit 1; }

pass=0 fail=0
for f in "$here"/[0-9][0-9]-*.sh; do
	name=$(basename "$f" .sh)
	if [ $# -gt 0 ]; then
		want=0
		for a in "$@"; do case $name in "$a"*) want=1 ;; esac; done
		[ $want = 1 ] || continue
	fi
	start=$(date +%s)
	out=$(bash "$f" 2>&1)
	rc=$?
	secs=$(($(date +%s) - start))
	if [ $rc -eq 0 ] && grep -q "^PASS $name\$" <<<"$out"; then
		pass=$((pass + 1))
		echo "PASS $name (${secs}s)"
	else
		fail=$((fail + 1))
		grep -q "^FAIL " <<<"$out" || echo "FAIL $name: exit $rc"
		printf '%s\n' "$out"
	fi
done
echo
echo "rotation-tests: $pass passed, $fail failed"
[ $fail -eq 0 ]
