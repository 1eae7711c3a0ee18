#!/usr/bin/env bash
# Runs BenchmarkSeriesLatency's rollup questions (daily series of one
# campaign over 1, 30 and 365 days) on a git revision (the baseline,
# default main) and on this tree, alternating, ROUNDS times each, so
# that both see the same machine.
#
#   tests/bench/series_baseline.sh [REVISION] [ROUNDS]
#
# It needs InfluxDB 1.8 as the tests find it (make influxdb, or
# TALLY_INFLUXD).
set -euo pipefail
rev=${1:-main}
rounds=${2:-2}
root=$(git rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git -C "$root" archive "$rev" | tar -x -C "$work"
if [ -z "${TALLY_INFLUXD:-}" ] && [ -x "$root/.bin/influxd" ]; then
  export TALLY_INFLUXD="$root/.bin/influxd"
fi
for round in $(seq "$rounds"); do
  for tree in "$work" "$root"; do
    if [ "$tree" = "$work" ]; then name="$rev"; else name="this tree"; fi
    echo "== round $round: $name"
    (cd "$tree" && go test -run='^$' -bench='BenchmarkSeriesLatency/days=.*/rollups' -benchtime=1x -v ./aggregator/rollup/ \
      | grep -E '^Benchmark.*_ms|^(FAIL|ok)')
  done
done
