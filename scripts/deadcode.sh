#!/bin/sh
# deadcode.sh fails when production code is reachable from no main
# package: a function only tests call is test-only code living in the
# product (issue 20). It lists every such function.
#
# internal/testkit is left out: it is test-only by design (helpers the
# tests share), so nothing in the binary reaches it.
#
# The tool is golang.org/x/tools/cmd/deadcode, pinned, installed into
# ./bin on first use.
set -eu
cd "$(dirname "$0")/.."
version=v0.53.0
if [ ! -x bin/deadcode ] || ! go version -m bin/deadcode | grep -q "golang.org/x/tools.*$version"; then
	GOBIN="$PWD/bin" go install "golang.org/x/tools/cmd/deadcode@$version"
fi
out=$(bin/deadcode ./...) # exits 0 whatever it finds
dead=$(printf '%s\n' "$out" | grep -v '^internal/testkit/' | grep . || true)
if [ -n "$dead" ]; then
	printf 'deadcode: reachable from no main package (delete it, or move it into a _test.go file):\n%s\n' "$dead" >&2
	exit 1
fi
echo "deadcode: none"
