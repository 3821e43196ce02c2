#!/usr/bin/env bash
# Runbook: a second host shares the adapter domains. Host A (this root)
# starts the change; host B (its own PKCSHSM_ROOT, the same simulated
# adapters) never ran anything. B's verify, list and pkcshsm slots must say
# DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS, and verify on A must see
# only A's keys. After B re-enciphers (the command B was told), the set is
# safe for both. A third host C that is never told loses its EP11 keys to
# the activation: its list and slots report them by count.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
A=$RT_ROOT

# host ROOT CMD... runs CMD as on the host whose root is ROOT.
host() {
	local root=$1
	shift
	PKCSHSM_ROOT=$root "$@"
}

# new_host NAME: a root using A's simulated adapters, with one CCA and one
# EP11 token and keys; prints the root.
new_host() {
	local r=$A/host-$1 s t
	mkdir -p "$r/etc/pkcshsm"
	{
		echo "hsm-backend = simulator"
		echo "disable-event-support" # no daemon on B and C in this scenario
		echo "simulator-dir = \"$A/var/lib/pkcshsm/sim\""
		printf 'slot 2 {\n\ttoken-type = cca\n\ttokname = cca1\n\tconfname = ccatok.conf\n}\n'
		printf 'slot 4 {\n\ttoken-type = ep11\n\ttokname = ep11-1\n\tconfname = ep11tok.conf\n}\n'
	} >"$r/etc/pkcshsm/pkcshsm.conf"
	cp "$A/etc/pkcshsm/ccatok.conf" "$A/etc/pkcshsm/ep11tok.conf" "$r/etc/pkcshsm/"
	for s in 2 4; do
		host "$r" sh -c "printf '%s\n%s\n' $SO $SO | pkcshsm token init --slot $s --label $1-$s" >/dev/null 2>&1 ||
			rt_fail "host $1: token init failed"
		host "$r" sh -c "printf '%s\n%s\n%s\n' $SO $USER_PIN $USER_PIN | pkcshsm pin set --slot $s" >/dev/null 2>&1 ||
			rt_fail "host $1: pin set failed"
		for t in aes ec; do
			printf '%s\n' "$USER_PIN" | host "$r" pkcshsm keys generate --slot "$s" --type "$t" --label "$1-$s-$t" >/dev/null 2>&1 ||
				rt_fail "host $1: key generation failed"
		done
	done
	printf '%s\n' "$USER_PIN" | host "$r" p11load -slots 2,4 -duration 1s -save "$r/before.json" >/dev/null 2>&1 ||
		rt_fail "host $1: p11load -save failed"
	echo "$r"
}
rt_step "hosts B and C share A's adapter domains"
B=$(new_host b)
C=$(new_host c)
rt_start_daemon # A's daemon; B and C run no applications

rt_step "officer: new CCA AES and EP11 wrapping keys on the shared domains"
load_aes_wk

rt_step "host A: reencipher; verify is ready on A"
id_cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
id_ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")
run pkcshsm_mk_change verify -a "$CCA_APQNS,$EP11_APQNS"

rt_step "host B never ran anything: verify, list and slots say DO NOT SET"
rc=0
out=$(host "$B" pkcshsm_mk_change verify -a "$CCA_APQNS,$EP11_APQNS" --json 2>/dev/null) || rc=$?
rt_log "host B verify --json (exit $rc): $out"
[ "$rc" = 4 ] || rt_fail "verify on host B exited $rc, want 4: $out"
[ "$(jq -r .ready <<<"$out")" = false ] || rt_fail "verify on host B says ready: $out"
for s in 2 4; do
	m=$(jq -r --argjson s $s '.slots[] | select(.slot == $s) | .missing_new' <<<"$out")
	[ "$m" -ge 2 ] || rt_fail "host B slot $s: missing_new $m, want every key (>= 2): $out"
	jq -e --argjson s $s '.slots[] | select(.slot == $s) | .reasons | any(contains("DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS"))' <<<"$out" >/dev/null ||
		rt_fail "host B slot $s: no DO NOT SET reason: $out"
done
fix=$(jq -r .fix <<<"$out")
grep -q "^pkcshsm_mk_change reencipher -a " <<<"$fix" || rt_fail "host B verify names no reencipher: $fix"
out=$(host "$B" pkcshsm_mk_change list 2>&1) || rt_fail "list on host B failed: $out"
rt_log "host B list: $out"
grep -q "DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS" <<<"$out" || rt_fail "list on host B does not warn: $out"
out=$(host "$B" pkcshsm slots 2>&1) || rt_fail "slots on host B failed: $out"
rt_log "host B slots: $out"
[ "$(grep -c "DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS" <<<"$out")" = 2 ] || rt_fail "slots on host B does not warn for both tokens: $out"
# A's own view is unchanged: its slots say nothing.
out=$(pkcshsm slots 2>&1)
! grep -q "DO NOT SET" <<<"$out" || rt_fail "slots on host A warns: $out"

rt_step "host B runs the command it was told"
# shellcheck disable=SC2086
printf '%s\n%s\n' "$USER_PIN" "$USER_PIN" | host "$B" $fix >"$B/reencipher.out" 2>&1 ||
	rt_fail "'$fix' on host B failed: $(tail -n 3 "$B/reencipher.out")"
rt_log "host B: $fix: $(tail -n 8 "$B/reencipher.out")"

out=$(host "$B" pkcshsm_mk_change verify -a "$CCA_APQNS,$EP11_APQNS" 2>&1) || rt_fail "verify on host B after its reencipher: $out"
# C was never told: still not ready there.
host "$C" pkcshsm_mk_change verify -a "$EP11_APQNS" >/dev/null 2>&1 && rt_fail "verify on host C says ready"

rt_step "officer sets (verify passes on A); host C's EP11 keys are lost, and C says so"
set_all "$CCA_APQNS" AES
set_all "$EP11_APQNS" WK
out=$(host "$C" pkcshsm_mk_change list 2>&1) || rt_fail "list on host C failed: $out"
rt_log "host C list: $out"
n=$(printf '%s\n' "$USER_PIN" | host "$C" pkcshsm keys list --slot 4 --json 2>/dev/null | jq '[.[] | select(.blobs.current != null)] | length')
[ "$n" -ge 2 ] || rt_fail "host C slot 4 lists $n secure keys"
grep -q "SLOT 4 (c-4): $n KEY OBJECTS ARE UNDER A MASTER KEY NO ADAPTER HAS ANY MORE" <<<"$out" ||
	rt_fail "list on host C does not count its $n lost keys: $out"
grep -q "SLOT 2" <<<"$out" && rt_fail "host C's CCA keys (still under the OLD register) are reported lost: $out"
out=$(host "$C" pkcshsm slots 2>&1)
grep -q "slot 4: $n KEY OBJECTS ARE UNDER A MASTER KEY NO ADAPTER HAS ANY MORE" <<<"$out" || rt_fail "slots on host C: $out"

rt_step "finalize on A and on B; both hosts' keys and data are intact"
for id in $id_cca $id_ep11; do with_pins 1 pkcshsm_mk_change finalize -i "$id" || rt_fail "finalize on A: $RT_OUT"; done
for id in $(host "$B" pkcshsm_mk_change list --json 2>/dev/null | jq -r '.[].id'); do
	printf '%s\n%s\n' "$USER_PIN" "$USER_PIN" | host "$B" pkcshsm_mk_change finalize -i "$id" >/dev/null 2>&1 || rt_fail "finalize $id on host B failed"
done
[ -z "$(host "$B" pkcshsm_mk_change list --json 2>/dev/null | jq -r '.[].id')" ] || rt_fail "operations left on host B"
no_ops
verify_slot 2 "$(current SYM) $aes $(current APKA)" rotated
verify_slot 4 "$wk" rotated
verify_data
out=$(printf '%s\n' "$USER_PIN" | host "$B" p11load -slots 2,4 -duration 1s -check "$B/before.json" 2>&1) ||
	rt_fail "host B: data encrypted before the change does not decrypt: $out"
rt_pass
