#!/usr/bin/env bash
# Runbook: an application is killed (kill -9) while reencipher runs, and a
# new one starts during the window. The killed process is reported and does
# not block the change; the new one re-enciphers what it creates.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 3
load_aes_wk

rt_step "reencipher starts; application 1 is killed while it runs"
printf '%s\n' "$USER_PIN" | pkcshsm_mk_change reencipher -a "$EP11_APQNS" -e "$wk" >"$RT_ROOT/reenc.out" 2>&1 &
reenc=$!
# Kill once the tool is past the PIN prompt and re-enciphering.
for _ in $(seq 200); do grep -q "Re-enciphering" "$RT_ROOT/reenc.out" && break; sleep 0.05; done
rt_kill_app 1
wait "$reenc" || rt_fail "reencipher failed after an application was killed: $(cat "$RT_ROOT/reenc.out")"
RT_OUT=$(cat "$RT_ROOT/reenc.out")
ep11=$(op_id)
[ -n "$ep11" ] || rt_fail "no operation id: $RT_OUT"
cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")

rt_step "a new application starts during the window"
rt_start_apps 1

rt_step "officer activates; administrator finalizes"
set_all "$CCA_APQNS" AES
set_all "$EP11_APQNS" WK
finalize "$cca" "$ep11"
rt_pass_rotated
