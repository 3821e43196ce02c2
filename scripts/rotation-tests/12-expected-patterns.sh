#!/usr/bin/env bash
# Runbook: tokens whose configuration pins the master keys (EXPECTED_MKVPS
# for CCA, EXPECTED_WKVP for EP11). After the activation the administrator
# must replace the patterns, as reencipher's closing message says; finalize
# refuses while they are stale and passes once they are replaced.
. "$(dirname "$0")/lib.sh"
rt_setup --cca-tokens 1 --ep11-tokens 1
conf=$RT_ROOT/etc/pkcshsm
rt_step "the token configurations pin the CURRENT patterns"
printf 'EXPECTED_MKVPS {\n\tAES = "%s"\n}\n' "$(current AES)" >>"$conf/ccatok.conf"
printf 'EXPECTED_WKVP "%s"\n' "$(current WK)" >>"$conf/ep11tok.conf"
rt_start_daemon
rt_start_apps 2
load_aes_wk
cca=$(reencipher 1 -a "$CCA_APQNS" -A "$aes")
grep -q "replace the old patterns" "$RT_ROOT/reencipher.out" || rt_fail "reencipher did not say to replace the patterns: $(cat "$RT_ROOT/reencipher.out")"
ep11=$(reencipher 1 -a "$EP11_APQNS" -e "$wk")

rt_step "officer activates"
set_all "$CCA_APQNS" AES
set_all "$EP11_APQNS" WK

rt_step "finalize with the old patterns still configured is refused"
must_fail 4 1 pkcshsm_mk_change finalize -i "$cca"
must_fail 4 1 pkcshsm_mk_change finalize -i "$ep11"
[ "$(op_state "$cca")" = REENCIPHERED ] || rt_fail "a refused finalize changed $cca: $(pkcshsm_mk_change list)"

rt_step "the administrator replaces the patterns; finalize passes"
sed -i "s/AES = \"[0-9a-fA-F]*\"/AES = \"$aes\"/" "$conf/ccatok.conf"
sed -i "s/^EXPECTED_WKVP .*/EXPECTED_WKVP \"$wk\"/" "$conf/ep11tok.conf"
finalize "$cca" "$ep11"
rt_pass_rotated
