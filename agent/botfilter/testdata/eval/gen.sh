#!/usr/bin/env bash
# Regenerates crawlers.txt and browsers.txt from the npm packages named in
# SOURCES.md. Needs npm and go; downloads into a temporary directory only
# (nothing lands in the repository but the two text files).
#
#   cd agent/botfilter/testdata/eval && ./gen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() { # fetch DIR PACKAGE@VERSION
	mkdir -p "$tmp/$1"
	(cd "$tmp" && npm pack --silent "$2" >/dev/null)
	tar xzf "$tmp"/*.tgz -C "$tmp/$1"
	rm "$tmp"/*.tgz
}
fetch crawler-user-agents crawler-user-agents@1.60.0
fetch top-user-agents top-user-agents@2.1.138
fetch user-agents user-agents@2.1.198
fetch real-user-agents @ulixee/real-user-agents@2.0.0-alpha.34
cd "$here"
go run gen.go -src "$tmp" -out "$here"
