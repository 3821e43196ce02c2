#!/usr/bin/env bash
# Runbook: two operations on disjoint (APQN, master key type) pairs run side
# by side — CCA AES and CCA APKA on the same APQNs; a third one that shares
# a pair (AES on one of the APQNs) is refused as a conflict (exit 5) and
# leaves nothing behind.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 2 --ep11-tokens 0
rt_start_daemon
rt_start_apps 2
aes=$(load_new "$CCA_APQNS" AES)
apka=$(load_new "$CCA_APQNS" APKA)

rt_step "two disjoint operations"
op1=$(reencipher 2 -a "$CCA_APQNS" -A "$aes")
op2=$(reencipher 2 -a "$CCA_APQNS" -p "$apka")

rt_step "an intersecting operation is refused"
must_fail 5 2 pkcshsm_mk_change reencipher -a "${CCA_APQNS##*,}" -A "$aes"
grep -q "$op1" <<<"$RT_OUT" || rt_fail "the conflict message does not name $op1: $RT_OUT"
[ "$(pkcshsm_mk_change list --json | jq length)" = 2 ] || rt_fail "want exactly two operations: $(pkcshsm_mk_change list)"

rt_step "officer activates both key types; finalize both"
set_all "$CCA_APQNS" AES APKA
with_pins 2 pkcshsm_mk_change finalize -i "$op1" || rt_fail "finalize failed: $RT_OUT"
with_pins 2 pkcshsm_mk_change finalize -i "$op2" || rt_fail "finalize failed: $RT_OUT"
no_ops
rt_stop_apps
for s in $RT_SLOTS; do verify_slot "$s" "$(current SYM) $aes $apka" rotated; done
verify_data
rt_pass
