#!/usr/bin/env bash
# Token size benchmark (docs/bench.md, "Token size"). Not run by CI: the
# 1,000,000-key sweep takes a quarter of an hour and some GB of disk.
#
#   bash scripts/bench-size.sh table            # the issue-11 table: 2 tokens x 50k AES keys
#   SIZES="10000 100000 1000000" bash scripts/bench-size.sh sweep
#   FILLED=DIR DISTINCT=10000 SIZES=1000000 bash scripts/bench-size.sh sweep
#
# FILLED=DIR keeps each size's filled token, with the simulator and the
# configuration it was made with, in DIR (DIR/root-N.tar) and starts from
# it on the next run instead of creating the keys again;
# DISTINCT=D generates at most D keys of each kind and stores copies of
# them (new labels and unique ids, the same blobs) for the rest, which
# makes a 1M-key token in minutes (a pass's cost per key does not depend
# on whether two keys share a blob). KEYS_LIST=0 skips the slowest step,
# `pkcshsm keys list` over the whole token. PROFILE=DIR writes a CPU
# profile of each pass to DIR/NAME.pprof (PKCSHSM_CPUPROFILE).
#
# For reencipher and finalize the sweep prints a "rate" line: keys/s wall
# clock, keys per CPU-second, the tool's peak RSS, and the ratio of the
# pass's objects per CPU-second to the plain-SQLite limit of the same rows
# (sizebench sqlref: the token's blob table shape, same driver and
# pragmas, the pass's page and transaction sizes) measured in the same run.
#
# Each run builds the binaries (or uses PKCSHSM_BIN=DIR), makes a fresh
# root under $TMPDIR with 2 simulated CCA APQNs, fills the tokens with
# cmd/internal/sizebench (real simulator keys, written in batches), starts
# pkcshsmd and an application, and measures with /usr/bin/time -v: the
# creation, opening the token and finding one key by label, a 1 KiB
# encryption, `pkcshsm keys list --json`, `pkcshsm_mk_change reencipher`
# and `finalize` end to end, and the application's 1 KiB encryption
# latency during each pass against a baseline. Results go to stdout as
# "name seconds peak-RSS-MB" lines and JSON lines. KEEP=1 keeps the root.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-table}
SO=87654321 USER=12345678
APQNS=01.0033,02.0033

root=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-size.XXXXXX")
export PKCSHSM_ROOT=$root
daemon_pid=
cleanup() {
	if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
	if [ "${KEEP:-0}" != 1 ]; then rm -rf "$root"; else echo "root: $root"; fi
}
trap cleanup EXIT

bin=${PKCSHSM_BIN:-$root/bin}
if [ -z "${PKCSHSM_BIN:-}" ]; then
	mkdir -p "$bin"
	(cd "$here" && for c in hsmsim pkcshsm pkcshsmd pkcshsm_mk_change p11load internal/sizebench; do go build -o "$bin/$(basename $c)" "./cmd/$c"; done)
fi
export PATH=$bin:$PATH

# measure NAME CMD...: runs CMD with stdin from $IN, prints "NAME wall-s
# cpu-s peak-RSS-MB" (wall clock, user+system CPU time and maximum
# resident set size from time -v). On a shared machine the CPU time is
# the steadier figure: wall clock includes waiting for a core.
measure() {
	local name=$1
	shift
	/usr/bin/time -v -o "$root/time.$name" "$@" <<<"$IN" >"$root/out.$name" 2>"$root/err.$name" || {
		echo "$name FAILED:" >&2
		cat "$root/err.$name" "$root/out.$name" >&2
		exit 1
	}
	local wall rss cpu
	wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$root/time.$name" | awk -F: '{ if (NF == 3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
	cpu=$(awk -F': ' '/User time|System time/ { s += $2 } END { print s }' "$root/time.$name")
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$root/time.$name")
	printf '%-28s %8.2f s wall %8.2f s cpu %8.1f MB\n' "$name" "$wall" "$cpu" "$(echo "$rss/1024" | bc -l)"
	m_wall=$wall m_cpu=$cpu m_rss=$rss
}

# rate NAME KEYS OBJECTS: the last measured step's rates and its ratio to
# the plain-SQLite limit ($sql_cpu_rate rows per CPU-second).
rate() {
	awk -v n="$1" -v k="$2" -v o="$3" -v w="$m_wall" -v c="$m_cpu" -v r="$m_rss" -v l="${sql_cpu_rate:-0}" 'BEGIN {
		printf "rate %s: %d keys (%d objects): %.0f keys/s wall, %.0f keys/CPU-s, %.0f objects/CPU-s, tool peak RSS %.1f MB", n, k, o, k / w, k / c, o / c, r / 1024
		if (l > 0) printf ", plain-SQLite limit %.0f rows/CPU-s, ratio %.2f", l, (o / c) / l
		printf "\n"
	}'
}

setup() { # slots...
	hsmsim init --cca "$APQNS" >/dev/null
	mkdir -p "$root/etc/pkcshsm"
	{
		echo "hsm-backend = simulator"
		for s in "$@"; do printf 'slot %s {\n\ttoken-type = cca\n\ttokname = tok%s\n\tconfname = ccatok.conf\n}\n' "$s" "$s"; done
	} >"$root/etc/pkcshsm/pkcshsm.conf"
	printf 'version cca-0\nAPQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n' >"$root/etc/pkcshsm/ccatok.conf"
	for s in "$@"; do
		printf '%s\n%s\n' $SO $SO | pkcshsm token init --slot "$s" --label "tok$s" >/dev/null 2>&1
		printf '%s\n%s\n%s\n' $SO $USER $USER | pkcshsm pin set --slot "$s" >/dev/null 2>&1
	done
}

start_daemon() {
	pkcshsmd --log-format text --log-level warn 2>"$root/pkcshsmd.log" &
	daemon_pid=$!
	for _ in $(seq 100); do [ -S "$root/run/pkcshsm/admin.sock" ] && break; sleep 0.1; done
}

loadnew() { hsmsim load-new --apqns "$APQNS" --type "$1" | awk 'NR==1 {print substr($5, 3)}'; }

# Officer steps around reencipher / finalize.
new_keys() { new_sym=$(loadnew SYM) new_aes=$(loadnew AES) new_apka=$(loadnew APKA); }
set_keys() { for t in SYM AES APKA; do hsmsim set --apqns "$APQNS" --type $t >/dev/null; done; }

# pass NAME SLOTS CMD...: runs the command with an application encrypting
# on the first slot's key aes-0000000 the whole time and prints its
# latency report.
pass_with_app() {
	local name=$1 slot=$2
	shift 2
	rm -f "$root/stop" "$root/ready"
	echo $USER | sizebench app -slot "$slot" -label aes-0000000 -duration 1h -ready "$root/ready" -stop "$root/stop" >"$root/app.$name" &
	local app=$!
	for _ in $(seq 600); do [ -e "$root/ready" ] && break; sleep 0.1; done
	sleep 1 # the agent connects and the app warms up before the pass
	if [ -n "${PROFILE:-}" ]; then
		mkdir -p "$PROFILE"
		PKCSHSM_CPUPROFILE=$PROFILE/$name.pprof measure "$name" "$@"
	else
		measure "$name" "$@"
	fi
	touch "$root/stop"
	wait $app
	echo "app during $name: $(cat "$root/app.$name")"
}

baseline_app() { # slot
	echo $USER | sizebench app -slot "$1" -label aes-0000000 -duration 5s
}

case $what in
table)
	setup 2 3
	N=${N:-50000}
	IN=$USER
	measure create-slot2 sizebench create -slot 2 -tokdir "$root/var/lib/pkcshsm/tokens/tok2" -aes "$N"
	measure create-slot3 sizebench create -slot 3 -tokdir "$root/var/lib/pkcshsm/tokens/tok3" -aes "$N"
	du -sh "$root/var/lib/pkcshsm/tokens/tok2"
	measure p11load-1s p11load -slots 2 -duration 1s
	measure keys-list-json pkcshsm keys list --slot 2 --json
	start_daemon
	new_keys
	IN=$(printf '%s\n%s' $USER $USER)
	measure reencipher pkcshsm_mk_change reencipher -a "$APQNS" -s "$new_sym" -A "$new_aes" -p "$new_apka"
	op=$(sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p" "$root/out.reencipher")
	set_keys
	measure finalize pkcshsm_mk_change finalize -i "$op"
	;;
sweep)
	for n in ${SIZES:-10000 100000}; do
		rm -rf "$root/var" "$root/etc" "$root/run"
		echo "== $n keys ($((n / 2)) AES, $((n / 2)) EC P-256 pairs), $(date -u +%FT%TZ)"
		IN=$USER
		tokdir=$root/var/lib/pkcshsm/tokens/tok2
		if [ -n "${FILLED:-}" ] && [ -e "$FILLED/root-$n.tar" ]; then
			# The token with the simulator and the configuration it was
			# made with (its keys are under that simulator's master keys).
			tar -C "$root" -xf "$FILLED/root-$n.tar"
			echo "create-$n: taken from $FILLED/root-$n.tar"
		else
			setup 2
			measure "create-$n" sizebench create -slot 2 -tokdir "$tokdir" -aes $((n / 2)) -ec $((n / 2)) -batch 5000 -distinct "${DISTINCT:-0}"
			if [ -n "${FILLED:-}" ]; then mkdir -p "$FILLED" && tar -C "$root" -cf "$FILLED/root-$n.tar" var etc; fi
		fi
		du -sh "$tokdir"
		objects=$(sqlite3 "$tokdir/token.db" 'SELECT count(*) FROM object WHERE class IN (2, 3, 4)' 2>/dev/null || echo $((n * 3 / 2)))
		echo "load before the passes: $(uptime)"
		measure "open-find-encrypt-$n" sizebench app -slot 2 -label aes-0000001 -no-agent
		measure "open-find-ec-$n" sizebench app -slot 2 -label "ec-$(printf %07d $((n / 2 - 1)))" -no-agent -find-only
		echo "app (EC key, find only): $(cat "$root/out.open-find-ec-$n")"
		echo "app: $(cat "$root/out.open-find-encrypt-$n")"
		start_daemon
		echo "baseline app: $(baseline_app 2)"
		new_keys
		IN=$USER
		# The plain-SQLite limit of the token's rows, in the same run.
		sizebench sqlref -tokdir "$tokdir" -dir "$root/sqlref" >"$root/sqlref.$n"
		echo "plain SQLite ($n): $(cat "$root/sqlref.$n")"
		sql_cpu_rate=$(sed -n 's/.*"rows_per_cpu_s":\([0-9.e+]*\).*/\1/p' "$root/sqlref.$n")
		pass_with_app "reencipher-$n" 2 pkcshsm_mk_change reencipher -a "$APQNS" -s "$new_sym" -A "$new_aes" -p "$new_apka"
		rate "reencipher-$n" "$n" "$objects"
		op=$(sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p" "$root/out.reencipher-$n")
		set_keys
		pass_with_app "finalize-$n" 2 pkcshsm_mk_change finalize -i "$op"
		rate "finalize-$n" "$n" "$objects"
		echo "load after the passes: $(uptime)"
		# Last: the slowest step and the one the other figures do not need.
		IN=$USER
		[ "${KEYS_LIST:-1}" = 0 ] || measure "keys-list-$n" pkcshsm keys list --slot 2 --json
		kill "$daemon_pid"
		wait "$daemon_pid" 2>/dev/null || true
		daemon_pid=
	done
	;;
*)
	echo "usage: bench-size.sh table|sweep" >&2
	exit 2
	;;
esac
