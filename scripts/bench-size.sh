#!/usr/bin/env bash
# Token size benchmark (docs/bench.md, "Token size"). Not run by CI: the
# 1,000,000-key sweep takes a quarter of an hour and some GB of disk.
#
#   bash scripts/bench-size.sh table            # the issue-11 table: 2 tokens x 50k AES keys
#   SIZES="10000 100000 1000000" bash scripts/bench-size.sh sweep
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
	measure "$name" "$@"
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
		setup 2
		echo "== $n keys ($((n / 2)) AES, $((n / 2)) EC P-256 pairs), $(date -u +%FT%TZ)"
		IN=$USER
		measure "create-$n" sizebench create -slot 2 -tokdir "$root/var/lib/pkcshsm/tokens/tok2" -aes $((n / 2)) -ec $((n / 2)) -batch 5000
		du -sh "$root/var/lib/pkcshsm/tokens/tok2"
		measure "open-find-encrypt-$n" sizebench app -slot 2 -label aes-0000001 -no-agent
		measure "open-find-ec-$n" sizebench app -slot 2 -label "ec-$(printf %07d $((n / 2 - 1)))" -no-agent -find-only
		echo "app (EC key, find only): $(cat "$root/out.open-find-ec-$n")"
		echo "app: $(cat "$root/out.open-find-encrypt-$n")"
		measure "keys-list-$n" pkcshsm keys list --slot 2 --json
		start_daemon
		echo "baseline app: $(baseline_app 2)"
		new_keys
		IN=$USER
		pass_with_app "reencipher-$n" 2 pkcshsm_mk_change reencipher -a "$APQNS" -s "$new_sym" -A "$new_aes" -p "$new_apka"
		op=$(sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p" "$root/out.reencipher-$n")
		set_keys
		pass_with_app "finalize-$n" 2 pkcshsm_mk_change finalize -i "$op"
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
