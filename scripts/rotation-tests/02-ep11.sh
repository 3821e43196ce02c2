#!/usr/bin/env bash
# Runbook: change the EP11 wrapping key of a domain group while
# applications keep using the keys (each pins one APQN), then finalize.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 0 --ep11-tokens 2
rt_start_daemon
rt_start_apps 2

rt_step "officer: load a new wrapping key into NEW on every APQN and commit it"
wk=$(load_new "$EP11_APQNS" WK)

rt_step "administrator: reencipher"
id=$(reencipher 2 -a "$EP11_APQNS" -e "$wk")

rt_step "officer: activate the new wrapping key, one APQN at a time"
set_all "$EP11_APQNS" WK

rt_step "administrator: finalize"
with_pins 2 pkcshsm_mk_change finalize -i "$id" || rt_fail "finalize failed: $RT_OUT"
no_ops
rt_stop_apps

rt_step "verify"
for s in $RT_SLOTS; do verify_slot "$s" "$wk" rotated; done
verify_data
rt_pass
