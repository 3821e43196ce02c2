#!/usr/bin/env bash
# Runbook: the machine reboots between reencipher and the activation. The
# daemon and the applications stop and start again; the operation file is
# the truth they pick up again. Then the officer activates, and finalize.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
aes=$(load_new "$CCA_APQNS" AES)
wk=$(load_new "$EP11_APQNS" WK)
cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")

rt_step "reboot: applications and daemon stop"
rt_stop_apps
rt_stop_daemon
[ "$(op_state "$cca")" = REENCIPHERED ] && [ "$(op_state "$ep11")" = REENCIPHERED ] ||
	rt_fail "operations after the stop: $(pkcshsm_mk_change list)"

rt_step "after the reboot: daemon and applications start again"
rt_start_daemon
rt_start_apps 2

rt_step "officer activates; administrator finalizes"
for q in ${CCA_APQNS//,/ }; do set_new "$q" AES; done
for q in ${EP11_APQNS//,/ }; do set_new "$q" WK; done
with_pins 1 pkcshsm_mk_change finalize -i "$cca" || rt_fail "finalize failed: $RT_OUT"
with_pins 1 pkcshsm_mk_change finalize -i "$ep11" || rt_fail "finalize failed: $RT_OUT"
no_ops
rt_stop_apps
verify_slot 2 "$(current SYM) $aes $(current APKA)" rotated
verify_slot 4 "$wk" rotated
verify_data
rt_pass
