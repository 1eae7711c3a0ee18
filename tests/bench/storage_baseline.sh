#!/usr/bin/env bash
# Runs BenchmarkStorage on the binaries of a git revision (the baseline,
# default main) and on this tree, one after the other in the same go test
# run, on the same log.
#
#   tests/bench/storage_baseline.sh [REVISION] [LINES]
#
# LINES (default 2000000) sets TALLY_BENCH_STORAGE_LINES.
set -euo pipefail
rev=${1:-main}
lines=${2:-2000000}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$rev" | tar -x -C "$work"
(cd "$work" && go build -o "$work/bin/" ./agent/cmd/tally-agent ./aggregator/cmd/tally-aggregator)
cd "$root"
TALLY_BENCH_BASELINE_BIN="$work/bin" TALLY_BENCH_STORAGE_LINES="$lines" \
  go test -run='^$' -bench='^BenchmarkStorage$' -benchtime=1x -timeout=90m -v ./tests/bench/ \
  | grep -E '^(Benchmark|\s+storage_test.go|\s+backfill_test.go|ok|FAIL|PASS)'
