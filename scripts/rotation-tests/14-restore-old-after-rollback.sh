#!/usr/bin/env bash
# Runbook: after a finalized change the officer must roll the EP11 adapters
# back to the previous wrapping key (e.g. the new one was compromised or
# lost on a backup HSM). Keys are then unusable under CKA_IBM_OPAQUE until
# the administrator restores every key from CKA_IBM_OPAQUE_OLD with
# pkcshsm keys restore-old.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 0 --ep11-tokens 1
rt_start_daemon
# The officer keeps the key parts of every wrapping key; here two known keys.
k1=$(printf '11%.0s' $(seq 32))
k2=$(printf '22%.0s' $(seq 32))
rt_step "rotation to a first key K1, then to K2"
for k in "$k1" "$k2"; do
	wk=$(load_new "$EP11_APQNS" WK "$k")
	id=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")
	set_all "$EP11_APQNS" WK
	finalize "$id"
	[ "$k" = "$k1" ] && wk1=$wk
done
wk2=$wk
rt_snapshot before

rt_step "officer: out-of-band rollback to K1 on every APQN (no pkcshsm_mk_change)"
wk=$(load_new "$EP11_APQNS" WK "$k1")
[ "$wk" = "$wk1" ] || rt_fail "reloaded K1 has pattern $wk, want $wk1"
# verify knows the keys have no blob under K1 as CKA_IBM_OPAQUE or REENC.
not_ready "DO NOT SET" -a "$EP11_APQNS"
for q in ${EP11_APQNS//,/ }; do set_anyway "$q" WK; done
must_fail 1 1 p11load -slots 4 -duration 1s -check "$RT_ROOT/before.json"

rt_step "administrator: restore every key from CKA_IBM_OPAQUE_OLD"
with_pins 1 pkcshsm keys restore-old --slot 4 --all --yes || rt_fail "restore-old failed: $RT_OUT"
rows=$(rt_keys 4)
while IFS=$'\t' read -r h label p _; do
	[ "${p,,}" = "${wk1,,}" ] || rt_fail "key $h ($label) is under $p after restore-old, want K1 $wk1"
done <<<"$rows"
verify_data
rt_start_apps 1
rt_stop_apps
rt_pass
