#!/usr/bin/env bash
# The project's test command (README "Tests"): static checks, then every
# test with the race detector. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	printf 'gofmt would change:\n%s\n' "$unformatted" >&2
	exit 1
fi
go vet ./...
# -p 2 matches the 2-core machines; integration tests start real processes.
go test -race -p 2 -timeout 45m "$@" ./...
# The same tests built for linux/s390x under qemu (scripts/test-s390x.sh).
# CI always runs it; elsewhere S390X=0 skips it, and a machine without
# the cross tools is told what to install.
if [ "${S390X:-1}" != 0 ]; then
	if [ "${CI:-}" != true ] && ! command -v qemu-s390x-static >/dev/null; then
		echo "test.sh: linux/s390x not tested: apt-get install qemu-user-static gcc-s390x-linux-gnu libc6-dev-s390x-cross binutils-s390x-linux-gnu (or S390X=0)" >&2
		exit 1
	fi
	SCOPE=ci bash scripts/test-s390x.sh
fi
