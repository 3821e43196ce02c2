#!/usr/bin/env bash
# The token library (libpkcshsm.so on the simulator) against SoftHSMv2 —
# and openCryptoki's soft token when OCK_TOKEN names one — through the
# same outside client, testdata/clients/p11stress.c in bench mode: each
# module is loaded with dlopen and timed by the same C code.
#
#   bash scripts/bench-softhsm.sh            # RUNS=3 SECONDS_PER_TEST=2
#   OCK_TOKEN=ocktok bash scripts/bench-softhsm.sh
#
# For openCryptoki, pkcsslotd must run and the soft token must be
# initialised with the USER PIN 12345678 (pkcsconf -I -c 3; pkcsconf -u -c 3).
# Each module runs RUNS times; the table has the median of each line, our
# figure, SoftHSMv2's, and their ratio (ours / theirs in operations per
# second: >= 1.0 means we are at least as fast). Not run by CI: it takes
# minutes and wants a quiet machine. The table goes to standard output and,
# with OUT=FILE, to FILE too.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_TEST:-2}
OBJECTS=${OBJECTS:-10000}
work=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
bin=$work/bin
mkdir -p "$bin"
PIN=12345678 SO=87654321

echo "building the module, the tools and the C client" >&2
(cd "$here" && go build -buildmode=c-shared -o "$bin/libpkcshsm.so" ./cmd/libpkcshsm &&
	go build -o "$bin/hsmsim" ./cmd/hsmsim && go build -o "$bin/pkcshsm" ./cmd/pkcshsm)
gcc -O2 -pthread -I/usr/include/p11-kit-1 -o "$bin/p11stress" "$here/testdata/clients/p11stress.c" -ldl

# Our token: one simulated CCA adapter, one CCA token.
export PKCSHSM_ROOT=$work/root
mkdir -p "$PKCSHSM_ROOT/etc/pkcshsm"
printf 'hsm-backend = simulator\nslot 2 {\n\ttoken-type = cca\n\ttokname = cca\n\tconfname = ccatok.conf\n}\n' >"$PKCSHSM_ROOT/etc/pkcshsm/pkcshsm.conf"
printf 'version cca-0\nAPQN_ALLOWLIST\n1 0x33\nEND\n' >"$PKCSHSM_ROOT/etc/pkcshsm/ccatok.conf"
"$bin/hsmsim" init --cca 01.0033 >/dev/null
printf '%s\n%s\n' $SO $SO | "$bin/pkcshsm" token init --slot 2 --label cca >/dev/null
printf '%s\n%s\n%s\n' $SO $PIN $PIN | "$bin/pkcshsm" pin set --slot 2 >/dev/null

# SoftHSMv2: a token directory of its own, file object store.
softhsm=/usr/lib/softhsm/libsofthsm2.so
[ -e "$softhsm" ] || { echo "error: $softhsm is missing; hint: apt-get install softhsm2" >&2; exit 2; }
mkdir -p "$work/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/softhsm/tokens" >"$work/softhsm/softhsm2.conf"
export SOFTHSM2_CONF=$work/softhsm/softhsm2.conf
softhsm2-util --init-token --free --label shtok --pin $PIN --so-pin $SO >/dev/null

modules="pkcshsm:$bin/libpkcshsm.so:cca softhsm:$softhsm:shtok"
if [ -n "${OCK_TOKEN:-}" ]; then
	modules="$modules opencryptoki:/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so:$OCK_TOKEN"
fi
for run in $(seq "$RUNS"); do
	for m in $modules; do
		IFS=: read -r name so tok <<<"$m"
		echo "run $run: $name" >&2
		echo $PIN | "$bin/p11stress" bench --module "$so" --token "$tok" --seconds "$SECS" --objects "$OBJECTS" >"$work/$name.$run"
		sed "s/^/  /" "$work/$name.$run" >&2 # each run's raw lines, to see the spread
	done
done

# Median per test of the ops/s column over the runs.
median() { # name test
	local f
	for f in "$work/$1".*; do awk -v t="$2" -F'\t' '$1 == t {print $2}' "$f"; done | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else print v[int((NR + 1) / 2)]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
tests=$(awk -F'\t' 'NR > 1 {print $1}' "$work/pkcshsm.1")
{
	echo "Command: \`RUNS=$RUNS SECONDS_PER_TEST=$SECS OBJECTS=$OBJECTS${OCK_TOKEN:+ OCK_TOKEN=$OCK_TOKEN} bash scripts/bench-softhsm.sh\` ($(date -u +%Y-%m-%d), $(nproc) CPUs, load average at the end $(cut -d" " -f1-3 /proc/loadavg), medians of $RUNS runs, operations per second)"
	echo
	if [ -n "${OCK_TOKEN:-}" ]; then
		echo "| test | libpkcshsm | SoftHSMv2 | ratio | openCryptoki soft token | ratio |"
		echo "|---|---:|---:|---:|---:|---:|"
	else
		echo "| test | libpkcshsm | SoftHSMv2 | ratio |"
		echo "|---|---:|---:|---:|"
	fi
	for t in $tests; do
		ours=$(median pkcshsm "$t") sh=$(median softhsm "$t")
		line="| $t | $ours | $sh | $(ratio "$ours" "$sh") |"
		if [ -n "${OCK_TOKEN:-}" ]; then
			ock=$(median opencryptoki "$t")
			line="$line $ock | $(ratio "$ours" "$ock") |"
		fi
		echo "$line"
	done
} | tee "${OUT:-/dev/null}"
