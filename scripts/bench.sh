#!/usr/bin/env bash
# Runs the benchmarks whose figures docs/bench.md records, and prints them
# with the date, the machine and each exact command. Not run by CI (it
# takes several minutes and wants a quiet machine).
#
#   bash scripts/bench.sh            # everything below
#   bash scripts/bench.sh pass       # one group: pass, broadcast, impact, sim, size, softhsm
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
want=${1:-all}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)"
bench() { # group, command...
	local group=$1
	shift
	[ "$want" = all ] || [ "$want" = "$group" ] || return 0
	echo
	echo "## $group"
	echo "\$ $*"
	"$@" 2>&1 | grep -Ev '^(goos|goarch|pkg|cpu|PASS|ok )'
}
bench pass go test -run '^$' -bench 'Pass' -benchtime 3x ./tokenlib/mkchange/
bench broadcast go test -run '^$' -bench 'Broadcast' -benchtime 20x -timeout 30m ./cmd/pkcshsmd/
bench impact go test -run '^$' -bench 'MKChangeImpact' -benchtime 1x ./tokenlib/
bench sim go test -run '^$' -bench 'AESGCM1KiB' ./hsm/sim/
if [ -x scripts/bench-size.sh ]; then bench size bash scripts/bench-size.sh; fi
if [ -x scripts/bench-softhsm.sh ]; then bench softhsm bash scripts/bench-softhsm.sh; fi
