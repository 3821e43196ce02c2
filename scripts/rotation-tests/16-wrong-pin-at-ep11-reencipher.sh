#!/usr/bin/env bash
# Runbook slip: the administrator mistypes the USER PIN at the EP11
# reencipher (the CCA one succeeded). The EP11 reencipher fails and
# creates nothing; verify must then refuse the EP11 APQNs (DO NOT SET, the
# keys have no blob under the new wrapping key) and name the reencipher to
# run, while the CCA APQNs are ready. The officer sets nothing on EP11
# until the fix is run; after it, every key and every application is fine.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
load_aes_wk

rt_step "administrator: CCA reencipher; the EP11 one with a mistyped PIN"
id_cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
rt_log "\$ pkcshsm_mk_change reencipher -a $EP11_APQNS -e $wk (a wrong USER PIN on stdin)"
rc=0
RT_OUT=$(printf '%s\n' 11112222 | pkcshsm_mk_change reencipher -a "$EP11_APQNS" -e "$wk" 2>&1) || rc=$?
rt_log "    exit $rc: $(tail -n 2 <<<"$RT_OUT")"
[ "$rc" = 7 ] || rt_fail "reencipher with a wrong PIN exited $rc, want 7 (permission denied): $RT_OUT"
[ -z "$(pkcshsm_mk_change list --json | jq -r --arg id "$id_cca" '.[] | select(.id != $id) | .id')" ] ||
	rt_fail "the failed reencipher left an operation"

rt_step "verify: CCA ready, EP11 not (DO NOT SET), with the command that fixes it"
run pkcshsm_mk_change verify -i "$id_cca"
not_ready "DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS" -a "$EP11_APQNS"
out=$(pkcshsm_mk_change verify -a "$EP11_APQNS" --json 2>/dev/null) && rt_fail "verify --json says ready: $out"
[ "$(jq -r '.slots[] | select(.slot == 4) | .missing_new > 0' <<<"$out")" = true ] || rt_fail "no missing keys counted: $out"
# The running applications' EP11 session keys are counted too (through
# pkcshsmd), and none of the CCA slot's.
[ "$(jq -r '.slots[] | select(.slot == 4) | .session_keys_missing_new > 0' <<<"$out")" = true ] ||
	rt_fail "the applications' session keys are not counted: $out"
[ -z "$(jq -r '.slots[] | select(.slot == 2) | .slot' <<<"$out")" ] || rt_fail "the CCA slot is reported for EP11 APQNs: $out"
fix=$(jq -r .fix <<<"$out")
[ "$fix" = "pkcshsm_mk_change reencipher -a 06.0033,0E.0033 -e ${wk^^}" ] || rt_fail "fix is '$fix'"
# The set helper refuses too: verify is run before every set.
( set_new "${EP11_APQNS%%,*}" WK ) >/dev/null 2>&1 && rt_fail "set_new set WK although verify is not ready"
[ "$(current WK)" != "$wk" ] || rt_fail "the wrapping key was set"

rt_step "the officer sets CCA; the administrator runs the fix; then EP11 is set"
set_all "$CCA_APQNS" AES
# shellcheck disable=SC2086
with_pins 1 $fix || rt_fail "the fix '$fix' failed: $RT_OUT"
id_ep11=$(op_id)
[ -n "$id_ep11" ] || rt_fail "the fix created no operation: $RT_OUT"
set_all "$EP11_APQNS" WK
finalize "$id_cca" "$id_ep11"
rt_pass_rotated
