package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator"
	aggconfig "github.com/tally-edge/tally/aggregator/config"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// BenchmarkClusterMerge measures the merge throughput of a cluster of
// real aggregator nodes (in this process, over QUIC with mutual TLS,
// writing to a real InfluxDB): eight agents each send every contribution
// of a round straight to its campaign's owner, with eight batches in
// flight per agent. A round is 8 agents × 64 campaigns × 10 series ×
// 2 minutes = 10,240 contributions, each carrying a new version and new
// HyperLogLog registers. It reports two rates: contributions acked (in the
// WAL and merged) per second, and per second until every node has also
// written every changed minute to InfluxDB; and, because every node of the
// benchmark shares this machine's cores, what says how the work divides:
// the CPU time of the process (nodes and clients) per contribution, and
// the busiest node's share of the contributions.
//
//	go test -run='^$' -bench=BenchmarkClusterMerge -benchtime=20x ./tests/bench/
func BenchmarkClusterMerge(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchClusterMerge(b, n) })
	}
}

const (
	benchAgents    = 8
	benchCampaigns = 64
	benchSeries    = 10
	benchMinutes   = 2
)

func benchClusterMerge(b *testing.B, nodes int) {
	influx := influxtest.Start(b)
	dir := b.TempDir()
	certs := filepath.Join(dir, "certs")
	var agents, names []string
	for i := range benchAgents {
		agents = append(agents, fmt.Sprintf("bench-agent-%d", i))
	}
	for i := range nodes {
		names = append(names, fmt.Sprintf("bench-agg-%d", i+1))
	}
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: agents, Aggregators: names}); err != nil {
		b.Fatal(err)
	}
	tcp, err := harness.FreeTCP(2 * nodes)
	if err != nil {
		b.Fatal(err)
	}
	var seeds []string
	for i := range nodes {
		seeds = append(seeds, fmt.Sprintf("127.0.0.1:%d", tcp[nodes+i]))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() { cancel(); running.Wait() }()
	httpAddrs := make([]string, nodes)
	var members []wire.Member
	for i, name := range names {
		cfg := aggconfig.DefaultConfig()
		files := pki.DevFiles(certs, name)
		cfg.Name, cfg.DataDir = name, filepath.Join(dir, name)
		cfg.QUIC.Listen, cfg.QUIC.CA, cfg.QUIC.Cert, cfg.QUIC.Key = "127.0.0.1:0", files.CA, files.Cert, files.Key
		cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", tcp[i])
		cfg.Influx.URL, cfg.Influx.Bucket = influx.URL(), influx.Bucket()
		cfg.Merge.WriteInterval = 200 * time.Millisecond
		cfg.Auth.Tokens = []aggconfig.Token{{Token: harness.DefaultAdminToken, Subject: "bench", Role: "admin"}}
		if nodes > 1 {
			cfg.Cluster.Bind, cfg.Cluster.Seeds, cfg.Cluster.Profile = seeds[i], seeds, "local"
		}
		addrs := make(chan aggregator.Addrs, 1)
		running.Go(func() {
			if err := aggregator.Run(ctx, cfg, slog.New(slog.DiscardHandler), func(a aggregator.Addrs) { addrs <- a }); err != nil {
				b.Error(err)
			}
		})
		a := <-addrs
		httpAddrs[i] = a.HTTP
		members = append(members, wire.Member{Name: name, Addr: a.QUIC})
	}
	for _, h := range httpAddrs {
		waitReady(b, h, nodes)
	}

	// One client per (agent, node).
	clients := make([][]*wire.Client, benchAgents)
	for ai, agent := range agents {
		tlsConf, err := pki.ClientTLS(pki.DevFiles(certs, agent), "localhost", wire.ALPN)
		if err != nil {
			b.Fatal(err)
		}
		for _, m := range members {
			c, err := wire.Dial(ctx, m.Addr, tlsConf, wire.ClientConfig{Compress: true})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			clients[ai] = append(clients[ai], c)
		}
	}
	owner := map[string]int{}
	for c := range benchCampaigns {
		campaign := fmt.Sprintf("campaign-%02d", c)
		m, _ := wire.Owner(members, campaign)
		for i := range members {
			if members[i] == m {
				owner[campaign] = i
			}
		}
	}
	minute0 := time.Now().Truncate(time.Minute).Add(-time.Minute).Unix()

	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	var seq uint64
	for round := range b.N {
		var wg sync.WaitGroup
		for ai := range agents {
			// Batches per owner: 128 contributions each.
			byOwner := make([][]wire.Contribution, nodes)
			for c := range benchCampaigns {
				campaign := fmt.Sprintf("campaign-%02d", c)
				for s := range benchSeries {
					for m := range benchMinutes {
						byOwner[owner[campaign]] = append(byOwner[owner[campaign]], benchContribution(b, ai, campaign, s, minute0+int64(60*m), round))
					}
				}
			}
			for ni, cs := range byOwner {
				for len(cs) > 0 {
					part := cs[:min(128, len(cs))]
					cs = cs[len(part):]
					seq++
					batch := &wire.Batch{Version: wire.ProtocolVersion, Agent: agents[ai], Region: "bench", Seq: seq, Contributions: part}
					wg.Go(func() {
						ack, err := clients[ai][ni].Send(ctx, batch)
						if err != nil || ack.Status != wire.AckOK {
							b.Errorf("send: %v %+v", err, ack)
						}
					})
				}
			}
		}
		wg.Wait()
	}
	acked := time.Since(start)
	for _, h := range httpAddrs {
		waitWritten(b, h)
	}
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	total := float64(b.N * benchAgents * benchCampaigns * benchSeries * benchMinutes)
	b.ReportMetric(total/acked.Seconds(), "acked-contribs/s")
	b.ReportMetric(total/elapsed.Seconds(), "written-contribs/s")
	b.ReportMetric(float64(cpu.Microseconds())/total, "cpu-µs/contrib")
	var busiest float64
	for _, h := range httpAddrs {
		busiest = max(busiest, metricValue(get(h+"/metrics"), "tally_aggregator_contributions_total"))
	}
	b.ReportMetric(busiest/total, "busiest-node-share")
	b.ReportMetric(0, "ns/op")
}

// benchContribution is agent ai's state of one series-minute in a round:
// a count that grows with the round and a few new visitors per round.
func benchContribution(b *testing.B, ai int, campaign string, s int, minute int64, round int) wire.Contribution {
	var st sketch.State
	st.Count = uint64(10 * (round + 1))
	var regs sketch.Registers
	for v := range 8 {
		regs.Add(mixHash(uint64(ai)<<40 | uint64(s)<<24 | uint64(round)<<8 | uint64(v)))
	}
	enc, err := st.Encode()
	if err != nil {
		b.Fatal(err)
	}
	enc.Registers = regs.AppendUpdates(nil)
	return wire.Contribution{Series: sketch.Series{Campaign: campaign, Source: fmt.Sprintf("src-%d", s%8), Medium: "cpc",
		Type: "click", Country: fmt.Sprintf("C%d", s/8), Device: "desktop", Region: "bench"},
		Minute: minute, CID: uint64(ai+1)<<32 | uint64(s), Version: uint64(round + 1), State: enc}
}

func mixHash(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// waitReady waits until a node is ready and sees all nodes.
func waitReady(b *testing.B, hostport string, nodes int) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + hostport + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 && membersSeen(hostport) >= nodes {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("%s never became ready", hostport)
}

func membersSeen(hostport string) int {
	body := get(hostport + "/metrics")
	return strings.Count(body, "tally_aggregator_cluster_member{")
}

// waitWritten waits until a node has no dirty minutes left.
func waitWritten(b *testing.B, hostport string) {
	deadline := time.Now().Add(120 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(get(hostport+"/metrics"), "\n") {
			if line == "tally_aggregator_dirty_minutes 0" {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s never wrote everything", hostport)
}

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// metricValue is the value of an unlabelled metric in a /metrics body.
func metricValue(body, name string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

func get(url string) string {
	resp, err := http.Get("http://" + url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
