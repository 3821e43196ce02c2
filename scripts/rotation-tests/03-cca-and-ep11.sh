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
set_all "$CCA_APQNS" AES APKA
set_all "$EP11_APQNS" WK

rt_step "administrator: finalize both"
finalize "$cca" "$ep11"
no_ops
rt_stop_apps

rt_step "verify"
sym=$(current SYM)
verify_slot 2 "$sym $aes $apka" rotated
verify_slot 4 "$wk" rotated
verify_data
rt_pass
