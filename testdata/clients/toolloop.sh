#!/usr/bin/env bash
# toolloop.sh: stock command-line PKCS#11 consumers in a loop, each command
# a new process that loads the module, logs in and does one thing:
#
#   pkcs11-tool (OpenSC)     ECDSA P-256 signature, verified by plain openssl
#   OpenSSL pkcs11 engine    RSA-2048 signature, verified by plain openssl
#   pkcs11-tool              AES-CBC-PAD encryption and decryption of a file,
#                            the decrypted file compared with the input
#
#   toolloop.sh MODULE TOKEN_LABEL WORKDIR STOPFILE [PHASES] < pin
#
# The keys are token keys made at start with pkcs11-tool. Before the loop a
# file is encrypted; after it (STOPFILE exists) that ciphertext must still
# decrypt; WORKDIR/ready appears when the loop starts, and WORKDIR/records
# has one line per command. Every command's latency is recorded; the summary lines have the
# same form as the C and Python clients' ("N operations, F failed", one
# line per phase of the PHASES file). The PIN reaches pkcs11-tool through
# the environment (--pin env:P11PIN) and the engine through a 0600
# configuration file, never through argv. Exit status 0 only when nothing
# failed.
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: toolloop.sh MODULE TOKEN_LABEL WORKDIR STOPFILE [PHASES] < pin" >&2; exit 2; }
module=$1 token=$2 dir=$3 stop=$4 phases=${5:-}
IFS= read -r P11PIN || true
[ -n "$P11PIN" ] || { echo "toolloop.sh: error: no USER PIN on standard input" >&2; exit 2; }
export P11PIN
mkdir -p "$dir"
umask 077
engine=/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
[ -e "$engine" ] || engine=$(find /usr/lib -name pkcs11.so -path '*engines*' | head -1)
cat >"$dir/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $engine
MODULE_PATH = $module
PIN = $P11PIN
init = 0
EOF
tag=toolloop-$$
id=$(printf '%08x' $$) # pkcs11-tool finds keys reliably by id, not by label
p11() { pkcs11-tool --module "$module" --token-label "$token" "$@"; }
# Each record: start (epoch ns), latency (ns), ok (1/0), operation.
recs=$dir/records
: >"$recs"
errors=$dir/errors
: >"$errors"
run() { # op command... : runs, times and records one command
	local op=$1 t0 t1 rc
	shift
	t0=$(date +%s%N)
	if "$@" >"$dir/out" 2>&1; then rc=0; else rc=$?; fi
	t1=$(date +%s%N)
	echo "$t0 $((t1 - t0)) $((rc == 0)) $op" >>"$recs"
	if [ $rc != 0 ]; then
		printf '%s: exit %s: %s\n' "$op" "$rc" "$(tr '\n' ' ' <"$dir/out" | cut -c1-300)" >>"$errors"
	fi
	return $rc
}

p11 --login --pin env:P11PIN --keypairgen --key-type EC:prime256v1 --label "$tag-ec" --id ${id}01 >/dev/null
p11 --login --pin env:P11PIN --keypairgen --key-type RSA:2048 --label "$tag-rsa" --id ${id}02 >/dev/null
p11 --login --pin env:P11PIN --keygen --key-type AES:32 --label "$tag-aes" --id ${id}03 >/dev/null 2>&1
p11 --read-object --type pubkey --id ${id}01 -o "$dir/ec.der" >/dev/null
p11 --read-object --type pubkey --id ${id}02 -o "$dir/rsa.der" >/dev/null
openssl pkey -pubin -inform DER -in "$dir/ec.der" -out "$dir/ec.pem"
openssl pkey -pubin -inform DER -in "$dir/rsa.der" -out "$dir/rsa.pem"
# Over 1 KiB: pkcs11-tool encrypts in 1 KiB parts, so this goes through
# C_EncryptUpdate and C_DecryptUpdate with output, and a small Final.
head -c 5000 /dev/urandom >"$dir/data"
iv=000102030405060708090a0b0c0d0e0f
aes() { p11 --login --pin env:P11PIN "$1" -m AES-CBC-PAD --iv $iv --id ${id}03 --input-file "$2" --output-file "$3"; }
aes --encrypt "$dir/data" "$dir/data.before" 2>&1 | grep -v -e '^Using' -e ALWAYS_AUTHENTICATE || true
[ -s "$dir/data.before" ] || { echo "toolloop.sh: error: cannot encrypt the start data" >&2; exit 1; }
echo $$ >"$dir/ready" # keys made, data encrypted: the loop starts
n=0
while [ ! -e "$stop" ]; do
	n=$((n + 1))
	head -c 3000 /dev/urandom >"$dir/msg" # over 1 KiB: multi-part in pkcs11-tool
	# pkcs11-tool signs the digest; plain openssl verifies the DER signature.
	openssl dgst -sha256 -binary "$dir/msg" >"$dir/msg.sha256"
	if run pkcs11-tool-ecdsa-sign p11 --login --pin env:P11PIN --sign -m ECDSA --id ${id}01 \
		--signature-format openssl --input-file "$dir/msg.sha256" --output-file "$dir/ec.sig"; then
		run openssl-verify-ecdsa openssl dgst -sha256 -verify "$dir/ec.pem" -signature "$dir/ec.sig" "$dir/msg" || true
	fi
	# The engine signs with the private key named by its PKCS#11 URI.
	if run openssl-engine-rsa-sign env OPENSSL_CONF="$dir/openssl.cnf" openssl dgst -sha256 -engine pkcs11 -keyform engine \
		-sign "pkcs11:token=$token;object=$tag-rsa;type=private" -out "$dir/rsa.sig" "$dir/msg"; then
		run openssl-verify-rsa openssl dgst -sha256 -verify "$dir/rsa.pem" -signature "$dir/rsa.sig" "$dir/msg" || true
	fi
	if [ $((n % 2)) = 0 ]; then
		if run pkcs11-tool-aes-encrypt aes --encrypt "$dir/msg" "$dir/msg.enc"; then
			run pkcs11-tool-aes-decrypt aes --decrypt "$dir/msg.enc" "$dir/msg.dec" && run compare-decrypted cmp "$dir/msg" "$dir/msg.dec" || true
		fi
	fi
done
verified=0
if run decrypt-earlier-data aes --decrypt "$dir/data.before" "$dir/data.after" && run compare-earlier-data cmp "$dir/data" "$dir/data.after"; then
	verified=1
fi
# Label each record with its phase (the last one started before it), sort
# by phase and latency, then count and take percentiles per phase.
awk -v phases="$phases" '
BEGIN {
	np = 1; pname[1] = "setup"; pstart[1] = -1
	if (phases != "") while ((getline line < phases) > 0) { split(line, a, " "); if (a[2] != "") { np++; pname[np] = a[1]; pstart[np] = a[2] + 0 } }
}
{ p = 1; for (i = 2; i <= np; i++) if ($1 + 0 >= pstart[i]) p = i; print p, $2, $3, pname[p] }' "$recs" | sort -k1,1n -k2,2n >"$dir/byphase"
{
	awk -v pid=$$ -v verified=$verified '{ ops++; if ($3 != 1) failed++ }
		END { printf "toolloop %d: %d operations, %d failed, %d ciphertexts from earlier verified\n", pid, ops, failed + 0, verified }' "$recs"
	awk -v pid=$$ '
	function flush() {
		if (n == 0) return
		printf "toolloop %d: phase %-14s %8d ops %4d failed  p50 %6d us  p99 %6d us  max %7d us\n", pid, name, n, f,
			int(lat[int(n / 2) + 1] / 1000), int(lat[int(n * 99 / 100) + 1] / 1000), int(lat[n] / 1000)
	}
	$1 != cur { flush(); cur = $1; name = $4; n = 0; f = 0 }
	{ lat[++n] = $2; if ($3 != 1) f++ }
	END { flush() }' "$dir/byphase"
} | tee "$dir/summary"
if [ -s "$errors" ]; then head -20 "$errors" >&2; fi
grep -q " 0 failed, 1 ciphertexts" "$dir/summary"
