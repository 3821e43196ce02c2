#!/usr/bin/env bash
# Runbook: one APQN of each domain group goes offline during the window
# (after reencipher); applications carry on on the others. It comes back
# before the activation, and the change completes.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
load_aes_wk
reencipher_aes_wk

rt_step "an APQN of each group goes offline; the applications keep working"
run hsmsim offline "${CCA_APQNS##*,}" "${EP11_APQNS##*,}"
with_pins 1 p11load -slots 2,4 -duration 1s || rt_fail "an application fails with one APQN offline: $RT_OUT"

rt_step "the APQNs come back online; the officer activates; finalize"
run hsmsim online "${CCA_APQNS##*,}" "${EP11_APQNS##*,}"
set_all "$CCA_APQNS" AES
set_all "$EP11_APQNS" WK
finalize "$cca" "$ep11"
rt_pass_rotated
