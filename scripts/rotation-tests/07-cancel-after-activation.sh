#!/usr/bin/env bash
# Runbook: once one APQN activated the new key, cancel is refused (the old
# key is gone from CURRENT there); the way forward is to activate the rest
# and finalize.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 0 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
wk=$(load_new "$EP11_APQNS" WK)
id=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")

rt_step "officer activates the new key on the first APQN"
set_new "${EP11_APQNS%%,*}" WK

rt_step "administrator: cancel is refused; the operation is unchanged"
must_fail 4 1 pkcshsm_mk_change cancel -i "$id"
[ "$(op_state "$id")" = REENCIPHERED ] || rt_fail "the refused cancel changed the operation: $(pkcshsm_mk_change list)"

rt_step "officer activates the rest; administrator finalizes"
set_new "${EP11_APQNS##*,}" WK
finalize "$id"
no_ops
rt_stop_apps
verify_slot 4 "$wk" rotated
verify_data
rt_pass
