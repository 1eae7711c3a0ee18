package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/tally-edge/tally/aggregator/archive"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/s3test"
)

// TestArchiveMatchesTheAPI is the archive's acceptance test, between real
// processes: events over three past days go through an agent and the
// aggregator into InfluxDB; `tally-aggregator archive export` writes the
// days as Parquet to SeaweedFS over its S3 API and `archive verify` checks
// them; DuckDB reads local copies of the objects and every (day,
// campaign)'s totals must equal the KPI API's and the ground truth
// exactly. A late event for a settled day then reaches the archive on
// the next export, and `archive restore` loads the days into an empty
// InfluxDB with the same counts and sums. Both InfluxDBs run as 1.8
// ships, with Flux off: the node and the command read with InfluxQL.
func TestArchiveMatchesTheAPI(t *testing.T) {
	began := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }
	// The aggregator has an archive of its own, a directory, that it
	// exports to by itself once archive.schedule is on (below).
	scheduled := t.TempDir()
	c := startClusterWith(t, clusterOptions{influx: influxtest.Options{DisableFlux: true},
		aggExtra: fmt.Sprintf("archive:\n  target: %s\n", scheduled)}, "agent-eu")
	s3 := s3test.Start(t)
	node := requireDuckDB(t)
	phase("processes started")

	today := time.Now().UTC().Truncate(24 * time.Hour)
	first := today.Add(-3 * 24 * time.Hour)
	days := []time.Time{first, first.Add(24 * time.Hour), first.Add(48 * time.Hour)}
	gen := loadgen.New(loadgen.Config{Seed: 13, Countries: 3, Channels: 3})
	truth := loadgen.NewTruth()
	// As a server sender (its token): the agent believes the ip and
	// user agent each generated event carries, as the truth does.
	client := &loadgen.Client{URL: c.agents[0].eventsURL(), HTTP: &http.Client{Timeout: 30 * time.Second}, Token: harness.DefaultServerToken}
	var evs []loadgen.Event
	for i := range 6000 {
		// Scattered over the three days, out of order.
		off := time.Duration((uint64(i)*0x9E3779B97F4A7C15)%uint64(3*24*time.Hour/time.Second)) * time.Second
		evs = append(evs, gen.Event(first.Add(off)))
	}
	post := func(part []loadgen.Event) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := client.Post(ctx, part); err != nil {
			t.Fatal(err)
		}
		truth.Add(part)
	}
	for i := 0; i < len(evs); i += 1000 {
		post(evs[i:min(i+1000, len(evs))])
	}
	waitForTruth(t, c.influx, truth, first, today)
	phase("InfluxDB holds the truth")

	cfg := archiveConfig(t, c, c.influx, s3, "cli.yaml")
	dayArg := func(d time.Time) string { return d.Format(time.DateOnly) }
	out := runArchive(t, "export", "-config", cfg, "-from", dayArg(days[0]), "-to", dayArg(days[2]))
	if strings.Count(out, " exported: ") != 3 {
		t.Fatalf("export:\n%s", out)
	}
	out = runArchive(t, "verify", "-config", cfg, "-from", dayArg(days[0]), "-to", dayArg(days[2]))
	if strings.Count(out, " ok: ") != 3 {
		t.Fatalf("verify:\n%s", out)
	}
	phase("exported and verified")
	checkDuckDBAgainstAPI(t, c, s3, node, truth, days)
	phase("DuckDB equals the API")
	// Schedule on, and a restart: the node's first pass comes once the
	// days are no longer being written. (A pass that meets a day still
	// receiving data fails that day and exports it at the next pass, an
	// interval later: no test should wait for that.)
	aggStarted := enableScheduledArchive(t, c, scheduled)
	checkScheduledExport(t, c, s3, scheduled, aggStarted, days)
	phase("the aggregator exported the same days by itself")

	// A late event for the middle day, a settled one.
	late := gen.Event(days[1].Add(17*time.Hour + 3*time.Minute))
	for late.Type != "conversion" || late.Bot {
		late = gen.Event(days[1].Add(17*time.Hour + 3*time.Minute))
	}
	post([]loadgen.Event{late})
	waitForTruth(t, c.influx, truth, first, today)
	out = runArchive(t, "export", "-config", cfg, "-from", dayArg(days[0]), "-to", dayArg(days[2]))
	if strings.Count(out, " exported: ") != 1 || strings.Count(out, " unchanged: ") != 2 || !strings.Contains(out, dayArg(days[1])+" exported") {
		t.Fatalf("export after a late event:\n%s", out)
	}
	checkDuckDBAgainstAPI(t, c, s3, node, truth, days)
	phase("late event archived")

	// Restore into a new InfluxDB with no database (1.8 as it ships, Flux
	// off): restore creates it, as the node would, and writes the same
	// cells as the first holds.
	other := influxtest.StartWith(t, influxtest.Options{DisableFlux: true, NoDatabase: true})
	cfg2 := archiveConfig(t, c, other, s3, "restore.yaml")
	out = runArchive(t, "restore", "-config", cfg2, "-from", dayArg(days[0]), "-to", dayArg(days[2]))
	if strings.Count(out, " restored: ") != 3 {
		t.Fatalf("restore:\n%s", out)
	}
	if diff := cellsEqual(queryInfluxRetrying(t, other, first, today), queryInfluxRetrying(t, c.influx, first, today)); diff != "" {
		t.Fatalf("restored InfluxDB differs: %s", diff)
	}
	phase("restored")
	out = runArchive(t, "verify", "-config", cfg2, "-from", dayArg(days[0]), "-to", dayArg(days[2]))
	if strings.Count(out, " ok: ") != 3 {
		t.Fatalf("verify of the restored InfluxDB (sketches included):\n%s", out)
	}
}

// enableScheduledArchive checks that the aggregator, whose archive is
// dir with archive.schedule off, exported nothing there, then turns the
// schedule on and restarts it. It returns when the restart began.
func enableScheduledArchive(t *testing.T, c *cluster, dir string) time.Time {
	t.Helper()
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("with archive.schedule off the aggregator wrote %d entries to its archive (%v)", len(ents), err)
	}
	path := filepath.Join(c.dir, "agg-1.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	section := fmt.Sprintf("archive:\n  target: %s\n", dir)
	if !strings.Contains(string(b), section) {
		t.Fatalf("no archive section %q in the aggregator's configuration", section)
	}
	conf := strings.Replace(string(b), section, section+"  schedule: true\n", 1)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	if err := c.agg.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	c.startAggregator()
	return started
}

// checkScheduledExport waits for the aggregator's first scheduled pass
// (archive.schedule, 12 s after start with the harness's settings) and
// checks that every settled day of the window has a manifest in the
// directory archive, and that the days with data hold the same counters
// as the manifests the command wrote to S3.
func checkScheduledExport(t *testing.T, c *cluster, s3 *s3test.Server, dir string, started time.Time, days []time.Time) {
	t.Helper()
	window := archive.SettledDays(started, archive.DefaultConfig())
	deadline := time.Now().Add(120 * time.Second)
	for harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_archive_days_exported_total") < float64(len(window)) {
		if time.Now().After(deadline) {
			t.Fatalf("the aggregator exported %v of %d days by itself",
				harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_archive_days_exported_total"), len(window))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if f := harness.MetricSum(metrics(t, c.aggHTTP), "tally_aggregator_archive_failures_total"); f != 0 {
		t.Fatalf("%v scheduled exports failed", f)
	}
	mc, err := s3.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range window {
		ds := d.Format(time.DateOnly)
		b, err := os.ReadFile(filepath.Join(dir, "day="+ds, "_manifest.json"))
		if err != nil {
			t.Fatalf("scheduled export of %s: %v", ds, err)
		}
		mine, err := archive.DecodeManifest(b)
		if err != nil || mine.ExportedBy != "agg-1" {
			t.Fatalf("scheduled manifest of %s: %+v %v", ds, mine, err)
		}
		if !slices.ContainsFunc(days, func(x time.Time) bool { return x.Equal(d) }) {
			if mine.Counters.Rows != 0 {
				t.Fatalf("%s has no events but %d rows", ds, mine.Counters.Rows)
			}
			continue
		}
		o, err := mc.GetObject(context.Background(), "tally", "e2e/day="+ds+"/_manifest.json", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cb, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			t.Fatal(err)
		}
		cli, err := archive.DecodeManifest(cb)
		if err != nil {
			t.Fatal(err)
		}
		if mine.Counters != cli.Counters || mine.Counters.Rows == 0 || len(mine.Parts) != 1 || mine.Parts[0].SHA256 != cli.Parts[0].SHA256 {
			t.Fatalf("%s: scheduled %+v, command %+v", ds, mine, cli)
		}
	}
	t.Logf("the aggregator archived the %d settled days of its window by itself, byte for byte as the command did", len(window))
}

// queryInfluxRetrying is queryInflux, asked up to three times: a query of
// three days can time out on a busy machine.
func queryInfluxRetrying(t *testing.T, influx *influxtest.Server, from, to time.Time) map[loadgen.Key]loadgen.Cell {
	t.Helper()
	for range 3 {
		if got := queryInflux(t, influx, from, to); got != nil {
			return got
		}
	}
	t.Fatal("InfluxDB did not answer three times")
	return nil
}

// waitForTruth waits until InfluxDB holds the truth's cells of [from, to).
func waitForTruth(t *testing.T, influx *influxtest.Server, truth *loadgen.Truth, from, to time.Time) {
	t.Helper()
	want := truth.Cells()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := queryInflux(t, influx, from, to)
		diff := cellsEqual(got, want)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("InfluxDB never matched the ground truth: %s", diff)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// archiveConfig writes a copy of the aggregator's configuration pointing
// at influx and with an archive section for the S3 server.
func archiveConfig(t *testing.T, c *cluster, influx *influxtest.Server, s3 *s3test.Server, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "agg-1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), c.influx.URL(), influx.URL(), 1)
	if i := strings.Index(conf, "\narchive:"); i >= 0 {
		conf = conf[:i+1] // the scheduled export's section, replaced below
	}
	conf += fmt.Sprintf("archive:\n  target: s3://tally/e2e\n  s3: {endpoint: %q, access_key: %q, secret_key: %q, insecure: true, bucket_lookup: path}\n",
		s3.Endpoint(), s3.AccessKey(), s3.SecretKey())
	path := filepath.Join(c.dir, name)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runArchive runs `tally-aggregator archive ARGS` and returns its stdout;
// a non-zero exit fails the test.
func runArchive(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "tally-aggregator"), append([]string{"archive"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("archive %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, stderr.String())
	}
	t.Logf("archive %s:\n%s", args[0], out)
	return string(out)
}

// requireDuckDB returns the node binary, failing the test when DuckDB is
// not installed (make duckdb).
func requireDuckDB(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: run `make duckdb` (it installs Node.js and DuckDB)")
	}
	if _, err := os.Stat("duckdb/node_modules/@duckdb/node-api"); err != nil {
		t.Fatal("DuckDB for Node is not installed: run `make duckdb`")
	}
	return node
}

// checkDuckDBAgainstAPI downloads the archive's objects, reads them with
// DuckDB and compares each (day, campaign)'s totals with the KPI API and
// with the ground truth, exactly.
func checkDuckDBAgainstAPI(t *testing.T, c *cluster, s3 *s3test.Server, node string, truth *loadgen.Truth, days []time.Time) {
	t.Helper()
	dir := t.TempDir()
	mc, err := s3.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	n := 0
	for o := range mc.ListObjects(ctx, "tally", minio.ListObjectsOptions{Prefix: "e2e/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if err := mc.FGetObject(ctx, "tally", o.Key, filepath.Join(dir, strings.TrimPrefix(o.Key, "e2e/")), minio.GetObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 6 { // three days, one part and one manifest each
		t.Fatalf("%d objects in the archive", n)
	}
	cmd := exec.Command(node, "totals.mjs", dir)
	cmd.Dir = "duckdb"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("duckdb: %v\n%s", err, out)
	}
	var rows []map[string]string
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("duckdb output %q: %v", out, err)
	}
	num := func(r map[string]string, k string) int64 {
		v, err := strconv.ParseInt(r[k], 10, 64)
		if err != nil {
			t.Fatalf("duckdb %s = %q", k, r[k])
		}
		return v
	}
	// Ground truth per (day, campaign).
	type tot struct{ impressions, clicks, conversions, pageviews, bots, value, cost int64 }
	want := map[[2]string]*tot{}
	for k, cell := range truth.Cells() {
		key := [2]string{time.Unix(k.Minute, 0).UTC().Format(time.DateOnly), k.Campaign}
		w := want[key]
		if w == nil {
			w = &tot{}
			want[key] = w
		}
		switch k.Type {
		case "impression":
			w.impressions += int64(cell.Count)
		case "click":
			w.clicks += int64(cell.Count)
		case "conversion":
			w.conversions += int64(cell.Count)
		case "pageview":
			w.pageviews += int64(cell.Count)
		}
		w.bots += int64(cell.Bots)
		w.value += cell.ValueMicros
		w.cost += cell.CostMicros
	}
	if len(rows) != len(want) {
		t.Fatalf("duckdb has %d (day, campaign) rows, the truth %d", len(rows), len(want))
	}
	for _, r := range rows {
		day, _ := time.Parse(time.DateOnly, r["day"])
		got := tot{num(r, "impressions"), num(r, "clicks"), num(r, "conversions"), num(r, "pageviews"), num(r, "bots"),
			num(r, "value_micros"), num(r, "cost_micros")}
		w := want[[2]string{r["day"], r["campaign"]}]
		if w == nil || *w != got {
			t.Fatalf("%s %s: duckdb %+v, truth %+v", r["day"], r["campaign"], got, w)
		}
		k := kpis(t, c.aggHTTP, r["campaign"], day, day.Add(24*time.Hour))
		api := tot{int64(k["impressions"]), int64(k["clicks"]), int64(k["conversions"]), int64(k["pageviews"]), int64(k["bots_filtered"]), 0, 0}
		if api != (tot{got.impressions, got.clicks, got.conversions, got.pageviews, got.bots, 0, 0}) ||
			k["revenue"] != float64(got.value)/1e6 || k["cost"] != float64(got.cost)/1e6 {
			t.Fatalf("%s %s: duckdb %+v, API %v", r["day"], r["campaign"], got, k)
		}
	}
	t.Logf("DuckDB's totals of %d (day, campaign) pairs equal the API's and the truth", len(rows))
}
