#!/usr/bin/env bash
# A fleet rotation with Ansible on this machine (docs/runbook.md, "Many
# hosts"): HOSTS hosts (default 3), each with its own PKCSHSM_ROOT, tokens,
# pkcshsmd and a running application (p11load), all sharing one simulated
# adapter domain (simulator-dir in each host's pkcshsm.conf). The officer
# loads new master keys, then ansible/playbooks/rotate.yml runs over a local
# inventory (connection local, per-host PKCSHSM_ROOT, the USER PIN in
# Ansible Vault) and sets the new keys itself through hsmsim.
#
# Then every key on every host is checked: its current blob under the new
# master key, its CKA_IBM_OPAQUE_OLD blob under the pattern its current
# blob had before, no REENC blob; every application had 0 failed
# operations and still decrypts what it encrypted before; a second run of
# the playbook changes nothing.
#
# FAIL_HOST=NAME (for example host2) first checks that bad input on that
# host stops the play in its pre-checks, naming the host, before anything
# changes (a missing PIN variable, a different change, another operation
# already active on the host); then gives that host a wrong USER PIN: the
# pre-checks' dry run (which logs in, as pkcshsm_mk_change checks PINs,
# databases and keys before it records anything) refuses it, so the play
# stops before any host re-enciphers and every key stays as it was, the
# new master keys loaded but not set. Then an application of that host
# hangs (SIGSTOP) while the fleet re-enciphers: its reencipher fails once
# the step's timeout (pkcshsm_timeout, 15 s here) runs out, and the play
# must cancel every host that re-enciphered and leave every key as it was.
#
# HOSTS=N sets the number of hosts, FORKS Ansible's forks (default HOSTS).
# The time of the playbook is printed ("playbook: N hosts, S s"); see
# docs/bench.md. KEEP=1 keeps the directory; on failure it is always kept.
# PKCSHSM_BIN names prebuilt binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
HOSTS=${HOSTS:-3}
FORKS=${FORKS:-$HOSTS}
FAIL_HOST=${FAIL_HOST:-}
case $HOSTS in '' | *[!0-9]* | 0) echo "error: HOSTS=$HOSTS is not a number of hosts
hint: HOSTS=3, for example" >&2; exit 2 ;; esac
if [ -n "$FAIL_HOST" ] && ! [[ $FAIL_HOST =~ ^host[0-9]+$ && ${FAIL_HOST#host} -ge 1 && ${FAIL_HOST#host} -le $HOSTS ]]; then
	echo "error: FAIL_HOST=$FAIL_HOST is not one of host1..host$HOSTS
hint: FAIL_HOST=host2, for example" >&2
	exit 2
fi
for c in ansible-playbook ansible-vault; do
	command -v $c >/dev/null || { echo "error: $c not found
hint: apt-get install ansible-core" >&2; exit 2; }
done
base=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-fleet.XXXXXX")
bin=$base/bin
sim=$base/sim
DEMO_SIM_DIR=$sim
daemon_pids=() app_pids=() extra_pids=()

# shellcheck source=scripts/lib/demo.sh
. "$(dirname "$0")/lib/demo.sh"
step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nFLEET DEMO FAILED: %s\n(directory kept at %s)\n' "$*" "$base" >&2; exit 1; }
cleanup() {
	rc=$?
	for p in "${extra_pids[@]}" "${app_pids[@]}" "${daemon_pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null || true; done
	for p in "${extra_pids[@]}" "${app_pids[@]}" "${daemon_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ $rc -eq 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$base"; else echo "directory: $base"; fi
}
trap cleanup EXIT

if [ -n "${PKCSHSM_BIN:-}" ]; then
	bin=$PKCSHSM_BIN
else
	step "building the binaries"
	mkdir -p "$bin"
	(cd "$here" && for c in hsmsim pkcshsm pkcshsmd pkcshsm_mk_change p11load; do go build -o "$bin/$c" "./cmd/$c"; done)
fi
export PATH=$bin:$PATH

SO=87654321 USER=12345678
CCA_APQNS=01.0033,02.0033 EP11_APQNS=06.0033,0e.0033
hosts=()
for i in $(seq "$HOSTS"); do hosts+=("host$i"); done

step "one simulated adapter domain for all $HOSTS hosts: CCA $CCA_APQNS, EP11 $EP11_APQNS"
hsmsim --dir "$sim" init --cca "$CCA_APQNS" --ep11 "$EP11_APQNS"

# keyrows HOST SLOT: one line per secure key, "handle current old reenc"
# (scripts/lib/demo.sh).
keyrows() { PKCSHSM_ROOT=$base/$1 demo_keyrows "$2" quiet; }

# mkhost NAME: its root, configuration, a CCA token (slot 2) and an EP11
# token (slot 4) with keys, data encrypted before the change.
mkhost() {
	local h=$1 root=$base/$1 slot t
	export PKCSHSM_ROOT=$root
	demo_conf simulator 2:cca:cca 4:ep11:ep11
	demo_token 2 cca
	demo_token 4 ep11
	for t in aes des3 ec; do printf '%s\n' $USER | pkcshsm keys generate --slot 2 --type $t --label "$h-cca-$t"; done
	for t in aes ec; do printf '%s\n' $USER | pkcshsm keys generate --slot 4 --type $t --label "$h-ep11-$t"; done
	echo $USER | p11load -slots 2,4 -duration 1s -save "$root/before.json"
	for slot in 2 4; do keyrows "$h" $slot >"$root/keys$slot.before"; done
	[ -s "$root/keys2.before" ] && [ -s "$root/keys4.before" ]
}

step "$HOSTS hosts: root, tokens, keys"
for h in "${hosts[@]}"; do
	mkhost "$h" >"$base/$h.setup" 2>&1 &
done
for h in "${hosts[@]}"; do wait -n || true; done
for h in "${hosts[@]}"; do
	[ -s "$base/$h/keys4.before" ] || fail "$h: setup failed: $(cat "$base/$h.setup")"
done
echo "hosts ready: ${hosts[*]}"

step "a pkcshsmd and an application on every host"
for h in "${hosts[@]}"; do
	PKCSHSM_ROOT=$base/$h pkcshsmd --log-format text --log-level warn 2>"$base/$h/pkcshsmd.log" &
	daemon_pids+=($!)
done
for h in "${hosts[@]}"; do
	for _ in $(seq 200); do [ -S "$base/$h/run/pkcshsm/admin.sock" ] && break; sleep 0.1; done
	[ -S "$base/$h/run/pkcshsm/admin.sock" ] || fail "$h: pkcshsmd did not start: $(cat "$base/$h/pkcshsmd.log")"
	echo $USER | PKCSHSM_ROOT=$base/$h p11load -slots 2,4 -ready "$base/$h/app.ready" -report "$base/$h/app.json" \
		-log "$base/$h/app.log" >"$base/$h/app.out" 2>&1 &
	app_pids+=($!)
done
for h in "${hosts[@]}"; do
	for _ in $(seq 600); do grep -q "connected to pkcshsmd" "$base/$h/app.log" 2>/dev/null && break; sleep 0.1; done
	grep -q "connected to pkcshsmd" "$base/$h/app.log" || fail "$h: the application did not connect to pkcshsmd: $(cat "$base/$h/app.out")"
done

step "officer: load new master keys (CCA SYM, AES, APKA; EP11 WK, committed)"
demo_old_keys || fail "could not read the current patterns"
demo_new_keys "$CCA_APQNS" "$EP11_APQNS" || fail "could not read the new patterns"

step "inventory: $HOSTS local hosts, the USER PIN in Ansible Vault${FAIL_HOST:+ ($FAIL_HOST gets a wrong one)}"
mkdir -p "$base/collections/ansible_collections/pkcshsm"
ln -s "$here/ansible" "$base/collections/ansible_collections/pkcshsm/hsm"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/vault-pass"
chmod 600 "$base/vault-pass"
vault() { printf '%s' "$2" | ansible-vault encrypt_string --vault-password-file "$base/vault-pass" --stdin-name "$1" 2>/dev/null | sed 's/^/      /'; echo; }
# inventory FILE [nopin|otherchange|good]: the fleet's inventory; FAIL_HOST
# gets a wrong PIN, or (bad inventories) no PIN, or another change, or
# (good) the right PIN.
inventory() {
	local h
	{
		echo "pkcshsm:"
		echo "  vars:"
		echo "    pkcshsm_bin_dir: $bin"
		echo "    pkcshsm_officer: simulator"
		echo "    pkcshsm_sim_dir: $sim"
		echo "    ansible_connection: local"
		echo "    ansible_python_interpreter: /usr/bin/python3"
		echo "    pkcshsm_change:"
		echo "      apqns: [\"${CCA_APQNS//,/\", \"}\", \"${EP11_APQNS//,/\", \"}\"]"
		echo "      cca_sym_mkvp: \"$new_sym\""
		echo "      cca_aes_mkvp: \"$new_aes\""
		echo "      cca_apka_mkvp: \"$new_apka\""
		echo "      ep11_wkvp: \"$new_wk\""
		echo "  hosts:"
		for h in "${hosts[@]}"; do
			echo "    $h:"
			echo "      pkcshsm_root: $base/$h"
			if [ "$h" != "$FAIL_HOST" ]; then
				vault pkcshsm_user_pin $USER
				continue
			fi
			case ${2:-} in
			nopin) ;;
			otherchange)
				vault pkcshsm_user_pin $USER
				echo "      pkcshsm_change: {apqns: [\"${CCA_APQNS//,/\", \"}\"], cca_aes_mkvp: \"$new_aes\"}"
				;;
			good) vault pkcshsm_user_pin $USER ;;
			*) vault pkcshsm_user_pin 99999999 ;;
			esac
		done
	} >"$1"
	grep -q '!vault' "$1" || fail "ansible-vault encrypt_string failed"
	if grep -q "$USER" "$1"; then fail "a PIN is in the inventory in clear"; fi
}
inventory "$base/inventory.yml"

# playbook INVENTORY [ARGS...]
playbook() {
	local inv=$1
	shift
	ANSIBLE_COLLECTIONS_PATH=$base/collections ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_NOCOLOR=1 \
		ANSIBLE_RETRY_FILES_ENABLED=false ANSIBLE_PIPELINING=true ANSIBLE_FORKS=$FORKS ANSIBLE_HOST_KEY_CHECKING=false \
		ansible-playbook -i "$inv" --vault-password-file "$base/vault-pass" \
		"$here/ansible/playbooks/rotate.yml" "$@"
}

# refused NAME INVENTORY TEXT: the play must stop in its pre-checks, on
# every host, saying TEXT, with no operation started anywhere.
refused() {
	local rc h
	set +e
	playbook "$2" >"$base/$1.out" 2>&1
	rc=$?
	set -e
	[ $rc != 0 ] || fail "$1: the playbook succeeded"
	grep -qF "$3" "$base/$1.out" || { cat "$base/$1.out"; fail "$1: the play did not say \"$3\""; }
	if grep -q "Traceback" "$base/$1.out"; then fail "$1: a Python traceback"; fi
	if grep -q "PLAY \[Rotate" "$base/$1.out"; then fail "$1: the play went past the pre-checks"; fi
	echo "$1: refused in the pre-checks: $(grep -oF "$3" "$base/$1.out" | head -1)..."
}

if [ -n "$FAIL_HOST" ]; then
	step "bad input on $FAIL_HOST is refused before anything changes"
	inventory "$base/nopin.yml" nopin
	refused "missing PIN" "$base/nopin.yml" "host $FAIL_HOST: neither pkcshsm_user_pin nor pkcshsm_user_pins is set. Fix: add it to host_vars/$FAIL_HOST.yml"
	inventory "$base/otherchange.yml" otherchange
	refused "other change" "$base/otherchange.yml" "host $FAIL_HOST: pkcshsm_change is 01.0033,02.0033 AES="
	out=$(printf '%s\n' $USER | PKCSHSM_ROOT=$base/$FAIL_HOST pkcshsm_mk_change reencipher -a "$CCA_APQNS" -A "$new_aes")
	other=$(sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p" <<<"$out")
	[ -n "$other" ] || fail "no operation id: $out"
	refused "another operation" "$base/inventory.yml" "host $FAIL_HOST is already in master key change operation $other"
	printf '%s\n' $USER | PKCSHSM_ROOT=$base/$FAIL_HOST pkcshsm_mk_change cancel -i "$other" >/dev/null
	for h in "${hosts[@]}"; do
		[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || fail "$h: an operation after the refused runs"
	done
fi

step "ansible-playbook rotate.yml over $HOSTS hosts (forks $FORKS)"
t0=$(date +%s.%N)
set +e
playbook "$base/inventory.yml" >"$base/play1.out" 2>&1
rc=$?
set -e
t1=$(date +%s.%N)
cat "$base/play1.out"
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "playbook: $HOSTS hosts, $secs s (exit $rc)"
if grep -q "$USER\|99999999" "$base/play1.out"; then fail "a PIN appears in the playbook output"; fi
if grep -q "Traceback" "$base/play1.out"; then fail "a Python traceback in the playbook output"; fi

stop_apps() {
	step "the applications stop; each must have had zero failed operations"
	for i in "${!app_pids[@]}"; do kill -TERM "${app_pids[$i]}"; done
	for i in "${!app_pids[@]}"; do
		h=${hosts[$i]}
		if ! wait "${app_pids[$i]}"; then fail "$h: the application failed: $(cat "$base/$h/app.out")"; fi
		grep -Eq ', 0 failed$' "$base/$h/app.out" || fail "$h: the application reports failed operations: $(cat "$base/$h/app.out")"
	done
	app_pids=()
	echo "every application: 0 failed operations"
}

# check_keys HOST SLOT MODE PATTERNS...: every key from before has, after
# a finalize, its current blob under one of PATTERNS and its OLD blob
# under the pattern its current blob had before; after a cancel, exactly
# the blobs it had before. Every key of the slot (also those the
# application made during the change) is under one of PATTERNS; no REENC
# blob is left.
check_keys() {
	local h=$1 slot=$2 mode=$3 rows k p o r want n=0 under=0 total
	shift 3
	rows=$(keyrows "$h" "$slot")
	total=$(grep -c . <<<"$rows" || true)
	while read -r k p o r; do
		if [ "$mode" = finalize ]; then want="$k [0-9A-F]* $p -"; else want="$k $p $o -"; fi
		grep -qx "$want" <<<"$rows" || fail "$h slot $slot key $k: before \"$k $p $o $r\", now \"$(grep "^$k " <<<"$rows" || echo missing)\", want \"$want\""
		n=$((n + 1))
	done <"$base/$h/keys$slot.before"
	for p in "$@"; do under=$((under + $(awk -v p="$p" 'toupper($2) == toupper(p)' <<<"$rows" | grep -c . || true))); done
	[ "$under" = "$total" ] || fail "$h slot $slot: $under of $total keys under the expected master keys ($*)"
	if awk '$4 != "-"' <<<"$rows" | grep -q .; then fail "$h slot $slot: REENC blobs left"; fi
	echo "$h slot $slot: $total keys under the expected master keys, no REENC; the $n keys from before: $([ "$mode" = finalize ] && echo "OLD blob = the pre-change blob's pattern" || echo "blobs unchanged")"
}

if [ -z "$FAIL_HOST" ]; then
	[ $rc = 0 ] || fail "the playbook failed (exit $rc)"
	stop_apps
	step "every key on every host under the new master keys"
	for h in "${hosts[@]}"; do
		[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || fail "$h: an operation is still active"
		check_keys "$h" 2 finalize "$new_sym" "$new_aes" "$new_apka"
		check_keys "$h" 4 finalize "$new_wk"
		echo $USER | PKCSHSM_ROOT=$base/$h p11load -slots 2,4 -duration 1s -check "$base/$h/before.json" >"$base/$h/check.out" 2>&1 ||
			fail "$h: data encrypted before the change does not decrypt: $(cat "$base/$h/check.out")"
	done
	[ "$(demo_current AES)" = "$new_aes" ] || fail "the adapters' CURRENT AES master key is $(demo_current AES), want $new_aes"

	step "a second run on the finished fleet changes nothing"
	set +e
	playbook "$base/inventory.yml" >"$base/play2.out" 2>&1
	rc2=$?
	set -e
	[ $rc2 = 0 ] || { cat "$base/play2.out"; fail "the second run failed (exit $rc2)"; }
	sed -n '/PLAY RECAP/,$p' "$base/play2.out"
	for h in "${hosts[@]}"; do
		grep -Eq "^$h +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0" "$base/play2.out" || fail "$h: the second run changed or failed something"
	done
	for h in "${hosts[@]}"; do check_keys "$h" 2 finalize "$new_sym" "$new_aes" "$new_apka" >/dev/null; done
	printf '\nFLEET DEMO PASSED: %s hosts rotated in %s s, every key verified, 0 failed operations, a rerun changed nothing.\n' "$HOSTS" "$secs"
else
	[ $rc != 0 ] || fail "the playbook succeeded although $FAIL_HOST had a wrong PIN"
	# The pre-checks run reencipher --dry-run on every host with the USER
	# PINs (pkcshsm_mk_change checks PINs, databases and keys before it
	# records anything), so a wrong PIN stops the play there: no host
	# re-enciphered, nothing is left to cancel.
	step "$FAIL_HOST failed in the pre-checks: the play named it, no host started, no key changed"
	grep -q "failed to log in to slot 2: USER PIN: PIN incorrect" "$base/play1.out" &&
		grep -Eq "^$FAIL_HOST +: .*failed=[1-9]" "$base/play1.out" || fail "the play did not name $FAIL_HOST and its wrong PIN"
	if grep -q "TASK \[Re-encipher" "$base/play1.out"; then fail "the play re-enciphered although a pre-check failed"; fi
	[ "$(demo_current AES)" = "$old_aes" ] && [ "$(demo_current WK | cut -c1-32)" = "$old_wk" ] || fail "the new master keys were set although a host failed"
	for h in "${hosts[@]}"; do
		[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || fail "$h: an operation is active after the failed pre-check"
		hist=$base/$h/var/lib/pkcshsm/HSM_MK_CHANGE/history.jsonl
		if [ "$h" = "$FAIL_HOST" ]; then
			# The only entry is the operation canceled in the bad-input step.
			[ "$(grep -c . "$hist")" = 1 ] || fail "$h: the refused run left history: $(cat "$hist")"
		else
			[ ! -s "$hist" ] || fail "$h: an operation was started: $(cat "$hist")"
		fi
		check_keys "$h" 2 cancel "$old_sym" "$old_aes" "$old_apka"
		check_keys "$h" 4 cancel "$old_wk"
	done

	step "an application of $FAIL_HOST hangs in reencipher: the play cancels every host that re-enciphered"
	inventory "$base/hang.yml" good
	sed -i 's/^  vars:$/  vars:\n    pkcshsm_timeout: 15s/' "$base/hang.yml"
	# The hung application only uses its keys (-new-keys=false): one
	# stopped inside its own write transaction would hold the token's
	# write lock, and no pass on that token (the cancel's included) could
	# complete before it resumed (docs/runbook.md, "Many hosts").
	hd=$base/$FAIL_HOST
	echo $USER | PKCSHSM_ROOT=$hd p11load -slots 2,4 -new-keys=false -ready "$hd/hung.ready" -report "$hd/hung.json" \
		-log "$hd/hung.log" >"$hd/hung.out" 2>&1 &
	hung=$!
	extra_pids+=($hung)
	for _ in $(seq 600); do grep -q "connected to pkcshsmd" "$hd/hung.log" 2>/dev/null && break; sleep 0.1; done
	grep -q "connected to pkcshsmd" "$hd/hung.log" || fail "$FAIL_HOST: the second application did not connect: $(cat "$hd/hung.out")"
	kill -STOP "$hung"
	set +e
	playbook "$base/hang.yml" >"$base/play3.out" 2>&1
	rc=$?
	set -e
	kill -CONT "$hung"
	[ $rc != 0 ] || { cat "$base/play3.out"; fail "the playbook succeeded although an application of $FAIL_HOST did not answer"; }
	grep -q "$FAIL_HOST (reencipher: " "$base/play3.out" || { cat "$base/play3.out"; fail "the play did not name $FAIL_HOST's failed reencipher"; }
	grep -q "TASK \[Cancel the change" "$base/play3.out" || { cat "$base/play3.out"; fail "the play did not cancel"; }
	[ "$(demo_current AES)" = "$old_aes" ] && [ "$(demo_current WK | cut -c1-32)" = "$old_wk" ] || fail "the new master keys were set although a host failed"
	for h in "${hosts[@]}"; do
		[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || {
			cat "$base/play3.out"
			PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list
			fail "$h: an operation is still active after the cancel"
		}
		if [ "$h" != "$FAIL_HOST" ]; then
			hist=$base/$h/var/lib/pkcshsm/HSM_MK_CHANGE/history.jsonl
			grep -q '"outcome":"canceled"' "$hist" || fail "$h: not canceled (history: $(cat "$hist" 2>/dev/null))"
		fi
		check_keys "$h" 2 cancel "$old_sym" "$old_aes" "$old_apka"
		check_keys "$h" 4 cancel "$old_wk"
	done
	kill -TERM "$hung"
	wait "$hung" || fail "$FAIL_HOST: the application that hung failed after it resumed: $(cat "$hd/hung.out")"
	grep -Eq ', 0 failed$' "$hd/hung.out" || fail "$FAIL_HOST: the application that hung reports failed operations: $(cat "$hd/hung.out")"
	extra_pids=()
	echo "the play named $FAIL_HOST, canceled every host that re-enciphered, set no key; the hung application resumed with 0 failed operations"

	step "after the activation the play never cancels: $FAIL_HOST's pkcshsmd is down at finalize"
	inventory "$base/good.yml" good
	playbook "$base/good.yml" --tags prepare >"$base/prepare.out" 2>&1 || { cat "$base/prepare.out"; fail "--tags prepare failed"; }
	if grep -q "TASK \[Finalize\|TASK \[Officer" "$base/prepare.out"; then fail "--tags prepare ran the officer step or finalize"; fi
	for h in "${hosts[@]}"; do
		PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list | grep -q "Key objects have been re-enciphered" || fail "$h: not re-enciphered after --tags prepare"
	done
	echo "every host re-enciphered; the officer sets the new master keys"
	for t in SYM AES APKA; do hsmsim --dir "$sim" set --apqns "$CCA_APQNS" --type $t >/dev/null; done
	hsmsim --dir "$sim" set --apqns "$EP11_APQNS" --type WK >/dev/null
	i=$((${FAIL_HOST#host} - 1))
	kill -TERM "${daemon_pids[$i]}"
	wait "${daemon_pids[$i]}" 2>/dev/null || true
	set +e
	playbook "$base/good.yml" --tags finalize >"$base/finalize.out" 2>&1
	rc=$?
	set -e
	[ $rc != 0 ] || { cat "$base/finalize.out"; fail "finalize succeeded with $FAIL_HOST's daemon down"; }
	grep -q "These hosts still need finalize (never cancel now): $FAIL_HOST (" "$base/finalize.out" || { cat "$base/finalize.out"; fail "the play did not name $FAIL_HOST as needing finalize"; }
	if grep -q "TASK \[Cancel" "$base/finalize.out"; then fail "the play canceled after the activation"; fi
	for h in "${hosts[@]}"; do
		if [ "$h" = "$FAIL_HOST" ]; then
			PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list | grep -q "Key objects have been re-enciphered" || fail "$h: its operation is not left for finalize"
		else
			[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || fail "$h: not finalized"
		fi
	done
	echo "the play finalized every other host, named $FAIL_HOST, canceled nothing"
	PKCSHSM_ROOT=$base/$FAIL_HOST pkcshsmd --log-format text --log-level warn 2>>"$base/$FAIL_HOST/pkcshsmd.log" &
	daemon_pids[$i]=$!
	for _ in $(seq 200); do [ -S "$base/$FAIL_HOST/run/pkcshsm/admin.sock" ] && break; sleep 0.1; done
	step "a rerun of the whole play finalizes $FAIL_HOST and changes nothing else"
	playbook "$base/good.yml" >"$base/rerun.out" 2>&1 || { cat "$base/rerun.out"; fail "the rerun failed"; }
	sed -n '/PLAY RECAP/,$p' "$base/rerun.out"
	for h in "${hosts[@]}"; do
		if [ "$h" = "$FAIL_HOST" ]; then want="changed=1 "; else want="changed=0 "; fi
		grep -Eq "^$h +: ok=[0-9]+ +$want +unreachable=0 +failed=0" "$base/rerun.out" || fail "$h: the rerun did not change exactly what was left"
		[ "$(PKCSHSM_ROOT=$base/$h pkcshsm_mk_change list --json | jq length)" = 0 ] || fail "$h: an operation is still active"
		check_keys "$h" 2 finalize "$new_sym" "$new_aes" "$new_apka"
		check_keys "$h" 4 finalize "$new_wk"
	done
	stop_apps
	printf '\nFLEET DEMO PASSED (FAIL_HOST=%s): bad input refused in the pre-checks; a wrong PIN stopped the play before the activation, every other host was canceled, no key changed; after the activation nothing was canceled, %s was named for finalize and a rerun completed it.\n' "$FAIL_HOST" "$FAIL_HOST"
fi
