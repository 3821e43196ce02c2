#!/usr/bin/env bash
# Runbook: a second rotation right after the first. Afterwards every key's
# backup (CKA_IBM_OPAQUE_OLD) is under the FIRST new key, not the original.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
rt_start_daemon
rt_start_apps 2
rotate() {
	load_aes_wk
	reencipher_aes_wk
	set_all "$CCA_APQNS" AES
	set_all "$EP11_APQNS" WK
	finalize "$cca" "$ep11"
	no_ops
}
rt_step "first rotation"
rotate
aes1=$aes wk1=$wk
rt_snapshot before # the second rotation starts from here
rt_step "second rotation"
rotate
[ "$aes" != "$aes1" ] && [ "$wk" != "$wk1" ] || rt_fail "the second rotation loaded the same keys"
rt_stop_apps
verify_slot 2 "$(current SYM) $aes $(current APKA)" rotated
verify_slot 4 "$wk" rotated
# The backups are under the first new keys (verify_slot compared them with
# the snapshot taken after the first rotation; this names the pattern).
backups=0
while IFS=$'\t' read -r h label _ o _; do
	grep -q "^$h"$'\t' "$RT_ROOT/keys.before.4" || continue # made during the second window
	[ "${o,,}" = "${wk1,,}" ] || rt_fail "EP11 key $h ($label): backup under $o, want the first new wrapping key $wk1"
	backups=$((backups + 1))
done < <(rt_keys 4)
[ "$backups" -gt 0 ] || rt_fail "no EP11 key has a backup"
verify_data
rt_pass
