package bench

// How fast and in how much memory `tally-agent import-log` backfills nginx
// access logs, next to GoAccess reading the same file. Reproduce with
// (goaccess and taskset come from Debian's goaccess and util-linux):
//
//	go test -run='^$' -bench=BenchmarkImportLog -benchtime=1x ./tests/bench/
//
// With TALLY_BENCH_BASELINE=<git revision> it also builds that revision's
// tally-agent and runs it on the same file, alternately with this tree's,
// and reports baseline_cpu_lines/s and tree_vs_baseline_per_cpu;
// TALLY_BENCH_GOACCESS=off then skips GoAccess, the slowest part.
//
// and profile the same work in-process on one core with
//
//	go test -run='^$' -bench=BenchmarkImportInProcess -benchtime=1x -cpu=1 -cpuprofile=/tmp/import.cpu ./tests/bench/
//	go tool pprof -top -focus='backfill\.Import' /tmp/import.cpu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/backfill"
	"github.com/tally-edge/tally/agent/config"
	"github.com/tally-edge/tally/agent/logparse"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

const (
	// dayLines is the size of the main log: a busy shop's day.
	dayLines = 1_000_000
	// wideCampaigns × wideSources distinct series, all active in each of
	// the wideSpan's minutes.
	wideCampaigns, wideSources = 2000, 50
	wideSpan                   = 4 * time.Minute
)

// BenchmarkImportLog runs `tally-agent import-log -progress never` as a
// subprocess pinned to one core, shipping over QUIC with mutual TLS to an
// in-process server that acknowledges every batch, and reports:
//
//   - lines/s: the figure import-log prints (reading, parsing, bot
//     filtering and rollup; not process start nor the wait for acks);
//   - wall_s and wall_lines/s: the whole command, start to last ack;
//   - cpu_s and cpu_lines/s: the subprocess's CPU time (user + system),
//     start to last ack, and the lines per second of it: the per-core
//     figure that other work on a shared machine does not move;
//   - peak_rss_MiB: the subprocess's maximum resident set (getrusage);
//   - goaccess_lines/s, goaccess_wall_s, goaccess_peak_rss_MiB: GoAccess
//     1.7 on the same file, same pinning, crawlers ignored, JSON report;
//   - tally_vs_goaccess_speed: wall_lines/s over goaccess_lines/s, both
//     whole-command figures.
//
// Two logs: "day" is 1,000,000 combined lines over 24 h (UTM landings,
// 302 ad clicks, assets, 404s, POSTs, HEADs, ~5 % crawlers, a few TLS
// handshakes); "100k_series" is 1,000,000 page views over 4 minutes in
// 2,000 campaigns × 50 sources, every series active every minute, with
// the cardinality guard off (max_campaigns/sources/mediums: -1) so that
// they stay 100k series instead of folding into (other).
func BenchmarkImportLog(b *testing.B) {
	if testing.Short() {
		b.Skip("builds tally-agent and writes 500 MB of logs")
	}
	dir := b.TempDir()
	bin := agentBinary(b, filepath.Join(dir, "tree"), "")
	baseline := ""
	if rev := os.Getenv("TALLY_BENCH_BASELINE"); rev != "" {
		baseline = agentBinary(b, filepath.Join(dir, "baseline"), rev)
	}
	srv := startAckServer(b, dir)
	pin := oneCore()
	end := time.Now().UTC().Truncate(24 * time.Hour) // yesterday, whole

	b.Run("day", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "access.log")
		tr, err := writeDayLog(path, dayLines, end)
		if err != nil {
			b.Fatal(err)
		}
		benchImportLog(b, bin, baseline, srv, pin, path, tr, false)
	})
	b.Run("100k_series", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "wide.log")
		tr, err := writeWideLog(path, dayLines, wideCampaigns, wideSources, wideSpan, end)
		if err != nil {
			b.Fatal(err)
		}
		benchImportLog(b, bin, baseline, srv, pin, path, tr, true)
	})
}

func benchImportLog(b *testing.B, bin, baselineBin string, srv *ackServer, pin pinning, path string, tr logTruth, unlimited bool) {
	dir := b.TempDir()
	b.SetBytes(tr.Bytes)
	var run, base importRun
	one := func(bin, name string, i int) importRun {
		cfg := filepath.Join(dir, fmt.Sprintf("%s-%d.yaml", name, i))
		if err := srv.writeAgentConfig(cfg, filepath.Join(dir, fmt.Sprintf("state-%s-%d", name, i)), unlimited); err != nil {
			b.Fatal(err)
		}
		srv.reset() // a fresh state dir reuses contribution ids
		r, err := runImportLog(bin, pin, cfg, path)
		if err != nil {
			b.Fatal(err)
		}
		if r.lines != tr.Lines || r.events != tr.Events || r.bots != tr.Bots {
			b.Fatalf("%s import-log counted %d lines, %d events, %d bots; the log has %d, %d, %d\n%s", name, r.lines, r.events, r.bots,
				tr.Lines, tr.Events, tr.Bots, r.stdout)
		}
		if events, bots, cids := srv.totals(); events != uint64(tr.Events) || bots != uint64(tr.Bots) {
			b.Fatalf("%s: the server got %d events and %d bots in %d contributions, want %d and %d", name, events, bots, cids, tr.Events, tr.Bots)
		}
		return r
	}
	b.ResetTimer()
	for i := range b.N {
		b.StartTimer()
		run.add(one(bin, "tree", i))
		b.StopTimer()
		if baselineBin != "" {
			base.add(one(baselineBin, "baseline", i))
		}
	}
	n := float64(b.N)
	_, _, cids := srv.totals()
	b.ReportMetric(run.linesPerSec/n, "lines/s")
	b.ReportMetric(run.wall.Seconds()/n, "wall_s")
	b.ReportMetric(float64(tr.Lines)*n/run.wall.Seconds(), "wall_lines/s")
	b.ReportMetric(run.cpu.Seconds()/n, "cpu_s")
	b.ReportMetric(float64(tr.Lines)*n/run.cpu.Seconds(), "cpu_lines/s")
	b.ReportMetric(float64(run.maxRSS)/1024, "peak_rss_MiB")
	if baselineBin != "" {
		b.ReportMetric(float64(tr.Lines)*n/base.cpu.Seconds(), "baseline_cpu_lines/s")
		b.ReportMetric(base.cpu.Seconds()/run.cpu.Seconds(), "tree_vs_baseline_per_cpu")
	}
	b.Logf("import-log pinned with %s: %d lines (%.0f MB): %d events, %d bots, %d skipped, %d rejected; %d contributions shipped",
		pin, tr.Lines, float64(tr.Bytes)/1e6, tr.Events, tr.Bots, tr.Skipped, tr.Rejected, cids)

	if os.Getenv("TALLY_BENCH_GOACCESS") == "off" {
		return // comparing revisions only
	}
	ga, err := exec.LookPath("goaccess")
	if err != nil {
		b.Logf("goaccess not found: no comparison (apt-get install goaccess)")
		return
	}
	g, err := runGoAccess(ga, pin, path, filepath.Join(dir, "goaccess.json"))
	if err != nil {
		b.Fatal(err)
	}
	if g.total != tr.Lines {
		b.Fatalf("goaccess read %d requests, the log has %d lines", g.total, tr.Lines)
	}
	gaRate := float64(tr.Lines) / g.wall.Seconds()
	b.ReportMetric(gaRate, "goaccess_lines/s")
	// Per CPU-second, the figure other work on a shared machine does not
	// move: both pinned to one core, both measured by getrusage.
	gaCPU := float64(tr.Lines) / g.cpu.Seconds()
	b.ReportMetric(gaCPU, "goaccess_cpu_lines/s")
	b.ReportMetric(float64(tr.Lines)*n/run.cpu.Seconds()/gaCPU, "tally_vs_goaccess_per_cpu")
	if baselineBin != "" {
		b.ReportMetric(float64(tr.Lines)*n/base.cpu.Seconds()/gaCPU, "baseline_vs_goaccess_per_cpu")
	}
	b.ReportMetric(g.wall.Seconds(), "goaccess_wall_s")
	b.ReportMetric(float64(g.maxRSS)/1024, "goaccess_peak_rss_MiB")
	b.ReportMetric(float64(tr.Lines)*n/run.wall.Seconds()/gaRate, "tally_vs_goaccess_speed")
}

// pinning is how a subprocess is held to one core: a command prefix
// (taskset) or, without one, an environment variable (GOMAXPROCS=1, which
// bounds Go's parallelism but not its placement; goaccess is then not
// pinned at all).
type pinning struct {
	prefix []string
	env    []string
}

func (p pinning) String() string {
	if len(p.prefix) > 0 {
		return fmt.Sprint(p.prefix)
	}
	return fmt.Sprint(p.env)
}

func (p pinning) command(name string, args ...string) *exec.Cmd {
	all := append(append(append([]string{}, p.prefix...), name), args...)
	cmd := exec.Command(all[0], all[1:]...)
	cmd.Env = append(os.Environ(), p.env...)
	return cmd
}

// oneCore pins to CPU 0 with taskset when it exists and is allowed to
// (a container's cpuset may exclude CPU 0), else sets GOMAXPROCS=1. Under
// taskset the Go runtime sees one CPU and sets GOMAXPROCS=1 itself.
func oneCore() pinning {
	if p, err := exec.LookPath("taskset"); err == nil && exec.Command(p, "-c", "0", "true").Run() == nil {
		return pinning{prefix: []string{p, "-c", "0"}}
	}
	return pinning{env: []string{"GOMAXPROCS=1"}}
}

// importRun is one import-log run as seen from outside.
type importRun struct {
	lines, events, bots int
	linesPerSec         float64
	wall, cpu           time.Duration
	maxRSS              int64 // KiB
	stdout              string
}

func (r *importRun) add(o importRun) {
	r.linesPerSec += o.linesPerSec
	r.wall += o.wall
	r.cpu += o.cpu
	r.maxRSS = max(r.maxRSS, o.maxRSS)
}

var (
	summaryLines  = regexp.MustCompile(`: (\d+) lines \(.*, (\d+) lines/s`)
	summaryEvents = regexp.MustCompile(`(?m)^\s+events:\s+(\d+)`)
	summaryBots   = regexp.MustCompile(`(?m)^\s+bots:\s+(\d+)`)
)

func runImportLog(bin string, pin pinning, cfg, path string) (importRun, error) {
	var r importRun
	cmd := pin.command(bin, "import-log", "-config", cfg, "-format", "combined", "-site", "shop.example.com", "-progress", "never", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r.wall = time.Since(start)
	r.stdout = stdout.String()
	if err != nil {
		return r, fmt.Errorf("import-log: %w\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	r.maxRSS = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m, e, bt := summaryLines.FindStringSubmatch(r.stdout), summaryEvents.FindStringSubmatch(r.stdout), summaryBots.FindStringSubmatch(r.stdout)
	if m == nil || e == nil || bt == nil {
		return r, fmt.Errorf("import-log printed no summary I can read:\n%s", r.stdout)
	}
	r.lines, _ = strconv.Atoi(m[1])
	r.linesPerSec, _ = strconv.ParseFloat(m[2], 64)
	r.events, _ = strconv.Atoi(e[1])
	r.bots, _ = strconv.Atoi(bt[1])
	return r, nil
}

// goAccessRun is one GoAccess run.
type goAccessRun struct {
	total     int
	wall, cpu time.Duration
	maxRSS    int64 // KiB
}

// runGoAccess parses path into a JSON report: with -o GoAccess runs
// without a terminal. --no-global-config keeps /etc/goaccess out of the
// measurement; --ignore-crawlers is its bot filter.
func runGoAccess(bin string, pin pinning, path, report string) (goAccessRun, error) {
	var g goAccessRun
	cmd := pin.command(bin, "--no-global-config", "--log-format=COMBINED", "--ignore-crawlers", "--no-progress", "-o", report, path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	g.wall = time.Since(start)
	if err != nil {
		return g, fmt.Errorf("goaccess: %w\n%s", err, out.Bytes())
	}
	g.maxRSS = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	g.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	raw, err := os.ReadFile(report)
	if err != nil {
		return g, err
	}
	var rep struct {
		General struct {
			Total    int `json:"total_requests"`
			Excluded int `json:"excluded_hits"`
		} `json:"general"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		return g, fmt.Errorf("goaccess report: %w", err)
	}
	// Crawlers ignored are counted apart from the requests kept.
	g.total = rep.General.Total + rep.General.Excluded
	return g, nil
}

// ackServer is an aggregator stand-in: it acknowledges every batch and
// keeps, per contribution id, the highest version's counts, so a run can
// be checked against the log it read.
type ackServer struct {
	srv   *wire.Server
	certs string

	mu    sync.Mutex
	state map[uint64]shipped
}

type shipped struct{ version, events, bots uint64 }

func startAckServer(b *testing.B, dir string) *ackServer {
	b.Helper()
	s := &ackServer{certs: filepath.Join(dir, "certs"), state: map[uint64]shipped{}}
	if _, err := pki.GenerateDev(s.certs, pki.DevOptions{Agents: []string{"agent-bench"}, Aggregators: []string{"agg-bench"}}); err != nil {
		b.Fatal(err)
	}
	tlsConf, err := pki.ServerTLS(pki.DevFiles(s.certs, "agg-bench"), wire.ALPN)
	if err != nil {
		b.Fatal(err)
	}
	s.srv, err = wire.NewServer(wire.ServerConfig{Addr: "127.0.0.1:0", TLS: tlsConf,
		Handler: wire.HandlerFunc(func(_ context.Context, _ wire.Peer, bt *wire.Batch) wire.Ack {
			s.mu.Lock()
			for i := range bt.Contributions {
				c := &bt.Contributions[i]
				if c.Version > s.state[c.CID].version {
					var bots uint64
					for _, n := range c.State.Bots {
						bots += n
					}
					s.state[c.CID] = shipped{c.Version, c.State.Count, bots}
				}
			}
			s.mu.Unlock()
			return wire.Ack{Version: wire.ProtocolVersion, Seq: bt.Seq, Status: wire.AckOK}
		})})
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	go s.srv.Serve(ctx)
	b.Cleanup(func() { stop(); s.srv.Close() })
	return s
}

func (s *ackServer) reset() {
	s.mu.Lock()
	s.state = map[uint64]shipped{}
	s.mu.Unlock()
}

// totals sums the latest version of every contribution.
func (s *ackServer) totals() (events, bots uint64, cids int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.state {
		events += c.events
		bots += c.bots
	}
	return events, bots, len(s.state)
}

// config returns the agent configuration import-log runs with; unlimited
// turns the cardinality guard off.
func (s *ackServer) config(stateDir string, unlimited bool) config.Config {
	cfg := config.DefaultConfig()
	cfg.Name, cfg.Region, cfg.StateDir = "agent-bench", "eu", stateDir
	cfg.Aggregator.Addrs, cfg.Aggregator.ServerName = []string{s.srv.Addr().String()}, "localhost"
	f := pki.DevFiles(s.certs, "agent-bench")
	cfg.Aggregator.CA, cfg.Aggregator.Cert, cfg.Aggregator.Key = f.CA, f.Cert, f.Key
	cfg.Privacy.Secret = "bench-secret-0123456789"
	if unlimited {
		cfg.Cardinality.MaxCampaigns, cfg.Cardinality.MaxSources, cfg.Cardinality.MaxMediums = -1, -1, -1
	}
	return cfg
}

// writeAgentConfig writes config(stateDir, unlimited) as the YAML file a
// user would write.
func (s *ackServer) writeAgentConfig(path, stateDir string, unlimited bool) error {
	c := s.config(stateDir, unlimited)
	yaml := fmt.Sprintf(`# written by BenchmarkImportLog
name: %s
region: %s
state_dir: %q
aggregator:
  addrs: [%q]
  server_name: localhost
  ca: %q
  cert: %q
  key: %q
privacy:
  secret: %s
`, c.Name, c.Region, c.StateDir, c.Aggregator.Addrs[0], c.Aggregator.CA, c.Aggregator.Cert, c.Aggregator.Key, c.Privacy.Secret)
	if unlimited {
		yaml += "# 2,000 campaigns: keep every series instead of folding beyond 1,000 per minute.\n" +
			"cardinality: {max_campaigns: -1, max_sources: -1, max_mediums: -1}\n"
	}
	return os.WriteFile(path, []byte(yaml), 0o644)
}

// BenchmarkImportInProcess is BenchmarkImportLog's "day" import through
// backfill.Import in this process, for CPU profiles (-cpuprofile; the log is
// written before the timer starts but inside the profile, so focus the
// profile on backfill.Import). Run it with -cpu=1 for the one-core figure.
func BenchmarkImportInProcess(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 250 MB of logs")
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "access.log")
	tr, err := writeDayLog(path, dayLines, time.Now().UTC().Truncate(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	srv := startAckServer(b, dir)
	spec := logparse.DefaultSpec()
	spec.Format, spec.Site = "combined", "shop.example.com"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.SetBytes(tr.Bytes)
	b.ReportAllocs()
	var rate float64
	b.ResetTimer()
	for i := range b.N {
		cfg := srv.config(filepath.Join(dir, fmt.Sprintf("state-%d", i)), false)
		if err := cfg.Validate(); err != nil {
			b.Fatal(err)
		}
		sum, err := backfill.Import(context.Background(), cfg, backfill.ImportOptions{Files: []string{path}, Parse: spec}, logger)
		if err != nil {
			b.Fatal(err)
		}
		if sum.Lines != uint64(tr.Lines) || sum.Events != uint64(tr.Events) || sum.Bots != uint64(tr.Bots) {
			b.Fatalf("summary %+v, want %+v", sum, tr)
		}
		rate += sum.LinesPerSecond()
	}
	b.ReportMetric(rate/float64(b.N), "lines/s")
}
