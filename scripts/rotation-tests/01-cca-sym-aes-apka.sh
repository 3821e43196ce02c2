#!/usr/bin/env bash
# Runbook: change the CCA SYM, AES and APKA master keys of a domain group
# while applications keep using the keys, then finalize.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 2 --ep11-tokens 0
rt_start_daemon
rt_start_apps 2

rt_step "officer: note the CURRENT patterns, load new SYM, AES, APKA keys into NEW"
old="$(current SYM) $(current AES) $(current APKA)"
sym=$(load_new "$CCA_APQNS" SYM)
aes=$(load_new "$CCA_APQNS" AES)
apka=$(load_new "$CCA_APQNS" APKA)

rt_step "administrator: dry run, then reencipher (one USER PIN per token)"
with_pins 2 pkcshsm_mk_change reencipher --dry-run -a "$CCA_APQNS" -s "$sym" -A "$aes" -p "$apka" ||
	rt_fail "dry run failed: $RT_OUT"
id=$(reencipher 2 -a "$CCA_APQNS" -s "$sym" -A "$aes" -p "$apka")
[ "$(op_state "$id")" = REENCIPHERED ] || rt_fail "operation $id is $(op_state "$id"), want REENCIPHERED"

rt_step "officer: activate the new keys, one APQN at a time (applications keep running)"
set_all "$CCA_APQNS" SYM AES APKA

rt_step "administrator: finalize"
with_pins 2 pkcshsm_mk_change finalize -i "$id" || rt_fail "finalize failed: $RT_OUT"
no_ops
rt_stop_apps

rt_step "verify: every key under the new keys, its backup under the old ones"
for s in $RT_SLOTS; do verify_slot "$s" "$sym $aes $apka" rotated; done
# The backups are exactly the pre-change patterns, and those were CURRENT.
for s in $RT_SLOTS; do
	while IFS=$'\t' read -r _ _ p _; do grep -qiw -- "$p" <<<"$old" || rt_fail "slot $s: a key before the change was under $p, not CURRENT ($old)"; done <"$RT_ROOT/keys.before.$s"
done
verify_data
rt_pass
