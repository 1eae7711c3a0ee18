package bench

// How soon a backfill is visible: `tally-agent import-log` of a one-hour,
// 50-campaign combined log into a three-node cluster (real processes,
// real InfluxDB), and the time from import-log returning until the KPI
// API shows every campaign exactly. Reproduce with
//
//	go test -run='^$' -bench=BenchmarkBackfillVisibility -benchtime=1x -timeout=30m ./tests/bench/
//
// TALLY_BENCH_BACKFILL_LINES scales the log (default 2,000,000) for quick
// runs; TALLY_BENCH_DEBUG=1 logs every node's pending loads, dirty
// minutes and writes while it waits. TALLY_BENCH_BASELINE_BIN names a directory with another
// release's tally-agent and tally-aggregator, which then run the same
// benchmark first, as the "baseline" sub-benchmark:
// tests/bench/backfill_baseline.sh builds them from a git revision and
// runs both in one go.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
)

const (
	backfillCampaigns = 50
	backfillSources   = 10
	backfillNodes     = 3
)

// BenchmarkBackfillVisibility reports, for each set of binaries:
//
//   - import_s: import-log's wall time, start to its last acknowledgement;
//   - visible_s: from import-log returning until GET /api/v1/campaigns
//     shows every campaign's page views exactly (polled every 100 ms);
//   - forward_timeouts: node log lines of hand-overs to owners that ran
//     out of time; late_busy: batches answered busy because late minutes
//     could not be loaded (both should be 0).
func BenchmarkBackfillVisibility(b *testing.B) {
	if testing.Short() {
		b.Skip("builds binaries, writes a large log and runs a cluster")
	}
	lines := 2_000_000
	if s := os.Getenv("TALLY_BENCH_BACKFILL_LINES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < backfillCampaigns*backfillSources {
			b.Fatalf("TALLY_BENCH_BACKFILL_LINES=%q: want a number of at least %d", s, backfillCampaigns*backfillSources)
		}
		lines = n
	}
	dir := b.TempDir()
	// A past hour, older than the aggregator's one-hour lateness window:
	// every minute is late data for the cluster.
	end := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Hour)
	path := filepath.Join(dir, "hour.log")
	if _, err := writeWideLog(path, lines, backfillCampaigns, backfillSources, time.Hour, end); err != nil {
		b.Fatal(err)
	}
	truth := map[string]uint64{}
	for i := range lines {
		truth["c"+strconv.Itoa(i%(backfillCampaigns*backfillSources)/backfillSources)]++
	}
	if base := os.Getenv("TALLY_BENCH_BASELINE_BIN"); base != "" {
		b.Run("baseline", func(b *testing.B) { benchBackfill(b, base, path, end, truth) })
	}
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/tally-edge/tally/agent/cmd/tally-agent",
		"github.com/tally-edge/tally/aggregator/cmd/tally-aggregator")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	b.Run("current", func(b *testing.B) { benchBackfill(b, bin, path, end, truth) })
}

func benchBackfill(b *testing.B, bin, logPath string, end time.Time, truth map[string]uint64) {
	var importS, visibleS, forwardTimeouts, lateBusy float64
	for range b.N {
		b.StopTimer()
		r := runBackfill(b, bin, logPath, end, time.Hour, truth, influxtest.Options{}, nil)
		b.StartTimer()
		importS += r.imported.Seconds()
		visibleS += r.visible.Seconds()
		forwardTimeouts += float64(r.forwardTimeouts)
		lateBusy += float64(r.lateBusy)
	}
	n := float64(b.N)
	b.ReportMetric(importS/n, "import_s")
	b.ReportMetric(visibleS/n, "visible_s")
	b.ReportMetric(forwardTimeouts/n, "forward_timeouts")
	b.ReportMetric(lateBusy/n, "late_busy")
	b.ReportMetric(0, "ns/op")
}

type backfillRun struct {
	imported, visible         time.Duration
	forwardTimeouts, lateBusy int
}

// runBackfill runs one import into a fresh InfluxDB (started with opts)
// and cluster; after, if not nil, runs once every campaign is exact in
// the API, while the cluster still runs, with the nodes' HTTP addresses.
func runBackfill(b *testing.B, bin, logPath string, end time.Time, span time.Duration, truth map[string]uint64, opts influxtest.Options,
	after func(s *influxtest.Server, https []string)) backfillRun {
	var r backfillRun
	dir := b.TempDir()
	influx := influxtest.StartWith(b, opts)
	certs := filepath.Join(dir, "certs")
	var names []string
	for i := range backfillNodes {
		names = append(names, fmt.Sprintf("agg-%d", i+1))
	}
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-bench"}, Aggregators: names}); err != nil {
		b.Fatal(err)
	}
	tcp, err := harness.FreeTCP(2 * backfillNodes)
	if err != nil {
		b.Fatal(err)
	}
	udp, err := harness.FreeUDP(backfillNodes)
	if err != nil {
		b.Fatal(err)
	}
	var seeds, quics, https []string
	for i := range backfillNodes {
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", tcp[backfillNodes+i]))
		quics = append(quics, fmt.Sprintf("127.0.0.1:%d", udp[i]))
		https = append(https, fmt.Sprintf("127.0.0.1:%d", tcp[i]))
	}
	var procs []*harness.Proc
	b.Cleanup(func() {
		for _, p := range procs {
			_ = p.Stop(30 * time.Second)
		}
	})
	for i, name := range names {
		cfg := filepath.Join(dir, name+".yaml")
		if err := harness.WriteAggregatorConfig(cfg, harness.AggregatorOptions{Name: name, DataDir: filepath.Join(dir, name),
			QUICAddr: quics[i], HTTPAddr: https[i], CertsDir: certs, InfluxURL: influx.URL(), InfluxBucket: influx.Bucket(),
			WriteInterval: time.Second, GossipAddr: seeds[i], Seeds: seeds}); err != nil {
			b.Fatal(err)
		}
		p := &harness.Proc{Name: name, Bin: filepath.Join(bin, "tally-aggregator"), Args: []string{"-config", cfg},
			LogPath: filepath.Join(dir, name+".log")}
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for i, h := range https {
		if err := harness.WaitHTTP(ctx, "http://"+h+"/readyz", procs[i]); err != nil {
			b.Fatal(err)
		}
	}
	for _, h := range https {
		for membersSeen(h) < backfillNodes {
			if ctx.Err() != nil {
				b.Fatal("the nodes never saw each other")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	agentCfg := filepath.Join(dir, "agent.yaml")
	f := pki.DevFiles(certs, "agent-bench")
	yaml := fmt.Sprintf(`# written by BenchmarkBackfillVisibility
name: agent-bench
region: eu
state_dir: %q
aggregator:
  addrs: [%s]
  server_name: localhost
  ca: %q
  cert: %q
  key: %q
privacy:
  secret: bench-secret-0123456789
`, filepath.Join(dir, "agent"), strings.Join(quics, ", "), f.CA, f.Cert, f.Key)
	if err := os.WriteFile(agentCfg, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tally-agent"), "import-log", "-config", agentCfg, "-format", "combined",
		"-site", "shop.example.com", "-progress", "never", logPath)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	r.imported = time.Since(start)
	if err != nil {
		b.Fatalf("import-log: %v\n%s", err, out)
	}
	returned := time.Now()
	from, to := end.Add(-span), end.Add(time.Minute)
	var settled time.Duration // when every node had nothing left to load or write
	for {
		if settled == 0 {
			idle := true
			for _, h := range https {
				body := get(h + "/metrics")
				if !strings.Contains(body, "\ntally_aggregator_dirty_minutes 0\n") ||
					(strings.Contains(body, "tally_aggregator_late_loads_pending") && !strings.Contains(body, "\ntally_aggregator_late_loads_pending 0\n")) {
					idle = false
				}
			}
			if idle {
				settled = time.Since(returned)
			}
		}
		if os.Getenv("TALLY_BENCH_DEBUG") != "" {
			var parts []string
			for _, h := range https {
				body := get(h + "/metrics")
				parts = append(parts, fmt.Sprintf("pending=%v dirty=%v loads=%v q=%v writes=%v", metricValue(body, "tally_aggregator_late_loads_pending"),
					metricValue(body, "tally_aggregator_dirty_minutes"), metricValue(body, "tally_aggregator_late_minute_loads_total"),
					metricValue(body, "tally_aggregator_wal_bytes"), metricValue(body, "tally_aggregator_minutes_written_total")))
			}
			b.Logf("%s: %s", time.Since(returned).Round(100*time.Millisecond), strings.Join(parts, " | "))
		}
		got, err := campaignPageviews(https[0], from, to)
		exact := err == nil && len(got) == len(truth)
		for c, n := range truth {
			if got[c] != n {
				exact = false
			}
		}
		if exact {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("the API never showed every campaign exactly: %v (%v)", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.visible = time.Since(returned)
	b.Logf("nodes idle (nothing to load or write) %s after import-log returned", settled.Round(time.Millisecond))
	for _, p := range procs {
		log, _ := os.ReadFile(p.LogPath)
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "hand over to owners") && strings.Contains(line, "deadline exceeded") {
				r.forwardTimeouts++
			}
			if strings.Contains(line, "cannot load late minutes") {
				r.lateBusy++
			}
		}
	}
	b.Logf("%s: import-log %s, every campaign exact in the API %s later; %d forward timeouts, %d late-data busy answers",
		bin, r.imported.Round(time.Millisecond), r.visible.Round(time.Millisecond), r.forwardTimeouts, r.lateBusy)
	if after != nil {
		after(influx, https)
	}
	return r
}

// campaignPageviews asks a node for every campaign's page views in
// [from, to).
func campaignPageviews(hostport string, from, to time.Time) (map[string]uint64, error) {
	q := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	req, err := http.NewRequest(http.MethodGet, "http://"+hostport+"/api/v1/campaigns?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var body struct {
		Campaigns []struct {
			Campaign string `json:"campaign"`
			KPIs     struct {
				Pageviews uint64 `json:"pageviews"`
			} `json:"kpis"`
		} `json:"campaigns"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for _, c := range body.Campaigns {
		out[c.Campaign] = c.KPIs.Pageviews
	}
	return out, nil
}
