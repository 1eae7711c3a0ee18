package bench

// What InfluxDB holds on disk for an hour of a busy shop's log: the
// combined log of `writeShopLog` (2,000,000 lines over one hour, 50
// campaigns, ~5 % crawlers, assets, 404s ...) imported with `tally-agent
// import-log` into a fresh three-node cluster and InfluxDB, next to the
// same log gzipped. Reproduce with
//
//	go test -run='^$' -bench=BenchmarkStorage -benchtime=1x -timeout=60m -v ./tests/bench/
//
// TALLY_BENCH_STORAGE_LINES scales the log; TALLY_BENCH_STORAGE_HOURS
// (1 to 24, default 1) spreads it over that many clock hours, with
// 2,000,000 lines an hour unless LINES says otherwise: what an hour costs
// once shards hold more than one (their indexes, a key per series and
// field, are paid once per shard); TALLY_BENCH_BASELINE_BIN names
// a directory with another release's tally-agent and tally-aggregator
// (tests/bench/storage_baseline.sh builds them from a git revision), run
// first on the same log as the "baseline" sub-benchmark.

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/influxtest"
)

// BenchmarkStorage reports, after every campaign is exact in the API, the
// nodes have nothing left to write or roll up, and InfluxDB has written
// its WAL to TSM files and compacted them (both after 10 s without
// writes here, instead of 10 min and 4 h):
//
//   - gzip_MB: the log gzipped (compress/gzip, default level);
//   - disk_MB and disk_pct_of_gzip: TSM + WAL of every retention policy;
//   - settled_MB and settled_pct_of_gzip: the same without the
//     contribution points' policy, which drops them after its duration
//     (3 h by default) — what stays once the minutes settle; a release
//     that keeps them with the minutes has no such policy (settled = disk);
//   - per measurement and policy (copied each into a database of its own
//     with SELECT INTO, compacted the same way): <rp>.<measurement>_B_per_point
//     and the points' count, and B_per_event: disk bytes per counted event.
func BenchmarkStorage(b *testing.B) {
	if testing.Short() {
		b.Skip("builds binaries, writes a large log and runs a cluster")
	}
	hours := 1
	if s := os.Getenv("TALLY_BENCH_STORAGE_HOURS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 24 {
			b.Fatalf("TALLY_BENCH_STORAGE_HOURS=%q: want 1 to 24", s)
		}
		hours = n
	}
	lines := 2_000_000 * hours
	if s := os.Getenv("TALLY_BENCH_STORAGE_LINES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 10_000 {
			b.Fatalf("TALLY_BENCH_STORAGE_LINES=%q: want a number of at least 10000", s)
		}
		lines = n
	}
	dir := b.TempDir()
	// The last whole clock hour: every minute gets its contribution
	// points (they are written for minutes younger than their
	// retention), the worst case, and its hourly rollup is due five
	// minutes after it ends.
	end := time.Now().UTC().Truncate(time.Hour)
	path := filepath.Join(dir, "hour.log")
	var campaigns []string
	for i := range 50 {
		campaigns = append(campaigns, fmt.Sprintf("campaign-%02d", i))
	}
	truth := map[string]uint64{}
	span := time.Duration(hours) * time.Hour
	tr, err := writeShopLog(path, lines, end, span, campaigns, truth)
	if err != nil {
		b.Fatal(err)
	}
	gz, err := gzipFileSize(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("log: %d lines, %d events, %d bots, %.1f MB, %.1f MB gzipped", tr.Lines, tr.Events, tr.Bots, float64(tr.Bytes)/1e6, float64(gz)/1e6)
	if base := os.Getenv("TALLY_BENCH_BASELINE_BIN"); base != "" {
		b.Run("baseline", func(b *testing.B) { benchStorage(b, base, path, end, span, truth, tr, gz) })
	}
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/tally-edge/tally/agent/cmd/tally-agent",
		"github.com/tally-edge/tally/aggregator/cmd/tally-aggregator")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	b.Run("current", func(b *testing.B) { benchStorage(b, bin, path, end, span, truth, tr, gz) })
}

func gzipFileSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n countWriter
	zw := gzip.NewWriter(&n)
	if _, err := io.Copy(zw, f); err != nil {
		return 0, err
	}
	return int64(n), zw.Close()
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

func benchStorage(b *testing.B, bin, logPath string, end time.Time, span time.Duration, truth map[string]uint64, tr logTruth, gz int64) {
	for range b.N {
		b.StopTimer()
		opts := influxtest.Options{SnapshotColdAfter: 10 * time.Second, CompactColdAfter: 10 * time.Second}
		runBackfill(b, bin, logPath, end, span, truth, opts, func(s *influxtest.Server, https []string) {
			measureStorage(b, s, https, tr, gz)
		})
	}
	b.ReportMetric(0, "ns/op")
}

// measureStorage waits for the nodes and InfluxDB to settle, then reports.
func measureStorage(b *testing.B, s *influxtest.Server, https []string, tr logTruth, gz int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	// Nothing left to write or roll up on any node.
	for {
		idle := true
		for _, h := range https {
			body := get(h + "/metrics")
			if !strings.Contains(body, "\ntally_aggregator_dirty_minutes 0\n") ||
				(strings.Contains(body, "tally_aggregator_rollup_pending_hours") && !strings.Contains(body, "\ntally_aggregator_rollup_pending_hours 0\n")) {
				idle = false
			}
		}
		if idle {
			break
		}
		if ctx.Err() != nil {
			b.Fatal("the nodes never finished writing and rolling up")
		}
		time.Sleep(500 * time.Millisecond)
	}
	db := s.Database()
	rps := retentionPolicies(b, s, db)
	// Copy each measurement of each policy into a database of its own.
	points := map[string]int64{}
	for _, rp := range rps {
		for _, m := range measurementsOf(b, s, db, rp) {
			n := pointCount(b, s, db, rp, m)
			if n == 0 {
				continue
			}
			name := rp + "." + m
			points[name] = n
			split := "split_" + rp + "_" + m
			if err := s.Exec(ctx, "CREATE DATABASE "+strconv.Quote(split)); err != nil {
				b.Fatal(err)
			}
			q := fmt.Sprintf(`SELECT * INTO %q."autogen".%q FROM %q.%q.%q WHERE time > 0 GROUP BY *`, split, m, db, rp, m)
			if _, err := s.Query(ctx, db, q); err != nil {
				b.Fatalf("%s: %v", q, err)
			}
		}
	}
	// WAL to TSM, and compactions: wait until every size stays put for 30 s.
	var sizes, index map[string]int64
	for stable := 0; stable < 3; {
		time.Sleep(10 * time.Second)
		now, nowIndex := dirSizesWithIndex(b, s.Dir())
		index = nowIndex
		if fmt.Sprint(now) == fmt.Sprint(sizes) {
			stable++
		} else {
			stable = 0
		}
		sizes = now
		if ctx.Err() != nil {
			b.Fatal("InfluxDB's files never settled")
		}
	}
	var total, contrib, indexes int64
	for _, rp := range rps {
		n := sizes[db+"/"+rp]
		total += n
		indexes += index[db+"/"+rp]
		if rp == "contributions" {
			contrib = n
		}
		b.ReportMetric(float64(n)/1e6, rp+"_MB")
		b.ReportMetric(float64(index[db+"/"+rp])/1e6, rp+"_index_MB")
	}
	b.ReportMetric(100*float64(indexes)/float64(total), "index_pct_of_disk")
	b.ReportMetric(float64(gz)/1e6, "gzip_MB")
	b.ReportMetric(float64(total)/1e6, "disk_MB")
	b.ReportMetric(100*float64(total)/float64(gz), "disk_pct_of_gzip")
	b.ReportMetric(float64(total-contrib)/1e6, "settled_MB")
	b.ReportMetric(100*float64(total-contrib)/float64(gz), "settled_pct_of_gzip")
	b.ReportMetric(float64(total)/float64(tr.Events+tr.Bots), "B_per_event")
	var names []string
	for name := range points {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rp, m, _ := strings.Cut(name, ".")
		n := sizes["split_"+rp+"_"+m+"/autogen"]
		b.ReportMetric(float64(points[name]), name+"_points")
		b.ReportMetric(float64(n)/float64(points[name]), name+"_B_per_point")
		ix := index["split_"+rp+"_"+m+"/autogen"]
		b.Logf("%s: %d points, %d bytes on disk alone (TSM index %d B, %.0f %%), %.0f B per point, %.0f B without the index",
			name, points[name], n, ix, 100*float64(ix)/float64(max(n, 1)), float64(n)/float64(points[name]), float64(n-ix)/float64(points[name]))
	}
	b.Logf("InfluxDB on disk (TSM + WAL) per database/policy: %v; log gzipped %d bytes", sizes, gz)
}

// dirSizesWithIndex sums the files under data/<db>/<rp> and
// wal/<db>/<rp>, and, per data/<db>/<rp>, the bytes of its TSM files'
// indexes: every series-and-field key once per file with an entry per
// block, what a fresh shard pays in full for its first hour.
func dirSizesWithIndex(b *testing.B, root string) (sizes, index map[string]int64) {
	sizes, index = map[string]int64{}, map[string]int64{}
	for _, sub := range []string{"data", "wal"} {
		base := filepath.Join(root, sub)
		err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(base, p)
			parts := strings.Split(rel, string(filepath.Separator))
			if len(parts) < 3 {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			sizes[parts[0]+"/"+parts[1]] += info.Size()
			if sub == "data" && strings.HasSuffix(p, ".tsm") {
				n, err := tsmIndexSize(p, info.Size())
				if err != nil {
					return err
				}
				index[parts[0]+"/"+parts[1]] += n
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return sizes, index
}

// tsmIndexSize returns the bytes of a TSM file's index: from the offset
// its last 8 bytes give (big endian) to the footer.
func tsmIndexSize(path string, size int64) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var footer [8]byte
	if size < 5+8 {
		return 0, fmt.Errorf("%s: %d bytes, too short for a TSM file", path, size)
	}
	if _, err := f.ReadAt(footer[:], size-8); err != nil {
		return 0, err
	}
	off := int64(binary.BigEndian.Uint64(footer[:]))
	if off < 5 || off > size-8 {
		return 0, fmt.Errorf("%s: index offset %d outside the file's %d bytes", path, off, size)
	}
	return size - 8 - off, nil
}

// influxQLRows runs q on db and returns the first column of every row
// (the values of every series).
func influxQLRows(b *testing.B, s *influxtest.Server, db, q string) [][]any {
	body, err := s.Query(context.Background(), db, q)
	if err != nil {
		b.Fatalf("%s: %v", q, err)
	}
	var resp struct {
		Results []struct {
			Series []struct {
				Columns []string `json:"columns"`
				Values  [][]any  `json:"values"`
			} `json:"series"`
			Error string `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		b.Fatalf("%s: %v", q, err)
	}
	var out [][]any
	for _, r := range resp.Results {
		if r.Error != "" {
			b.Fatalf("%s: %s", q, r.Error)
		}
		for _, s := range r.Series {
			out = append(out, s.Values...)
		}
	}
	return out
}

func retentionPolicies(b *testing.B, s *influxtest.Server, db string) []string {
	var out []string
	for _, row := range influxQLRows(b, s, db, "SHOW RETENTION POLICIES ON "+strconv.Quote(db)) {
		out = append(out, row[0].(string))
		// A shard's TSM index holds each series-and-field key once,
		// however many hours of points the shard spans: a one-hour log
		// pays it whole.
		b.Logf("policy %v: duration %v, shard group duration %v", row[0], row[1], row[2])
	}
	return out
}

func measurementsOf(b *testing.B, s *influxtest.Server, db, rp string) []string {
	var out []string
	for _, m := range []string{"tally", "tally_contrib", "tally_rollup", "tally_rollup_since"} {
		if pointCount(b, s, db, rp, m) > 0 {
			out = append(out, m)
		}
	}
	return out
}

// pointCount counts the points of a measurement: the largest count of
// any of its fields.
func pointCount(b *testing.B, s *influxtest.Server, db, rp, m string) int64 {
	var most int64
	for _, row := range influxQLRows(b, s, db, fmt.Sprintf(`SELECT count(*) FROM %q.%q WHERE time > 0`, rp, m)) {
		for _, v := range row[1:] {
			if f, ok := v.(float64); ok && int64(f) > most {
				most = int64(f)
			}
		}
	}
	return most
}
