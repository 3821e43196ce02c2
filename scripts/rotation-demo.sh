#!/usr/bin/env bash
# A complete HSM master key rotation on the embedded simulator, in a fresh
# temporary root, as an unprivileged user or root:
#
#   simulated adapters (2 CCA, 2 EP11 APQNs) -> a CCA and an EP11 token with
#   keys -> pkcshsmd -> the officer loads new master keys -> reencipher ->
#   the officer activates them APQN by APQN -> finalize -> every key is
#   verified under the new master keys, with its previous blob kept, and data
#   encrypted before the rotation still decrypts.
#
# BACKEND=host runs the same rotation with `hsm-backend = host`: every
# process loads IBM's CCA and EP11 host libraries — here the test doubles
# that `make host-doubles` builds (hsm/hostdouble), which forward each call
# to the simulator — so the C ABI the real libraries document is what the
# tokens, the tool and the applications go through. BACKEND=simulator (the
# default) uses the simulator directly.
#
# MODE=cancel cancels the change instead of activating and finalizing it;
# the keys must then be exactly as before. APPS sets the number of
# applications (default 3). Exits 0 only when everything verified. KEEP=1
# keeps the root directory; on failure it is always kept and its path
# printed.
#
# CLIENT chooses the applications (a comma-separated list, default go):
#   go      APPS p11load processes (the token library linked into Go)
#   c       testdata/clients/p11stress.c, several threads, loading
#           libpkcshsm.so with dlopen like any C application
#   python  testdata/clients/p11stress.py through PyKCS11
#   tools   testdata/clients/toolloop.sh: pkcs11-tool and the OpenSSL pkcs11
#           engine in a loop, one process per command
#   all     all of the above at once
# With anything but go alone, the demo holds each phase for LOAD seconds
# (default 2) of load, records when each phase starts, and prints each
# client's operations, failures and p99 latency per phase (baseline, the
# reencipher and finalize/cancel passes, the officer's activations).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
root=$(mktemp -d "${TMPDIR:-/tmp}/pkcshsm-demo.XXXXXX")
export PKCSHSM_ROOT=$root
bin=$root/bin
daemon_pid=
app_pids=
APPS=${APPS:-3}
MODE=${MODE:-finalize}
case $MODE in finalize | cancel) ;; *) echo "MODE must be finalize or cancel" >&2; exit 2 ;; esac
BACKEND=${BACKEND:-simulator}
case $BACKEND in simulator | host) ;; *) echo "error: BACKEND=$BACKEND is not a backend
hint: use BACKEND=simulator or BACKEND=host" >&2; exit 2 ;; esac
CLIENT=${CLIENT:-go}
[ "$CLIENT" = all ] && CLIENT=go,c,python,tools
for c in ${CLIENT//,/ }; do
	case $c in go | c | python | tools) ;; *) echo "error: CLIENT=$CLIENT: unknown client $c
hint: CLIENT is a comma-separated list of go, c, python, tools, or all" >&2; exit 2 ;; esac
done
LOAD=${LOAD:-2}
uses() { case ",$CLIENT," in *",$1,"*) return 0 ;; esac; return 1; }
outside() { [ "$CLIENT" != go ]; } # applications that load libpkcshsm.so
outside_pids= c_pid= python_pid= tools_pid=

# shellcheck source=scripts/lib/demo.sh
. "$(dirname "$0")/lib/demo.sh"
step() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nDEMO FAILED: %s\n(root kept at %s)\n' "$*" "$root" >&2; exit 1; }
cleanup() {
	rc=$?
	for p in $app_pids $outside_pids; do kill "$p" 2>/dev/null || true; done
	[ -n "${root:-}" ] && touch "$root/stop"
	if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
	if [ $rc -eq 0 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$root"; else echo "root: $root"; fi
}
trap cleanup EXIT

if [ -n "${PKCSHSM_BIN:-}" ]; then
	bin=$PKCSHSM_BIN # prebuilt binaries, e.g. for a run as another user
else
	step "building the binaries"
	mkdir -p "$bin"
	(cd "$here" && for c in hsmsim pkcshsm pkcshsmd pkcshsm_mk_change p11load; do go build -o "$bin/$c" "./cmd/$c"; done)
	if outside; then
		(cd "$here" && go build -buildmode=c-shared -o "$bin/libpkcshsm.so" ./cmd/libpkcshsm)
	fi
fi
export PATH=$bin:$PATH
if [ "$BACKEND" = host ]; then
	step "host-library doubles (make host-doubles)"
	doubles=$root/host-doubles
	(cd "$here" && make -s host-doubles HOST_DOUBLES="$doubles")
	for l in libcsulcca.so libep11.so; do
		[ -e "$doubles/$l" ] || fail "make host-doubles did not build $l"
	done
	# hsm/hostdouble/c/hostdouble.h: the doubles start `hsmsim host-double`
	# over the simulator; the host backend reads the simulator's sysfs view.
	export PKCSHSM_CCA_LIBRARY=$doubles/libcsulcca.so PKCSHSM_EP11_LIBRARY=$doubles/libep11.so
	export PKCSHSM_HOSTDOUBLE_HSMSIM=$bin/hsmsim PKCSHSM_SIM_DIR=$root/var/lib/pkcshsm/sim
	export PKCSHSM_SYSFS_ROOT=$root/var/lib/pkcshsm/sim/sys
fi
module=$bin/libpkcshsm.so
if outside; then
	[ -e "$module" ] || { echo "error: $module is missing; hint: build it with go build -buildmode=c-shared -o $module ./cmd/libpkcshsm" >&2; exit 2; }
	# The module's diagnostics (JSON lines with the pid of each process).
	export PKCSHSM_LOG=$root/module.log
fi
if uses c; then
	[ -x "$bin/p11stress" ] || "${CC:-gcc}" -O2 -pthread -I/usr/include/p11-kit-1 -o "$bin/p11stress" "$here/testdata/clients/p11stress.c" -ldl
fi
# phase NAME: the clients attribute each operation to the last phase
# started before it. hold keeps the load going for LOAD seconds, and then
# until every outside client has done a few more operations (their progress
# files say how many so far): on a busy machine one pkcs11-tool command can
# take longer than LOAD, and every held phase must have operations to
# measure.
phase() { echo "$1 $(date +%s%N)" >>"$root/phases"; }
counts() {
	local c n
	for c in c python tools; do
		uses $c || continue
		case $c in
		tools) n=$(grep -c . "$root/tools/records" 2>/dev/null || true) ;;
		*) n=$(cat "$root/$c.progress" 2>/dev/null || true) ;;
		esac
		printf '%s ' "${n:-0}"
	done
}
hold() {
	outside || return 0
	local before now i ok inflight=()
	for i in c python tools; do uses $i && inflight+=("$([ $i = c ] && echo 3 || echo 1)"); done
	read -ra before <<<"$(counts)"
	sleep "$LOAD"
	for _ in $(seq 1200); do
		read -ra now <<<"$(counts)"
		ok=1
		# More than the operations that may have been in flight when the
		# phase began: 3 for the C client's threads, 1 for the others.
		for i in "${!before[@]}"; do [ "${now[$i]}" -gt $((before[i] + ${inflight[$i]})) ] || ok=0; done
		[ $ok = 1 ] && return 0
		sleep 0.1
	done
	fail "an outside client did no operation for 2 minutes (operations: ${before[*]} -> ${now[*]})"
}

SO=87654321 USER=12345678
CCA_APQNS=01.0033,02.0033 EP11_APQNS=06.0033,0e.0033

step "simulated adapters: CCA $CCA_APQNS, EP11 $EP11_APQNS"
hsmsim init --cca "$CCA_APQNS" --ep11 "$EP11_APQNS"
hsmsim show

step "token configuration: slots 2 and 3 CCA, slot 4 EP11"
demo_conf "$BACKEND" 2:cca:cca 3:cca:cca2 4:ep11:ep11

step "tokens: init, USER PIN, keys"
demo_token 2 cca
demo_token 3 cca2
demo_token 4 ep11
for t in aes des3 hmac ec rsa; do printf '%s\n' $USER | pkcshsm keys generate --slot 2 --type $t --label "cca-$t"; done
for t in aes ec; do printf '%s\n' $USER | pkcshsm keys generate --slot 3 --type $t --label "cca2-$t"; done
for t in aes ec rsa; do printf '%s\n' $USER | pkcshsm keys generate --slot 4 --type $t --label "ep11-$t"; done
printf '%s\n' $USER | pkcshsm keys list --slot 2 --hsm-mkvp
printf '%s\n' $USER | pkcshsm keys list --slot 4 --hsm-mkvp

# keyrows SLOT: one line per secure key, "handle current old reenc"
# (scripts/lib/demo.sh).
keyrows() { demo_keyrows "$1"; }

step "an application encrypts data with its keys before the rotation"
echo $USER | p11load -slots 2,3,4 -duration 2s -save "$root/before.json"
if uses c; then echo $USER | p11stress save --module "$module" --token cca,cca2,ep11 --file "$root/before-c.txt"; fi

for slot in 2 3 4; do keyrows $slot >"$root/keys$slot.before"; done

step "pkcshsmd"
pkcshsmd --log-format text --log-level warn 2>"$root/pkcshsmd.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$root/run/pkcshsm/admin.sock" ] && break; sleep 0.1; done
[ -S "$root/run/pkcshsm/admin.sock" ] || fail "pkcshsmd did not start: $(cat "$root/pkcshsmd.log")"

uses go || APPS=0
step "$APPS Go applications$(outside && echo " and the clients $CLIENT") start using the keys and keep going through the whole rotation"
for i in $(seq "$APPS"); do
	echo $USER | p11load -slots 2,3,4 -ready "$root/app$i.ready" -report "$root/app$i.json" -log "$root/app$i.log" >"$root/app$i.out" 2>&1 &
	app_pids="$app_pids $!"
done
for i in $(seq "$APPS"); do
	for _ in $(seq 200); do [ -e "$root/app$i.ready" ] && break; sleep 0.1; done
	[ -e "$root/app$i.ready" ] || fail "application $i did not start: $(cat "$root/app$i.out")"
done
# Each application's runtime agent announces itself to pkcshsmd.
for i in $(seq "$APPS"); do
	for _ in $(seq 100); do grep -q "connected to pkcshsmd" "$root/app$i.log" 2>/dev/null && break; sleep 0.1; done
	grep -q "connected to pkcshsmd" "$root/app$i.log" || fail "application $i did not connect to pkcshsmd"
done
rm -f "$root/stop"
if uses c; then
	echo $USER | p11stress load --module "$module" --token cca,cca2,ep11 --threads 3 --ready "$root/c.ready" \
		--report "$root/c.json" --phases "$root/phases" --progress "$root/c.progress" >"$root/c.out" 2>&1 &
	c_pid=$!
	outside_pids="$outside_pids $c_pid"
fi
if uses python; then
	echo $USER | /usr/bin/python3 "$here/testdata/clients/p11stress.py" --module "$module" --token cca,ep11 \
		--stop "$root/stop" --ready "$root/python.ready" --report "$root/python.json" --phases "$root/phases" \
		--progress "$root/python.progress" >"$root/python.out" 2>&1 &
	python_pid=$!
	outside_pids="$outside_pids $python_pid"
fi
if uses tools; then
	echo $USER | bash "$here/testdata/clients/toolloop.sh" "$module" cca2 "$root/tools" "$root/stop" "$root/phases" >"$root/tools.out" 2>&1 &
	tools_pid=$!
	outside_pids="$outside_pids $tools_pid"
fi
for c in c python; do
	uses $c || continue
	for _ in $(seq 1200); do [ -e "$root/$c.ready" ] && break; sleep 0.1; done
	[ -e "$root/$c.ready" ] || fail "the $c client did not start: $(cat "$root/$c.out")"
	# The runtime agent inside the module announces the process to pkcshsmd.
	p=${c}_pid
	for _ in $(seq 100); do grep "\"pid\":${!p}[,}]" "$root/module.log" 2>/dev/null | grep -q "connected to pkcshsmd" && break; sleep 0.1; done
	grep "\"pid\":${!p}[,}]" "$root/module.log" | grep -q "connected to pkcshsmd" || fail "the $c client's module did not connect to pkcshsmd"
done
if uses tools; then
	for _ in $(seq 1200); do [ -e "$root/tools/ready" ] && break; sleep 0.1; done
	[ -e "$root/tools/ready" ] || fail "the tools loop did not start: $(cat "$root/tools.out")"
fi
phase baseline
hold

step "officer: load new master keys (CCA SYM, AES, APKA; EP11 WK, committed)"
# The CURRENT patterns before the change (what a cancel must leave).
demo_old_keys || fail "could not read the current patterns"
# hsmsim prints the pattern of each loaded key, as the officer's TKE shows it.
demo_new_keys "$CCA_APQNS" "$EP11_APQNS" || fail "could not read the new patterns"

step "reencipher (a dry run first)"
printf '%s\n%s\n' $USER $USER | pkcshsm_mk_change reencipher --dry-run -a "$CCA_APQNS" -s "$new_sym" -A "$new_aes" -p "$new_apka"
phase reencipher
out=$(printf '%s\n%s\n' $USER $USER | pkcshsm_mk_change reencipher -a "$CCA_APQNS" -s "$new_sym" -A "$new_aes" -p "$new_apka")
echo "$out"
cca_op=$(echo "$out" | sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p")
out=$(printf '%s\n' $USER | pkcshsm_mk_change reencipher -a "$EP11_APQNS" -e "$new_wk")
echo "$out"
ep11_op=$(echo "$out" | sed -n "s/^Master key change operation '\(.*\)' created.$/\1/p")
[ -n "$cca_op" ] && [ -n "$ep11_op" ] || fail "no operation id"
pkcshsm_mk_change list
phase reenciphered
hold

step "an intersecting operation is refused"
set +e
printf '%s\n%s\n' $USER $USER | pkcshsm_mk_change reencipher -a 02.0033 -A "$new_aes"
rc=$?
set -e
[ $rc = 5 ] || fail "intersecting operation: exit $rc, want 5 (conflict)"

if [ "$MODE" = finalize ]; then
	step "officer: activate the new master keys, one APQN at a time"
	for q in ${CCA_APQNS//,/ }; do
		phase "set-$q"
		for t in SYM AES APKA; do
			# From the keys: no key may lack a blob under the new master key.
			pkcshsm_mk_change verify -a "$q" -t $t >/dev/null || fail "verify: not ready to set $t on $q"
			hsmsim set --apqns "$q" --type $t >/dev/null
		done
		echo "set $q"
		hold
	done
	for q in ${EP11_APQNS//,/ }; do
		phase "set-$q"
		pkcshsm_mk_change verify -a "$q" -t WK >/dev/null || fail "verify: not ready to set WK on $q"
		hsmsim set --apqns "$q" --type WK >/dev/null
		echo "set $q"
		hold
	done

	step "finalize"
	phase finalize
	printf '%s\n%s\n' $USER $USER | pkcshsm_mk_change finalize -i "$cca_op"
	printf '%s\n' $USER | pkcshsm_mk_change finalize -i "$ep11_op"
else
	step "cancel (no APQN activated the new keys)"
	phase cancel
	printf '%s\n%s\n' $USER $USER | pkcshsm_mk_change cancel -i "$cca_op"
	printf '%s\n' $USER | pkcshsm_mk_change cancel -i "$ep11_op"
	# The NEW registers are still loaded: list says a set would now lose
	# keys, until the officer clears them.
	pkcshsm_mk_change list | grep -q "DO NOT SET ON THIS HOST UNTIL IT RE-ENCIPHERS" ||
		fail "list does not warn about the loaded NEW registers after the cancel"
	step "officer: clear the NEW registers"
	for t in SYM AES APKA; do hsmsim clear-new --apqns "$CCA_APQNS" --type $t >/dev/null; done
	hsmsim clear-new --apqns "$EP11_APQNS" --type WK >/dev/null
fi
[ -z "$(pkcshsm_mk_change list)" ] || fail "operations left after $MODE"
phase after
hold

step "the applications stop; each must have had zero failed operations"
for p in $app_pids; do kill -TERM "$p"; done
i=0
for p in $app_pids; do
	i=$((i + 1))
	if ! wait "$p"; then fail "application $i failed: $(cat "$root/app$i.out")"; fi
	cat "$root/app$i.out"
done
app_pids=
if outside; then
	[ -n "$c_pid" ] && kill -TERM "$c_pid"
	touch "$root/stop"
	for c in c python tools; do
		uses $c || continue
		p=${c}_pid
		p=${!p}
		if ! wait "$p"; then fail "the $c client failed: $(cat "$root/$c.out")"; fi
		cat "$root/$c.out"
		# Every client worked in every phase the demo held (all but the passes).
		for ph in $(awk '$1 != "reencipher" && $1 != "finalize" && $1 != "cancel" {print $1}' "$root/phases"); do
			grep -Eq "phase $ph +[1-9][0-9]* ops +0 failed" "$root/$c.out" || fail "the $c client did no operation in phase $ph"
		done
	done
	outside_pids=
	step "p99 latency per client (us): baseline against the passes"
	printf '%-8s %10s %7s %10s %12s %10s %12s\n' client ops failed baseline reencipher "$MODE" "set (max)"
	for c in c python tools; do
		uses $c || continue
		awk -v c=$c -v mode="$MODE" '
			/ operations, / { for (i = 1; i <= NF; i++) { if ($(i) ~ /^operations,/) ops = $(i - 1); if ($(i) == "failed,") failed = $(i - 1) } }
			/ phase / { for (i = 1; i <= NF; i++) if ($(i) == "p99") p = $(i + 1)
				if ($4 == "baseline") b = p; else if ($4 == "reencipher") r = p; else if ($4 == mode) m = p
				else if ($4 ~ /^set-/ && p + 0 > s + 0) s = p }
			END { printf "%-8s %10s %7s %10s %12s %10s %12s\n", c, ops, failed, b, r, m, s == "" ? "-" : s }' "$root/$c.out"
	done
fi

step "verify every key"
check_slot() { # slot, expected patterns...
	local slot=$1 rows total rotated kept before json
	shift
	rows=$(keyrows "$slot")
	total=$(echo "$rows" | grep -c . || true)
	rotated=0
	for p in "$@"; do rotated=$((rotated + $(echo "$rows" | awk -v p="$p" 'toupper($2)==toupper(p)' | grep -c . || true))); done
	before=$(grep -c . "$root/keys$slot.before" || true)
	kept=0
	while read -r h p o r; do
		# The backup is the old blob: after a finalize, CKA_IBM_OPAQUE_OLD of
		# every key from before carries the pattern its CKA_IBM_OPAQUE had
		# then; after a cancel the key's blobs are as they were. No REENC.
		if [ "$MODE" = finalize ]; then want="$h [0-9A-F]* $p -"; else want="$h $p $o -"; fi
		# Here-strings, not pipes: with pipefail, "echo | grep -q" fails when
		# grep exits at the first match before echo has written everything.
		if grep -qx "$want" <<<"$rows"; then
			kept=$((kept + 1))
		else
			echo "  key $h: before \"$h $p $o $r\", now \"$(grep "^$h " <<<"$rows" || echo missing)\", want \"$want\"" >&2
		fi
	done <"$root/keys$slot.before"
	echo "slot $slot: $total secure keys, $rotated under the expected master keys; $kept of the $before keys from before the change have $want_what"
	[ "$total" -gt 0 ] && [ "$rotated" = "$total" ] && [ "$kept" = "$before" ] || fail "slot $slot keys not as expected after $MODE"
	if awk '$4 != "-"' <<<"$rows" | grep -q .; then fail "slot $slot: REENC blobs left"; fi
	return 0
}
if [ "$MODE" = finalize ]; then
	want_what="their pre-change blob pattern in CKA_IBM_OPAQUE_OLD"
	check_slot 2 "$new_sym" "$new_aes" "$new_apka"
	check_slot 3 "$new_sym" "$new_aes" "$new_apka"
	check_slot 4 "${new_wk:0:32}"
else
	want_what="their blobs unchanged"
	check_slot 2 "$old_sym" "$old_aes" "$old_apka"
	check_slot 3 "$old_sym" "$old_aes" "$old_apka"
	check_slot 4 "$old_wk"
fi
echo $USER | p11load -slots 2,3,4 -duration 2s -check "$root/before.json" || fail "application check after the $MODE"
if uses c; then
	echo $USER | p11stress check --module "$module" --token cca,cca2,ep11 --file "$root/before-c.txt" || fail "C client check after the $MODE"
fi

printf '\nDEMO PASSED (%s): every key verified, no application operation failed.\n' "$MODE"
