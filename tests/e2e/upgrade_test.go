package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

// upgradeVersion is the version the upgraded aggregator binary is stamped
// with (-ldflags -X, as make release stamps releases).
const upgradeVersion = "99.0.0-rolling"

// TestRollingUpgrade upgrades a three-node cluster node by node while an
// agent sends traffic, as docs/operations.md tells operators to: stop one
// node gracefully (it writes what it merged, hands its campaigns over and
// leaves), start the new binary on the same data directory, wait until it
// is ready and every node sees three members, then the next. Every node
// reports the new version in tally_aggregator_build_info afterwards, and
// InfluxDB holds exactly the events the agent accepted: every (campaign,
// type, minute) count and sum equals ground truth, and every node answers
// the same KPIs.
//
// Both binaries are built from this tree (the new one stamped with
// upgradeVersion): the test proves the procedure loses nothing; the wire
// protocol's compatibility between releases is its ALPN version's job.
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: needs built binaries and InfluxDB")
	}
	newBin := filepath.Join(t.TempDir(), "new")
	if err := harness.Build(newBin, []string{"-ldflags", "-X github.com/tally-edge/tally/internal/buildinfo.version=" + upgradeVersion},
		harness.AggregatorPkg); err != nil {
		t.Fatal(err)
	}
	names := []string{"agg-1", "agg-2", "agg-3"}
	c := &aggCluster{t: t, dir: t.TempDir(), nodes: map[string]*aggNode{}}
	c.influx = influxtest.StartWith(t, influxtest.Options{DisableFlux: true})
	c.certs = filepath.Join(c.dir, "certs")
	if _, err := pki.GenerateDev(c.certs, pki.DevOptions{Agents: []string{"edge-1"}, Aggregators: names}); err != nil {
		t.Fatal(err)
	}
	var quics []string
	for _, name := range names {
		n := c.addNode(name)
		c.seeds = append(c.seeds, n.gossip)
		quics = append(quics, n.quic)
	}
	for _, name := range names {
		c.configure(c.nodes[name])
	}
	c.startTogether(names...)
	waitAlive(t, c, 30*time.Second, names...)

	tcp, err := harness.FreeTCP(1)
	if err != nil {
		t.Fatal(err)
	}
	a := &agentProc{name: "edge-1", http: fmt.Sprintf("127.0.0.1:%d", tcp[0])}
	agentCfg := filepath.Join(c.dir, "edge-1.yaml")
	if err := harness.WriteAgentConfig(agentCfg, harness.AgentOptions{Name: a.name, Region: "region-1", StateDir: filepath.Join(c.dir, a.name),
		HTTPAddr: a.http, Aggregators: quics, CertsDir: c.certs, Secret: testSecret, FlushInterval: time.Second,
		ShipExtra: "send_timeout: 5s\nbackoff_max: 1s"}); err != nil {
		t.Fatal(err)
	}
	a.proc = &harness.Proc{Name: a.name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", agentCfg},
		LogPath: filepath.Join(c.dir, a.name+".log")}
	if err := a.proc.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := harness.WaitHTTP(ctx, "http://"+a.http+"/healthz", a.proc); err != nil {
		t.Fatal(err)
	}
	cancel()
	c.agents = append(c.agents, a)
	t.Cleanup(func() {
		_ = a.proc.Stop(20 * time.Second)
		for _, n := range c.nodes {
			if n.proc.Running() {
				_ = n.proc.Stop(30 * time.Second)
			}
		}
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("---- %s log tail ----\n%s", n.name, n.proc.LogTail(30))
			}
			t.Logf("---- %s log tail ----\n%s", a.name, a.proc.LogTail(30))
		}
	})

	// Traffic: batches of 200 every 100 ms, timestamps up to 60 s back
	// (out of order), until stopped.
	gen := loadgen.New(loadgen.Config{Seed: 17, Campaigns: 9, Countries: 3, Channels: 3})
	truth := loadgen.NewTruth()
	stop := make(chan struct{})
	var sent atomic.Int64
	client := &loadgen.Client{URL: a.eventsURL(), HTTP: agentClient(a), Token: harness.DefaultServerToken}
	var traffic sync.WaitGroup
	traffic.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			now := time.Now()
			evs := make([]loadgen.Event, 200)
			for j := range evs {
				back := time.Duration((uint64(i*200+j)*0x9E3779B97F4A7C15)%60_000) * time.Millisecond
				evs[j] = gen.Event(now.Add(-back))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			err := client.Post(ctx, evs)
			cancel()
			if err != nil {
				t.Errorf("post: %v", err)
				return
			}
			truth.Add(evs)
			sent.Add(int64(len(evs)))
			time.Sleep(100 * time.Millisecond)
		}
	})
	start := time.Now()
	time.Sleep(3 * time.Second)

	versions := func() map[string]string {
		out := map[string]string{}
		for _, name := range names {
			if m := buildVersion.FindStringSubmatch(metrics(t, c.nodes[name].http)); m != nil {
				out[name] = m[1]
			}
		}
		return out
	}
	before := versions()
	for _, name := range names {
		if before[name] == "" || before[name] == upgradeVersion {
			t.Fatalf("before the upgrade %s reports version %q", name, before[name])
		}
	}
	for i, name := range names {
		n := c.nodes[name]
		at := time.Now()
		if err := n.proc.Stop(30 * time.Second); err != nil {
			t.Fatalf("graceful stop of %s: %v", name, err)
		}
		stopped := time.Since(at)
		// The others see it gone and take its campaigns over while its
		// binary is replaced; traffic goes on meanwhile.
		var rest []string
		for _, other := range names {
			if other != name {
				rest = append(rest, other)
			}
		}
		waitAlive(t, c, 30*time.Second, rest...)
		time.Sleep(time.Second)
		n.proc.Bin = filepath.Join(newBin, "tally-aggregator")
		c.start(n)
		waitAlive(t, c, 30*time.Second, names...)
		t.Logf("FIGURE %s upgraded: graceful stop %s, back ready and alive on every node %s after the stop began (1 s of it down on purpose)",
			name, stopped.Round(10*time.Millisecond), time.Since(at).Round(10*time.Millisecond))
		v := versions()
		upgraded := 0
		for _, got := range v {
			if got == upgradeVersion {
				upgraded++
			}
		}
		if v[name] != upgradeVersion || upgraded != i+1 {
			t.Fatalf("after upgrading %d node(s) the versions are %v", i+1, v)
		}
		time.Sleep(2 * time.Second) // traffic owned by the new node flows before the next
	}
	close(stop)
	traffic.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("sent %d events over %s; the agent answered 503 %d times", sent.Load(), time.Since(start).Round(time.Second), client.Busy)

	want := truth.Cells()
	var lo, hi int64
	for k := range want {
		if lo == 0 || k.Minute < lo {
			lo = k.Minute
		}
		hi = max(hi, k.Minute)
	}
	from, to := time.Unix(lo, 0), time.Unix(hi+60, 0)
	deadline := time.Now().Add(90 * time.Second)
	converge := time.Now()
	for {
		diff := cellsEqual(queryInflux(t, c.influx, from, to), want)
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("InfluxDB never matched ground truth after the rolling upgrade: %s", diff)
		}
		time.Sleep(time.Second)
	}
	t.Logf("InfluxDB matches ground truth exactly: %d events in %d (campaign, type, minute) cells (converged %s after traffic stopped)",
		truth.Total(), len(want), time.Since(converge).Round(100*time.Millisecond))
	for _, campaign := range gen.Campaigns() {
		first := kpis(t, c.nodes[names[0]].http, campaign, from, to)
		for _, name := range names[1:] {
			k := kpis(t, c.nodes[name].http, campaign, from, to)
			for _, f := range []string{"impressions", "clicks", "conversions", "pageviews", "uniques", "revenue", "cost", "bots_filtered"} {
				if k[f] != first[f] {
					t.Fatalf("%s: %s says %s=%v, %s says %v", campaign, name, f, k[f], names[0], first[f])
				}
			}
		}
	}
	if p := harness.MetricSum(metrics(t, a.http), "tally_agent_spool_pending_batches"); p != 0 {
		t.Fatalf("the agent still has %v batches spooled", p)
	}
}

var buildVersion = regexp.MustCompile(`(?m)^tally_aggregator_build_info\{[^}]*version="([^"]*)"`)

// waitAlive waits until every listed node sees exactly these members, all
// alive.
func waitAlive(t *testing.T, c *aggCluster, d time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok := true
		for _, name := range want {
			v, err := clusterView(c.nodes[name].http)
			var alive []string
			for _, m := range v.Members {
				if m.State == "alive" {
					alive = append(alive, m.Name)
				}
			}
			slices.Sort(alive)
			if err != nil || len(v.Members) != len(want) || !slices.Equal(alive, want) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes never all saw exactly %v alive within %s", want, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
