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
