#!/usr/bin/env bash
# Runbook: a CCA (AES, APKA) and an EP11 change in the same window, as two
# operations that run side by side, both finalized.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2

rt_step "officer: new CCA AES and APKA keys, a new EP11 wrapping key"
aes=$(load_new "$CCA_APQNS" AES)
apka=$(load_new "$CCA_APQNS" APKA)
wk=$(load_new "$EP11_APQNS" WK)

rt_step "administrator: one reencipher per adapter type"
cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes" -p "$apka")
ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")
[ "$(pkcshsm_mk_change list --json | jq length)" = 2 ] || rt_fail "want two operations listed"

rt_step "officer: activate everything, APQN by APQN"
for q in ${CCA_APQNS//,/ }; do set_new "$q" AES APKA; done
for q in ${EP11_APQNS//,/ }; do set_new "$q" WK; done

rt_step "administrator: finalize both"
with_pins 1 pkcshsm_mk_change finalize -i "$cca" || rt_fail "finalize $cca failed: $RT_OUT"
with_pins 1 pkcshsm_mk_change finalize -i "$ep11" || rt_fail "finalize $ep11 failed: $RT_OUT"
no_ops
rt_stop_apps

rt_step "verify"
sym=$(current SYM)
verify_slot 2 "$sym $aes $apka" rotated
verify_slot 4 "$wk" rotated
verify_data
rt_pass
