#!/usr/bin/env bash
# Regenerates crawlers.txt, browsers.txt and patterns.txt from the
# registry packages named in SOURCES.md. Needs npm and go; downloads into a
# temporary directory only (nothing lands in the repository but the three
# generated files). Then refresh the lexicon: go test -run TestLexiconGenerated -update-lexicon ./agent/botfilter/
#
#   cd agent/botfilter/testdata/eval && ./gen.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npmpkg() { # npmpkg DIR PACKAGE@VERSION: the package's files in $tmp/DIR
	mkdir -p "$tmp/$1" "$tmp/tgz"
	(cd "$tmp/tgz" && npm pack --silent "$2" >/dev/null)
	tar xzf "$tmp"/tgz/*.tgz -C "$tmp/$1" --strip-components=1
	rm "$tmp"/tgz/*.tgz
}
gomod() { # gomod DIR MODULE@VERSION: the module's files in $tmp/DIR
	ln -s "$(go mod download -json "$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')" "$tmp/$1"
}
npmpkg crawler-user-agents crawler-user-agents@1.60.0
gomod crawlerdetect github.com/x-way/crawlerdetect@v0.2.28
npmpkg isbot isbot@5.2.3
npmpkg uap-core uap-core@0.18.0
npmpkg woothee woothee@1.11.1
npmpkg random-useragent random-useragent@0.5.0
npmpkg top-user-agents top-user-agents@2.1.138
npmpkg user-agents user-agents@2.1.198
npmpkg real-user-agents @ulixee/real-user-agents@2.0.0-alpha.34
npmpkg playwright-core playwright-core@1.65.1
npmpkg my-ua-parser my-ua-parser@2.0.4
cd "$here"
go run gen.go -src "$tmp" -out "$here"
