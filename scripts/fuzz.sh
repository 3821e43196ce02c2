#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for SECONDS each (default 60),
# one after the other, and prints one line per target with its executions.
# Not run by CI per commit: a fuzzing budget before a release.
#
#   bash scripts/fuzz.sh 300              # 5 minutes per target
#   bash scripts/fuzz.sh 30 ./state ./hsm # only targets in these packages
#
# A crasher is written by Go to PKG/testdata/fuzz/FuzzName/<hash>: fix the
# bug and commit that file; it is then a regression seed that every plain
# "go test" runs. Exit status 1 when any target found a crasher.
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
case $secs in '' | *[!0-9]*) echo "usage: fuzz.sh [SECONDS] [PACKAGE...]" >&2; exit 2 ;; esac
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
export PATH="/usr/local/go/bin:$PATH"

failed=0 total=0
log=$(mktemp "${TMPDIR:-/tmp}/pkcshsm-fuzz.XXXXXX")
trap 'rm -f "$log"' EXIT
# "go test -list" names the targets of each package without running them.
# A short -fuzzminimizetime: minimising a new input otherwise stalls a
# target for a minute at a time.
while read -r pkg; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(cd "$dir" && go test -list '^Fuzz' . 2>/dev/null | grep '^Fuzz'); do
		total=$((total + 1))
		if (cd "$dir" && go test -run '^$' -fuzz "^${target}\$" -fuzztime "${secs}s" -fuzzminimizetime 5s -parallel 2 . >"$log" 2>&1); then
			execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
			printf 'ok    %-45s %s  execs %s\n' "$pkg" "$target" "${execs:-?}"
		else
			failed=$((failed + 1))
			printf 'FAIL  %-45s %s\n' "$pkg" "$target"
			sed 's/^/      /' "$log" | tail -n 20
		fi
	done
done < <(go list "${pkgs[@]}")
echo
echo "fuzz: $((total - failed)) passed, $failed failed"
[ $failed -eq 0 ]
