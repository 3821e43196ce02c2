#!/usr/bin/env bash
# Runbook: one APQN of each domain group goes offline during the window
# (after reencipher); applications carry on on the others. It comes back
# before the activation, and the change completes.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
aes=$(load_new "$CCA_APQNS" AES)
wk=$(load_new "$EP11_APQNS" WK)
cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")

rt_step "an APQN of each group goes offline; the applications keep working"
run hsmsim offline "${CCA_APQNS##*,}" "${EP11_APQNS##*,}"
with_pins 1 p11load -slots 2,4 -duration 1s || rt_fail "an application fails with one APQN offline: $RT_OUT"

rt_step "the APQNs come back online; the officer activates; finalize"
run hsmsim online "${CCA_APQNS##*,}" "${EP11_APQNS##*,}"
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
