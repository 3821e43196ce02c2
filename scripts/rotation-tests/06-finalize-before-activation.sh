#!/usr/bin/env bash
# Runbook: finalize before the officer activated the new key is refused
# and changes nothing; after the activation it succeeds.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 1
load_aes_wk
reencipher_aes_wk

rt_step "administrator: finalize too early is refused"
must_fail 4 1 pkcshsm_mk_change finalize -i "$cca"
must_fail 4 1 pkcshsm_mk_change finalize -i "$ep11"
[ "$(op_state "$cca")" = REENCIPHERED ] && [ "$(op_state "$ep11")" = REENCIPHERED ] ||
	rt_fail "a refused finalize changed the operations: $(pkcshsm_mk_change list)"

rt_step "officer activates on one APQN only: finalize is still refused"
set_new "${CCA_APQNS%%,*}" AES
must_fail 4 1 pkcshsm_mk_change finalize -i "$cca"

rt_step "officer activates everywhere; finalize succeeds"
set_new "${CCA_APQNS##*,}" AES
set_all "$EP11_APQNS" WK
finalize "$cca" "$ep11"
rt_pass_rotated
