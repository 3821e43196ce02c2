#!/usr/bin/env bash
# The token library (libpkcshsm.so on the simulator) against SoftHSMv2 —
# and openCryptoki's soft token when OCK_TOKEN names one — through the
# same outside client, testdata/clients/p11stress.c in bench mode: each
# module is loaded with dlopen and driven by the same C code.
#
#   bash scripts/bench-softhsm.sh            # RUNS=3 SECONDS_PER_TEST=1
#   OCK_TOKEN=ocktok bash scripts/bench-softhsm.sh
#   TESTS="aes-gcm-64k rsa2048-sign" bash scripts/bench-softhsm.sh
#
# What it measures: for every test, CPU time per operation (getrusage of
# the client process, user + system: the modules run in it) beside wall
# time. The modules are interleaved test by test (run 1: test A on each
# module, test B on each module, ...; the module order rotates from run to
# run), so a change of the machine's load hits all of them alike. Every
# test is a fresh process that empties the token first, opens its session
# and logs in outside the timed window, and destroys what it created, so
# openCryptoki's 2,048-object cap is never reached (OBJECTS, the find
# tests' object count, defaults to 1,000). A test that fails or that a
# module lacks is a line of the table ("FAILED ..." or "n/a ..."), never
# the end of the run.
#
# The table has the median of RUNS runs per line: each module's CPU µs per
# operation, and the ratio theirs / ours (>= 1.0: we use no more CPU than
# they do), then the wall µs per operation. With OUT=FILE it goes to FILE
# too; RAW=DIR keeps every run's raw lines. Not run by CI: it takes
# minutes and wants a quiet machine.
#
# For openCryptoki, pkcsslotd must run and the soft token (slot 3) must be
# initialised with the USER PIN 12345678, as root:
#   pkcsslotd; echo ocktok | pkcsconf -I -c 3 -S 87654321
#   pkcsconf -u -c 3 -S 87654321 -n 12345678
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SECS=${SECONDS_PER_TEST:-1}
OBJECTS=${OBJECTS:-1000}
ALL_TESTS="aes-gcm-64 aes-gcm-1k aes-gcm-64k aes-gcm-64k-parts aes-cbc-pad-64 aes-cbc-pad-1k aes-cbc-pad-64k aes-cbc-pad-64k-parts ecdsa-p256-sign rsa2048-sign aes-keygen-session aes-keygen-token find find-all 2threads-aes-gcm-1k 2threads-ecdsa-p256-sign login"
TESTS=${TESTS:-$ALL_TESTS}
work=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
bin=$work/bin
mkdir -p "$bin"
PIN=12345678 SO=87654321
load_start=$(cut -d" " -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%MZ)

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
	ock=/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so
	[ -e "$ock" ] || { echo "error: $ock is missing; hint: apt-get install opencryptoki" >&2; exit 2; }
	pgrep -x pkcsslotd >/dev/null || { echo "error: pkcsslotd is not running; hint: start it as root (pkcsslotd)" >&2; exit 2; }
	modules="$modules opencryptoki:$ock:$OCK_TOKEN"
fi
set -- $modules
nmod=$#

for run in $(seq "$RUNS"); do
	for t in $TESTS; do
		# Rotate the module order from run to run.
		set -- $modules
		for _ in $(seq $(((run - 1) % nmod))); do set -- "${@:2}" "$1"; done
		for m in "$@"; do
			IFS=: read -r name so tok <<<"$m"
			out=$work/$name.$run
			if ! echo $PIN | "$bin/p11stress" bench --module "$so" --token "$tok" --seconds "$SECS" --objects "$OBJECTS" --only "$t" >"$work/line" 2>"$work/err"; then
				grep -q "^$t	" "$work/line" || printf '%s\tFAILED\t%s\n' "$t" "$(tr '\n\t' '  ' <"$work/err" | cut -c1-100)" >>"$work/line"
			fi
			grep "^$t	" "$work/line" >>"$out" || true
			echo "run $run $name: $(grep "^$t	" "$work/line" | tr '\t' ' ')" >&2
		done
	done
done
[ -z "${RAW:-}" ] || { mkdir -p "$RAW" && cp "$work"/*.[0-9]* "$RAW"/; }

# median NAME TEST COLUMN: the median over the runs of a numeric column
# (3 = wall µs/op, 4 = CPU µs/op); a test without figures gives the
# first run's "n/a (why)" or "FAILED (why)" text for the CPU column, the
# bare word for the wall column.
median() {
	local f vals
	vals=$(for f in "$work/$1".*; do awk -v t="$2" -v c="$3" -F'\t' '$1 == t && $2 ~ /^[0-9.]+$/ {print $c}' "$f"; done | sort -g)
	if [ -n "$vals" ]; then
		awk '{v[NR] = $1} END {x = v[int((NR + 1) / 2)]; if (x >= 100) printf "%.0f", x; else printf "%.2f", x}' <<<"$vals"
	else
		cat "$work/$1".* | awk -v t="$2" -v c="$3" -F'\t' '$1 == t {if (c == 4) print $2 " (" $3 ")"; else print $2; exit}'
	fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a + 0 > 0) printf "%.2f", b / a; else print "-" }'; }
{
	tests_env=""
	[ "$TESTS" = "$ALL_TESTS" ] || tests_env=" TESTS=\"$TESTS\""
	echo "Command: \`${GOEXPERIMENT:+GOEXPERIMENT=$GOEXPERIMENT }RUNS=$RUNS SECONDS_PER_TEST=$SECS OBJECTS=$OBJECTS${OCK_TOKEN:+ OCK_TOKEN=$OCK_TOKEN}$tests_env bash scripts/bench-softhsm.sh\`"
	echo "(started $started, ended $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $load_start at the start and $(cut -d" " -f1-3 /proc/loadavg) at the end; medians of $RUNS runs; µs per operation; ratio = theirs / ours in CPU time, >= 1.0: we use no more CPU)"
	echo
	if [ -n "${OCK_TOKEN:-}" ]; then
		echo "| test | ours CPU | SoftHSMv2 CPU | ratio | openCryptoki CPU | ratio | ours wall | SoftHSMv2 wall | openCryptoki wall |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	else
		echo "| test | ours CPU | SoftHSMv2 CPU | ratio | ours wall | SoftHSMv2 wall |"
		echo "|---|---:|---:|---:|---:|---:|"
	fi
	for t in $TESTS; do
		ours=$(median pkcshsm "$t" 4) sh=$(median softhsm "$t" 4)
		line="| $t | $ours | $sh | $(ratio "$ours" "$sh") |"
		walls="$(median pkcshsm "$t" 3) | $(median softhsm "$t" 3) |"
		if [ -n "${OCK_TOKEN:-}" ]; then
			oc=$(median opencryptoki "$t" 4)
			line="$line $oc | $(ratio "$ours" "$oc") |"
			walls="$walls $(median opencryptoki "$t" 3) |"
		fi
		echo "$line $walls"
	done
} | tee "${OUT:-/dev/null}"
