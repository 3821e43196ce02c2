#!/usr/bin/env bash
# Runbook: the change is called off before any APQN activated the new key:
# cancel both operations, then the officer clears the NEW registers.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
old_cca="$(current SYM) $(current AES) $(current APKA)"
old_wk=$(current WK)

rt_step "officer loads new keys; administrator re-enciphers"
load_aes_wk
reencipher_aes_wk

rt_step "administrator: cancel"
with_pins 1 pkcshsm_mk_change cancel -i "$cca" || rt_fail "cancel $cca failed: $RT_OUT"
with_pins 1 pkcshsm_mk_change cancel -i "$ep11" || rt_fail "cancel $ep11 failed: $RT_OUT"
no_ops

rt_step "officer: clear the NEW registers"
run hsmsim clear-new --apqns "$CCA_APQNS" --type AES
run hsmsim clear-new --apqns "$EP11_APQNS" --type WK
rt_stop_apps

rt_step "verify: every key under the old master keys, no backup, no REENC"
verify_slot 2 "$old_cca" unchanged
verify_slot 4 "$old_wk" unchanged
verify_data
rt_pass
