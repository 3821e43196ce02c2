# shellcheck shell=bash
# What scripts/rotation-demo.sh and scripts/fleet-demo.sh share, sourced by
# both: the token configuration, the tokens, the officer's master keys and
# the key rows every key check compares. They use $SO and $USER (the PINs),
# the built tools on PATH, PKCSHSM_ROOT, and DEMO_SIM_DIR (hsmsim --dir)
# when the adapters live outside the root.

# demo_hsmsim ARGS...: hsmsim on the demo's simulated adapters.
demo_hsmsim() { hsmsim ${DEMO_SIM_DIR:+--dir "$DEMO_SIM_DIR"} "$@"; }

# demo_conf BACKEND SLOT:TYPE:LABEL...: pkcshsm.conf with these slots
# (simulator-dir = DEMO_SIM_DIR when set), ccatok.conf allowing CCA APQNs
# 01.0033 and 02.0033, ep11tok.conf allowing 06.0033 and 0e.0033, in
# $PKCSHSM_ROOT/etc/pkcshsm, mode 0644.
demo_conf() {
	local backend=$1 spec id type label dir=$PKCSHSM_ROOT/etc/pkcshsm
	shift
	mkdir -p "$dir"
	{
		echo "hsm-backend = $backend"
		[ -z "${DEMO_SIM_DIR:-}" ] || echo "simulator-dir = \"$DEMO_SIM_DIR\""
		for spec in "$@"; do
			IFS=: read -r id type label <<<"$spec"
			printf 'slot %s {\n\ttoken-type = %s\n\ttokname = %s\n\tconfname = %stok.conf\n}\n' "$id" "$type" "$label" "$type"
		done
	} >"$dir/pkcshsm.conf"
	printf 'version cca-0\nAPQN_ALLOWLIST\n1 0x33\n2 0x33\nEND\n' >"$dir/ccatok.conf"
	printf 'APQN_ALLOWLIST\n6 0x33\n14 0x33\nEND\n' >"$dir/ep11tok.conf"
	chmod 644 "$dir"/*
}

# demo_token SLOT LABEL: initialise the slot's token (SO PIN $SO) and set
# its USER PIN ($USER).
demo_token() {
	printf '%s\n%s\n' "$SO" "$SO" | pkcshsm token init --slot "$1" --label "$2"
	printf '%s\n%s\n%s\n' "$SO" "$USER" "$USER" | pkcshsm pin set --slot "$1"
}

# demo_keyrows SLOT: one line per secure key of the slot's token, "handle
# current old reenc", the master key patterns (upper case) of its
# CKA_IBM_OPAQUE, CKA_IBM_OPAQUE_OLD and CKA_IBM_OPAQUE_REENC blobs as
# "keys list --json" reads them from each blob, "-" for an absent blob.
# keys list indents its JSON one field per line. An unreadable blob fails.
# With a second argument "quiet", keys list's own messages are dropped.
demo_keyrows() {
	if [ "${2:-}" = quiet ]; then
		printf '%s\n' "$USER" | pkcshsm keys list --slot "$1" --json 2>/dev/null
	else
		printf '%s\n' "$USER" | pkcshsm keys list --slot "$1" --json
	fi | awk '
		function flush() { if (h != "" && cur != "-") print h, cur, old, reenc; h = ""; cur = old = reenc = "-" }
		BEGIN { h = ""; cur = old = reenc = "-" }
		/^  \{/ { flush() }
		/^    "handle":/ { h = $2; sub(/,$/, "", h) }
		/^      "(current|old|reenc)": \{/ { blob = $1; gsub(/[":]/, "", blob) }
		/^        "mkvp":/ { p = toupper($2); gsub(/[",]/, "", p); if (blob == "current") cur = p; else if (blob == "old") old = p; else if (blob == "reenc") reenc = p }
		/^        "error":/ { print "unreadable blob in key " h ": " $0 > "/dev/stderr"; exit 1 }
		END { flush() }'
}

# demo_current TYPE: the CURRENT pattern of master key TYPE (SYM, AES,
# APKA, WK) of the first adapter that has one, as hsmsim shows it.
demo_current() {
	demo_hsmsim show --json | tr -d ' \n' | grep -o "\"$1\":{\"current\":{\"state\":\"valid\",\"pattern\":\"[0-9a-f]*\"" |
		sed -n 1p | sed 's/.*"pattern":"//; s/"$//'
}

# demo_old_keys: old_sym, old_aes, old_apka, old_wk (its first 16 bytes)
# := the CURRENT patterns before the change (what a cancel must leave).
demo_old_keys() {
	old_sym=$(demo_current SYM) old_aes=$(demo_current AES) old_apka=$(demo_current APKA) old_wk=$(demo_current WK)
	old_wk=${old_wk:0:32}
	[ -n "$old_sym" ] && [ -n "$old_aes" ] && [ -n "$old_apka" ] && [ -n "$old_wk" ]
}

# demo_new_keys CCA-APQNS EP11-APQNS: the officer loads new CCA SYM, AES
# and APKA master keys and a new EP11 wrapping key (committed), as the
# TKE does; new_sym, new_aes, new_apka, new_wk := their patterns as hsmsim
# prints them, and a line naming them.
demo_new_keys() {
	new_sym=$(demo_loadnew "$1" SYM)
	new_aes=$(demo_loadnew "$1" AES)
	new_apka=$(demo_loadnew "$1" APKA)
	new_wk=$(demo_loadnew "$2" WK)
	demo_hsmsim commit --apqns "$2" >/dev/null || return 1
	[ -n "$new_sym" ] && [ -n "$new_aes" ] && [ -n "$new_apka" ] && [ -n "$new_wk" ] || return 1
	echo "new SYM $new_sym AES $new_aes APKA $new_apka WK $new_wk"
}

demo_loadnew() { demo_hsmsim load-new --apqns "$1" --type "$2" | awk 'NR==1 {print substr($5, 3)}'; }
