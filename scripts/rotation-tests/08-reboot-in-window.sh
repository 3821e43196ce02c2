#!/usr/bin/env bash
# Runbook: the machine reboots between reencipher and the activation. The
# daemon and the applications stop and start again; the operation file is
# the truth they pick up again. Then the officer activates, and finalize.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
load_aes_wk
reencipher_aes_wk

rt_step "reboot: applications and daemon stop"
rt_stop_apps
rt_stop_daemon
[ "$(op_state "$cca")" = REENCIPHERED ] && [ "$(op_state "$ep11")" = REENCIPHERED ] ||
	rt_fail "operations after the stop: $(pkcshsm_mk_change list)"

rt_step "after the reboot: daemon and applications start again"
rt_start_daemon
rt_start_apps 2

rt_step "officer activates; administrator finalizes"
set_all "$CCA_APQNS" AES
set_all "$EP11_APQNS" WK
finalize "$cca" "$ep11"
rt_pass_rotated
