#!/usr/bin/env bash
# Runs the tests of every package built for linux/s390x — the big-endian
# platform of IBM Z, where the CCA and EP11 adapters live — under qemu's user
# mode emulation (CI runs it; see README "Running on IBM Z").
#
#   bash scripts/test-s390x.sh [go test flags] [packages]
#
# What it needs (Debian packages; .ci/run installs them): qemu-user-static
# (qemu-s390x-static), gcc-s390x-linux-gnu and libc6-dev-s390x-cross (cgo,
# the PKCS#11 module and the C clients), binutils-s390x-linux-gnu (nm for
# the module's symbol table).
#
# How: GOARCH=s390x with cgo through s390x-linux-gnu-gcc. The tests build
# the project's binaries, the module, the host-library doubles and the C
# clients for s390x too (they honour GOARCH, CC and NM) and start them as
# child processes, so qemu's binfmt_misc handler must be registered: the
# script registers it where the machine allows it (root, a writable
# binfmt_misc). Without it only the test binaries themselves can run
# (go test -exec qemu-s390x-static) and every test that starts a binary
# fails: the script says so and exits non-zero.
#
# What cannot run under emulation is reported at the end, with the reason
# each test gave: the consumers that are not ours (pkcs11-tool, openssl,
# gnutls, python3, NSS, Java) are host (x86-64) programs and cannot load an
# s390x module into their process; the C client we build (p11stress) runs
# against it instead. The race detector is not used: under qemu it costs
# more than CI's time allows, and it runs natively in scripts/test.sh.
#
# SHORT=1 passes -short (the long crash sweeps stay at their CI size either
# way). SCOPE=ci (what scripts/test.sh runs, to stay within CI's time) runs
# every package but the long integration packages in full, and of those the
# rotation demo: the root package's TestRotationDemo/finalize (the README's
# command, with the applications in Go) and the demo with our C client
# loading the s390x module (CLIENT=go,c); it lists what it left out. The
# default (SCOPE=all) runs everything, far longer under emulation.
# Exit status: 0 only when every package passed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

die() {
	printf 'test-s390x: error: %s\n' "$1" >&2
	[ -z "${2:-}" ] || printf 'test-s390x: hint: %s\n' "$2" >&2
	exit 2
}

for tool in qemu-s390x-static s390x-linux-gnu-gcc s390x-linux-gnu-nm; do
	command -v "$tool" >/dev/null ||
		die "$tool is not installed" "apt-get install qemu-user-static gcc-s390x-linux-gnu libc6-dev-s390x-cross binutils-s390x-linux-gnu"
done
sysroot=/usr/s390x-linux-gnu
[ -e "$sysroot/lib/ld64.so.1" ] || die "$sysroot/lib/ld64.so.1 (the s390x dynamic loader) is missing" "apt-get install libc6-s390x-cross"

# binfmt_misc: dynamically linked s390x programs (the module's C clients,
# cgo binaries) are started by the kernel through qemu; QEMU_LD_PREFIX tells
# qemu where the s390x loader and libc are.
binfmt=/proc/sys/fs/binfmt_misc
registered() { [ -e "$binfmt/qemu-s390x" ] && grep -q '^enabled' "$binfmt/qemu-s390x"; }
if ! registered; then
	if [ ! -e "$binfmt/register" ] && [ "$(id -u)" = 0 ]; then
		mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null || true
	fi
	conf=/usr/lib/binfmt.d/qemu-s390x.conf
	if [ -w "$binfmt/register" ] && [ -r "$conf" ]; then
		cat "$conf" >"$binfmt/register" || true
	fi
fi
export GOARCH=s390x CGO_ENABLED=1 CC=s390x-linux-gnu-gcc NM=s390x-linux-gnu-nm QEMU_LD_PREFIX=$sysroot
execflag=()
if registered; then
	echo "test-s390x: qemu's binfmt_misc handler for s390x is registered"
else
	echo "test-s390x: qemu's binfmt_misc handler for s390x could not be registered (needs root and a writable $binfmt):" >&2
	echo "test-s390x: only the test binaries run (go test -exec qemu-s390x-static); tests that start a binary will fail" >&2
	execflag=(-exec qemu-s390x-static)
fi

# A first check that the emulation works at all: a cgo program.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'package main\n// int answer(void) { return 42; }\nimport "C"\nimport "fmt"\nfunc main() { fmt.Println(C.answer()) }\n' >"$probe/main.go"
(cd "$probe" && go mod init probe >/dev/null 2>&1 && go build -o probe . ) || die "cannot build a cgo program for s390x" "check that gcc-s390x-linux-gnu is installed"
if [ ${#execflag[@]} -eq 0 ]; then got=$("$probe/probe"); else got=$(qemu-s390x-static "$probe/probe"); fi
[ "$got" = 42 ] || die "an s390x cgo program does not run under qemu (printed '$got')" "check qemu-user-static"
go version
go env GOARCH CC
# Every package, the module and the tools build for s390x, and vet finds
# nothing (vet also checks the cgo and unsafe code of the C boundary).
go vet ./...

flags=()
[ "${SHORT:-}" = 1 ] && flags+=(-short)
pkgs=()
for a in "$@"; do
	case $a in
	-*) flags+=("$a") ;;
	*) pkgs+=("$a") ;;
	esac
done
scope=${SCOPE:-all}
# The long integration packages (whole rotations, crash sweeps, consumers
# and terminals): SCOPE=ci leaves them out but for the rotation demo.
long='^github.com/pkcshsm/pkcshsm(|/cmd/pkcshsm_mk_change|/cmd/pkcshsm_mk_change/crashmatrix|/cmd/pkcshsmd|/cmd/pkcshsm/cli|/cmd/hsmsim|/tests/consumers|/tests/operator)$'
left=()
if [ ${#pkgs[@]} -eq 0 ]; then
	case $scope in
	all) pkgs=(./...) ;;
	ci)
		mapfile -t pkgs < <(go list ./... | grep -Ev "$long")
		mapfile -t left < <(go list ./... | grep -E "$long" | grep -v '^github.com/pkcshsm/pkcshsm$')
		;;
	*) die "SCOPE=$scope: use SCOPE=all or SCOPE=ci" ;;
	esac
fi

log=$probe/test.json
status=0
go test "${execflag[@]}" -json -p 2 -timeout 60m "${flags[@]}" "${pkgs[@]}" >"$log" || status=$?
if [ "$scope" = ci ] && [ $# -eq 0 ]; then
	# The README's command built for s390x: the root package's demo, then
	# the demo with our C client (p11stress, built by $CC) loading the
	# s390x module.
	go test "${execflag[@]}" -json -timeout 30m -run '^TestRotationDemo$/^finalize$' . >>"$log" || status=$?
	echo "test-s390x: scripts/rotation-demo.sh with CLIENT=go,c (the C client loads the s390x module)"
	if CLIENT=go,c LOAD=1 MODE=finalize bash scripts/rotation-demo.sh >"$probe/demo-c.log" 2>&1; then
		grep -E 'DEMO PASSED|operations, 0 failed' "$probe/demo-c.log" | tail -3
	else
		tail -40 "$probe/demo-c.log"
		echo "FAIL scripts/rotation-demo.sh CLIENT=go,c (linux/s390x)"
		status=1
	fi
	for p in "${left[@]}"; do
		echo "could not run: $p: left out of SCOPE=ci to stay within CI's time under qemu; bash scripts/test-s390x.sh runs it"
	done
fi

# Summary: packages that passed and failed, and every skipped test with the
# reason it gave (what could not run under emulation, and why).
/usr/bin/python3 - "$log" <<'PY'
import json, sys
passed, failed, skipped = [], [], {}
out = {}
for line in open(sys.argv[1], errors="replace"):
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    pkg, test, act = ev.get("Package", ""), ev.get("Test"), ev.get("Action")
    key = (pkg, test)
    if act == "output":
        out.setdefault(key, []).append(ev.get("Output", ""))
    elif act in ("pass", "fail", "skip"):
        if test is None:
            (passed if act == "pass" else failed if act == "fail" else []).append(pkg)
        elif act == "skip":
            why = [l.strip() for l in out.get(key, []) if l.strip() and not l.strip().startswith(("=== ", "--- "))]
            skipped[key] = why[-1] if why else "(no reason given)"
        elif act == "fail" and "/" not in test:
            sys.stdout.write("".join(out.get(key, [])[-40:]))
for k in sorted(skipped):
    print("could not run: %s %s: %s" % (k[0], k[1], skipped[k]))
print("linux/s390x: %d packages passed, %d failed" % (len(passed), len(failed)))
for p in failed:
    print("FAIL %s" % p)
print("%d passed, %d failed" % (len(passed), len(failed)))
PY
exit $status
