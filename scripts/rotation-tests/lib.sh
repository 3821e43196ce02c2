# shellcheck shell=bash
# Helpers shared by the rotation test scenarios. Each scenario is a runbook
# an operator can read top to bottom: it sources this file, builds a
# simulated machine with rt_setup, plays the officer (hsmsim, standing in
# for the TKE) and the administrator (pkcshsm_mk_change), and ends with
# rt_pass. Any failed check ends it with one FAIL line and exit 1.
#
# Only installed commands are used: hsmsim, pkcshsm, pkcshsm_mk_change,
# pkcshsmd, p11load (the applications) and jq. The runner (run.sh) puts
# them on PATH; PKCSHSM_BIN=DIR does the same for a scenario run alone.

set -euo pipefail

RT_NAME=$(basename "$0" .sh)
RT_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-rt.XXXXXX")
export PKCSHSM_ROOT=$RT_ROOT
if [ -n "${PKCSHSM_BIN:-}" ]; then export PATH=$PKCSHSM_BIN:$PATH; fi

# The PINs every token of a scenario gets. Scripts feed them on standard
# input, never on the command line.
SO=87654321
USER_PIN=12345678
CCA_APQNS=01.0033,02.0033
EP11_APQNS=06.0033,0e.0033
RT_DAEMON=
RT_APPS=
RT_NAPPS=0

rt_log() { printf '  %s\n' "$*" >>"$RT_ROOT/steps.log"; }

# rt_step names the procedure step a scenario plays (kept for the failure
# report, not printed when the scenario passes).
rt_step() { printf '== %s\n' "$*" >>"$RT_ROOT/steps.log"; }

rt_fail() {
	printf 'FAIL %s: %s\n' "$RT_NAME" "$*"
	printf '  root kept at %s; steps:\n' "$RT_ROOT"
	sed 's/^/  /' "$RT_ROOT/steps.log" 2>/dev/null | tail -n 40
	RT_KEEP=1
	exit 1
}

rt_pass() {
	printf 'PASS %s\n' "$RT_NAME"
	exit 0
}

rt_cleanup() {
	local rc=$?
	local p
	for p in $RT_APPS; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $RT_APPS; do wait "$p" 2>/dev/null || true; done
	rt_stop_daemon
	if [ "$rc" -ne 0 ] && [ -z "${RT_KEEP:-}" ]; then
		printf 'FAIL %s: exited %d at an unchecked step\n' "$RT_NAME" "$rc"
		sed 's/^/  /' "$RT_ROOT/steps.log" 2>/dev/null | tail -n 40
		RT_KEEP=1
	fi
	if [ -z "${RT_KEEP:-}" ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$RT_ROOT"; fi
}
trap rt_cleanup EXIT

# run CMD... runs a command, keeping its output in the step log; a failure
# ends the scenario.
run() {
	rt_log "\$ $*"
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	printf '%s\n' "$out" | sed 's/^/    /' >>"$RT_ROOT/steps.log"
	[ "$rc" -eq 0 ] || rt_fail "'$*' exited $rc: $(printf '%s' "$out" | tail -n 3)"
	RT_OUT=$out
}

# with_pins N CMD... feeds N copies of the USER PIN to CMD, one per prompt.
with_pins() {
	local n=$1
	shift
	local pins=
	for _ in $(seq "$n"); do pins+="$USER_PIN"$'\n'; done
	rt_log "\$ $* (USER PIN x$n on stdin)"
	local rc=0
	RT_OUT=$(printf '%s' "$pins" | "$@" 2>&1) || rc=$?
	printf '%s\n' "$RT_OUT" | sed 's/^/    /' >>"$RT_ROOT/steps.log"
	return "$rc"
}

# must_fail WANT_EXIT N CMD...: CMD (fed N USER PINs) must exit WANT_EXIT.
must_fail() {
	local want=$1 n=$2 rc=0
	shift 2
	with_pins "$n" "$@" || rc=$?
	[ "$rc" -eq "$want" ] || rt_fail "'$*' exited $rc, want $want: $(printf '%s' "$RT_OUT" | tail -n 3)"
}

# rt_setup [--cca-tokens N] [--ep11-tokens N]: simulated adapters, the
# token configuration and tokens with one key of every type. Slots 2 and 3
# are CCA tokens on $CCA_APQNS, slots 4 and 5 EP11 tokens on $EP11_APQNS.
RT_SLOTS=
rt_setup() {
	local cca=1 ep11=1
	while [ $# -gt 0 ]; do
		case $1 in
		--cca-tokens) cca=$2; shift 2 ;;
		--ep11-tokens) ep11=$2; shift 2 ;;
		*) rt_fail "rt_setup: unknown option $1" ;;
		esac
	done
	rt_step "the officer's adapters: CCA $CCA_APQNS, EP11 $EP11_APQNS"
	run hsmsim init --cca "$CCA_APQNS" --ep11 "$EP11_APQNS" --seed "$RT_NAME"
	mkdir -p "$RT_ROOT/etc/pkcshsm"
	{
		echo "hsm-backend = simulator"
		local i
		for i in $(seq "$cca"); do
			printf 'slot %d {\n\ttoken-type = cca\n\ttokname = cca%d\n\tconfname = ccatok.conf\n}\n' $((1 + i)) "$i"
		done
		for i in $(seq "$ep11"); do
			printf 'slot %d {\n\ttoken-type = ep11\n\ttokname = ep11-%d\n\tconfname = ep11tok.conf\n}\n' $((3 + i)) "$i"
		done
	} >"$RT_ROOT/etc/pkcshsm/pkcshsm.conf"
	printf 'version cca-0\nAPQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n' >"$RT_ROOT/etc/pkcshsm/ccatok.conf"
	printf 'APQN_ALLOWLIST\n6 0x33\n14 0x33\nEND\n' >"$RT_ROOT/etc/pkcshsm/ep11tok.conf"
	chmod 644 "$RT_ROOT"/etc/pkcshsm/*
	RT_SLOTS=
	for i in $(seq "$cca"); do RT_SLOTS+=" $((1 + i))"; done
	for i in $(seq "$ep11"); do RT_SLOTS+=" $((3 + i))"; done
	rt_step "tokens in slots$RT_SLOTS: init, USER PIN, keys"
	local s t
	for s in $RT_SLOTS; do
		run sh -c "printf '%s\n%s\n' $SO $SO | pkcshsm token init --slot $s --label tok$s"
		run sh -c "printf '%s\n%s\n%s\n' $SO $USER_PIN $USER_PIN | pkcshsm pin set --slot $s"
		if [ "$s" -lt 4 ]; then types="aes des3 hmac ec rsa"; else types="aes ec rsa"; fi
		for t in $types; do with_pins 1 pkcshsm keys generate --slot "$s" --type "$t" --label "s$s-$t" ||
			rt_fail "key generation failed: $RT_OUT"; done
	done
	rt_step "an application encrypts data before the change (checked at the end)"
	with_pins 1 p11load -slots "$(rt_slot_list)" -duration 1s -save "$RT_ROOT/before.json" ||
		rt_fail "p11load -save failed: $RT_OUT"
	rt_snapshot before
}

rt_slot_list() { echo $RT_SLOTS | tr ' ' ','; }

# rt_keys SLOT prints one line per secure key of the slot:
# "handle label current-pattern old-pattern reenc-pattern", where a missing
# blob is "-" and a blob whose pattern cannot be read is "?". Patterns are
# upper-case hex as keys list prints them.
rt_keys() {
	printf '%s\n' "$USER_PIN" | pkcshsm keys list --slot "$1" --hsm-mkvp --json 2>>"$RT_ROOT/stderr.log" |
		jq -r '.[] | select(.mk_type != null) |
			[.handle, .label, .mkvp,
			 (.blobs.old.mkvp // (if .has_old_blob then "?" else "-" end)),
			 (.blobs.reenc.mkvp // (if .has_reenc_blob then "?" else "-" end))] | @tsv'
}

# rt_snapshot NAME keeps every slot's key list, e.g. before the change.
rt_snapshot() {
	local s
	for s in $RT_SLOTS; do rt_keys "$s" >"$RT_ROOT/keys.$1.$s" || rt_fail "keys list of slot $s failed"; done
}

# Officer (TKE) helpers. current TYPE [APQN] prints the CURRENT pattern of
# a master key type, as the TKE (or hsmsim show) shows it.
current() {
	local q=${2:-}
	[ -n "$q" ] || case $1 in WK) q=${EP11_APQNS%%,*} ;; *) q=${CCA_APQNS%%,*} ;; esac
	hsmsim show --json | jq -r --arg q "$q" --arg t "$1" '.[] | select(.apqn == $q) | .registers[$t].current.pattern'
}

# load_new APQNS TYPE [HEXKEY] loads a new master key and prints its
# pattern; EP11 keys are committed at once.
load_new() {
	local out
	if [ -n "${3:-}" ]; then
		out=$(hsmsim load-new --apqns "$1" --type "$2" --key "$3") || rt_fail "load-new $2 on $1 failed: $out"
	else
		out=$(hsmsim load-new --apqns "$1" --type "$2") || rt_fail "load-new $2 on $1 failed: $out"
	fi
	rt_log "officer: load-new $2 on $1: $(head -n 1 <<<"$out")"
	if [ "$2" = WK ]; then hsmsim commit --apqns "$1" >/dev/null || rt_fail "commit on $1 failed"; fi
	awk 'NR==1 {print substr($5, 3)}' <<<"$out"
}

# set_new APQN TYPE... activates the loaded keys on one APQN, each only
# after pkcshsm_mk_change verify said, from the keys, that no key is lost
# by it (the runbook's step before every set).
set_new() {
	local q=$1 t
	shift
	for t in "$@"; do
		run pkcshsm_mk_change verify -a "$q" -t "$t"
		run hsmsim set --apqns "$q" --type "$t"
	done
}

# set_anyway APQN TYPE... activates without asking verify: what an officer
# does out of band (a deliberate rollback, or another host's change).
set_anyway() {
	local q=$1 t
	shift
	for t in "$@"; do run hsmsim set --apqns "$q" --type "$t"; done
}

# not_ready WANT ARGS...: verify ARGS must exit 4 and its output contain
# WANT (a fixed string).
not_ready() {
	local want=$1 rc=0
	shift
	rt_log "\$ pkcshsm_mk_change verify $*"
	RT_OUT=$(pkcshsm_mk_change verify "$@" 2>&1) || rc=$?
	printf '%s\n' "$RT_OUT" | sed 's/^/    /' >>"$RT_ROOT/steps.log"
	[ "$rc" -eq 4 ] || rt_fail "verify $* exited $rc, want 4 (not ready): $(tail -n 3 <<<"$RT_OUT")"
	grep -qF -- "$want" <<<"$RT_OUT" || rt_fail "verify $* does not say '$want': $(tail -n 5 <<<"$RT_OUT")"
}

# Administrator helpers.
rt_start_daemon() {
	rt_step "pkcshsmd starts"
	pkcshsmd --log-format text --log-level warn 2>>"$RT_ROOT/pkcshsmd.log" &
	RT_DAEMON=$!
	local _
	for _ in $(seq 100); do [ -S "$RT_ROOT/run/pkcshsm/admin.sock" ] && return 0; sleep 0.1; done
	rt_fail "pkcshsmd did not start: $(cat "$RT_ROOT/pkcshsmd.log")"
}

rt_stop_daemon() {
	if [ -n "$RT_DAEMON" ]; then
		kill -TERM "$RT_DAEMON" 2>/dev/null || true
		wait "$RT_DAEMON" 2>/dev/null || true
		RT_DAEMON=
	fi
}

# rt_start_apps N starts N applications using every slot until stopped, and
# waits until each is ready and (with the daemon up) connected to pkcshsmd.
rt_start_apps() {
	local n=$1 i _ first=$((RT_NAPPS + 1))
	for i in $(seq "$first" $((RT_NAPPS + n))); do
		printf '%s\n' "$USER_PIN" | p11load -slots "$(rt_slot_list)" -ready "$RT_ROOT/app$i.ready" \
			-report "$RT_ROOT/app$i.json" -log "$RT_ROOT/app$i.log" >"$RT_ROOT/app$i.out" 2>&1 &
		RT_APPS+=" $!"
		eval "RT_APP_$i=$!"
	done
	RT_NAPPS=$((RT_NAPPS + n))
	for i in $(seq "$first" "$RT_NAPPS"); do
		for _ in $(seq 300); do [ -e "$RT_ROOT/app$i.ready" ] && break; sleep 0.1; done
		[ -e "$RT_ROOT/app$i.ready" ] || rt_fail "application $i did not start: $(cat "$RT_ROOT/app$i.out")"
		if [ -n "$RT_DAEMON" ]; then
			for _ in $(seq 100); do grep -q "connected to pkcshsmd" "$RT_ROOT/app$i.log" 2>/dev/null && break; sleep 0.1; done
			grep -q "connected to pkcshsmd" "$RT_ROOT/app$i.log" || rt_fail "application $i did not connect to pkcshsmd"
		fi
	done
	rt_log "applications running:$RT_APPS"
}

# rt_stop_apps stops every application; each must report zero failed
# operations. A killed application (rt_kill_app) is not counted.
rt_stop_apps() {
	rt_step "the applications stop; none may have failed an operation"
	local i p rc
	for i in $(seq "$RT_NAPPS"); do
		p=$(eval "echo \${RT_APP_$i:-}")
		[ -n "$p" ] || continue
		kill -TERM "$p" 2>/dev/null || true
	done
	for i in $(seq "$RT_NAPPS"); do
		p=$(eval "echo \${RT_APP_$i:-}")
		[ -n "$p" ] || continue
		rc=0
		wait "$p" || rc=$?
		[ -s "$RT_ROOT/app$i.json" ] || rt_fail "application $i wrote no report (exit $rc): $(tail -n 5 "$RT_ROOT/app$i.out")"
		local ops failed
		ops=$(jq -r .ops "$RT_ROOT/app$i.json")
		failed=$(jq -r .failed "$RT_ROOT/app$i.json")
		rt_log "application $i: $ops operations, $failed failed"
		[ "$failed" = 0 ] && [ "$rc" = 0 ] || rt_fail "application $i: $failed of $ops operations failed (exit $rc): $(jq -c '[.slots[].errors // [] | .[]][:3]' "$RT_ROOT/app$i.json")"
		[ "$ops" -gt 0 ] || rt_fail "application $i did no operation"
	done
	RT_APPS=
	RT_NAPPS=0
}

# rt_kill_app I kills application I with SIGKILL, as a crash would.
rt_kill_app() {
	local p
	p=$(eval "echo \${RT_APP_$1}")
	kill -KILL "$p"
	wait "$p" 2>/dev/null || true
	eval "RT_APP_$1="
	rt_log "application $1 (pid $p) killed"
}

# op_id extracts the operation id from reencipher's output.
op_id() { sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p" <<<"$RT_OUT"; }

# reencipher N ARGS...: a reencipher that asks N USER PINs; prints the id
# (its output is kept in $RT_ROOT/reencipher.out).
reencipher() {
	local n=$1
	shift
	with_pins "$n" pkcshsm_mk_change reencipher "$@" || rt_fail "reencipher $* failed: $(tail -n 3 <<<"$RT_OUT")"
	printf '%s\n' "$RT_OUT" >"$RT_ROOT/reencipher.out" # RT_OUT stays in this subshell
	local id
	id=$(op_id)
	[ -n "$id" ] || rt_fail "reencipher printed no operation id: $RT_OUT"
	echo "$id"
}

# op_state ID prints the state of an operation ("" when there is none).
op_state() { pkcshsm_mk_change list --json | jq -r --arg id "$1" '.[] | select(.id == $id) | .state'; }

# no_ops fails when any master key change operation is left.
no_ops() {
	local left
	left=$(pkcshsm_mk_change list --json | jq -r '.[].id')
	[ -z "$left" ] || rt_fail "operations left: $left"
}

# verify_slot SLOT CUR MODE checks every secure key of a slot: its
# CKA_IBM_OPAQUE is under one of the patterns CUR (space-separated), no
# REENC blob is left, and every key of the "before" snapshot still exists.
# MODE rotated: a key whose master key changed keeps its pre-change blob in
# CKA_IBM_OPAQUE_OLD (same pattern as before); a key whose master key type
# was not part of the change is exactly as before. MODE unchanged: every
# key is exactly as before (pattern and backup), as after a cancel.
verify_slot() {
	local slot=$1 cur=$2 mode=$3 rows h label p o r bp bo n=0
	rows=$(rt_keys "$slot") || rt_fail "keys list of slot $slot failed"
	[ -n "$rows" ] || rt_fail "slot $slot has no secure keys"
	while IFS=$'\t' read -r h label p o r; do
		n=$((n + 1))
		grep -qiw -- "$p" <<<"$cur" || rt_fail "slot $slot key $h ($label): CKA_IBM_OPAQUE under $p, want one of $cur"
		[ "$r" = - ] || rt_fail "slot $slot key $h ($label): a REENC blob is left ($r)"
		bp=$(awk -F'\t' -v h="$h" '$1 == h {print $3}' "$RT_ROOT/keys.before.$slot")
		bo=$(awk -F'\t' -v h="$h" '$1 == h {print $4}' "$RT_ROOT/keys.before.$slot")
		[ -n "$bp" ] || continue # made during the change
		if [ "$mode" = rotated ] && [ "$p" != "$bp" ]; then
			[ "$o" != - ] || rt_fail "slot $slot key $h ($label): re-enciphered but no CKA_IBM_OPAQUE_OLD"
			[ "$o" = "$bp" ] ||
				rt_fail "slot $slot key $h ($label): CKA_IBM_OPAQUE_OLD under $o, want the pre-change $bp"
		else
			[ "$p" = "$bp" ] || rt_fail "slot $slot key $h ($label): CKA_IBM_OPAQUE moved from $bp to $p"
			[ "$o" = "$bo" ] || rt_fail "slot $slot key $h ($label): CKA_IBM_OPAQUE_OLD is $o, was $bo"
		fi
	done <<<"$rows"
	while IFS=$'\t' read -r h label _; do
		awk -F'\t' -v h="$h" '$1 == h {f=1} END {exit !f}' <<<"$rows" || rt_fail "slot $slot: key $h ($label) is gone"
	done <"$RT_ROOT/keys.before.$slot"
	rt_log "slot $slot: $n secure keys verified ($(grep -c . "$RT_ROOT/keys.before.$slot") from before the change)"
}

# verify_data: the data encrypted before the change decrypts with every key.
verify_data() {
	with_pins 1 p11load -slots "$(rt_slot_list)" -duration 1s -check "$RT_ROOT/before.json" ||
		rt_fail "data encrypted before the change does not decrypt: $(tail -n 3 <<<"$RT_OUT")"
}

# no_op_files: the operations directory holds no operation file and the
# history no entry — what a refused or aborted reencipher must leave.
no_op_files() {
	local d=$RT_ROOT/var/lib/pkcshsm/HSM_MK_CHANGE f
	for f in "$d"/*; do
		[ -e "$f" ] || continue
		case ${f##*/} in
		history.jsonl) [ ! -s "$f" ] || rt_fail "the refused command left a history entry: $(head -c 300 "$f")" ;;
		*) grep -Eq '^[A-Za-z0-9]{6}$' <<<"${f##*/}" && rt_fail "the refused command left operation file ${f##*/}" ;;
		esac
	done
	return 0
}

# The steps most scenarios share, on the usual layout (one CCA token in
# slot 2, one EP11 token in slot 4):

# load_aes_wk: the officer loads a new CCA AES master key and a new EP11
# wrapping key; sets $aes and $wk to their patterns.
load_aes_wk() {
	aes=$(load_new "$CCA_APQNS" AES)
	wk=$(load_new "$EP11_APQNS" WK)
}

# reencipher_aes_wk: the administrator re-enciphers both (one USER PIN
# each); sets $cca and $ep11 to the operation ids.
reencipher_aes_wk() {
	cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
	ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")
}

# set_all APQNS TYPE: the officer activates the new register of TYPE on
# every APQN of the comma-separated list (verify is run before each set).
set_all() { # APQNS TYPE...
	local q apqns=$1
	shift
	for q in ${apqns//,/ }; do set_new "$q" "$@"; done
}

# finalize ID...: the administrator finalizes each operation (one USER PIN).
finalize() {
	local id
	for id; do with_pins 1 pkcshsm_mk_change finalize -i "$id" || rt_fail "finalize $id failed: $RT_OUT"; done
}

# rt_pass_rotated: the end of a scenario that rotated AES and WK: no
# operation left, the applications stop cleanly, every key of slot 2 is
# under the current SYM, the new AES or the current APKA pattern and every
# key of slot 4 under the new wrapping key (each with its pre-change blob
# as backup), and the data encrypted before decrypts.
rt_pass_rotated() {
	no_ops
	rt_stop_apps
	verify_slot 2 "$(current SYM) $aes $(current APKA)" rotated
	verify_slot 4 "$wk" rotated
	verify_data
	rt_pass
}
