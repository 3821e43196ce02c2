#!/usr/bin/env bash
# Runbook: the officer changes only the CCA ASYM master key. No pkcshsm
# token key is enciphered under it, so the tool refuses to start an
# operation; the officer may activate it directly, and nothing breaks.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 0
rt_start_daemon
rt_start_apps 1

rt_step "officer: load a new ASYM key"
asym=$(load_new "$CCA_APQNS" ASYM)

rt_step "administrator: reencipher -S is refused: no token is affected"
must_fail 4 1 pkcshsm_mk_change reencipher -a "$CCA_APQNS" -S "$asym"
grep -q "no token is affected" <<<"$RT_OUT" || rt_fail "want 'no token is affected', got: $RT_OUT"
no_ops
no_op_files

rt_step "officer: activate ASYM; the applications keep working"
set_all "$CCA_APQNS" ASYM
with_pins 1 p11load -slots 2 -duration 1s || rt_fail "an application fails after the ASYM change: $RT_OUT"
rt_stop_apps

rt_step "verify: every key exactly as before"
verify_slot 2 "$(current SYM) $(current AES) $(current APKA)" unchanged
verify_data
rt_pass
