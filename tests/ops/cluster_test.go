// Package ops runs the operations artifacts of deploy/ against a real
// cluster: InfluxDB, three aggregator nodes in one memberlist cluster and
// an agent, all real processes on loopback, fed with generated traffic.
// A real Prometheus scrapes them with deploy/prometheus's configuration and
// rules; `status` summarises them; every query of the Grafana campaigns
// dashboard runs against the real InfluxDB and must give the API's numbers.
package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

var binDir string

func TestMain(m *testing.M) {
	if !testingShort() {
		dir, err := os.MkdirTemp("", "tally-ops-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := harness.Build(dir, nil, harness.AgentPkg, harness.AggregatorPkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binDir = dir
		defer os.RemoveAll(dir)
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func testingShort() bool {
	for _, a := range os.Args {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

type node struct {
	name, http, quic, gossip string
	proc                     *harness.Proc
}

type cluster struct {
	dir    string
	influx *influxtest.Server
	nodes  []*node
	agent  *node
	truth  *loadgen.Truth
	// from and to bound every generated event (minute aligned; no event
	// falls in the minute that starts at to).
	from, to time.Time
}

const secret = "ops-deployment-secret-0123456789"

// startCluster starts InfluxDB, three nodes and one agent, sends traffic
// spread over the last 20 minutes and waits until the API counts it all.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir(), truth: loadgen.NewTruth()}
	c.influx = influxtest.Start(t)
	certs := filepath.Join(c.dir, "certs")
	names := []string{"agg-1", "agg-2", "agg-3"}
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-eu"}, Aggregators: names}); err != nil {
		t.Fatal(err)
	}
	tcp, err := harness.FreeTCP(2*len(names) + 1)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(len(names))
	if err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for i, name := range names {
		n := &node{name: name, http: fmt.Sprintf("127.0.0.1:%d", tcp[2*i]), gossip: fmt.Sprintf("127.0.0.1:%d", tcp[2*i+1]),
			quic: fmt.Sprintf("127.0.0.1:%d", udp[i])}
		c.nodes = append(c.nodes, n)
		seeds = append(seeds, n.gossip)
	}
	for _, n := range c.nodes {
		cfg := filepath.Join(c.dir, n.name+".yaml")
		if err := harness.WriteAggregatorConfig(cfg, harness.AggregatorOptions{Name: n.name, DataDir: filepath.Join(c.dir, n.name),
			QUICAddr: n.quic, HTTPAddr: n.http, CertsDir: certs, InfluxURL: c.influx.URL(), InfluxBucket: c.influx.Bucket(),
			WriteInterval: 300 * time.Millisecond, GossipAddr: n.gossip, Seeds: seeds}); err != nil {
			t.Fatal(err)
		}
		n.proc = &harness.Proc{Name: n.name, Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", cfg},
			LogPath: filepath.Join(c.dir, n.name+".log")}
		if err := n.proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	a := &node{name: "agent-eu", http: fmt.Sprintf("127.0.0.1:%d", tcp[len(tcp)-1])}
	cfg := filepath.Join(c.dir, a.name+".yaml")
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.quic)
	}
	if err := harness.WriteAgentConfig(cfg, harness.AgentOptions{Name: a.name, Region: "eu-west", StateDir: filepath.Join(c.dir, a.name),
		HTTPAddr: a.http, Aggregators: addrs, CertsDir: certs, Secret: secret, FlushInterval: time.Second}); err != nil {
		t.Fatal(err)
	}
	a.proc = &harness.Proc{Name: a.name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", cfg},
		LogPath: filepath.Join(c.dir, a.name+".log")}
	c.agent = a
	t.Cleanup(func() {
		if err := a.proc.Stop(20 * time.Second); err != nil {
			t.Errorf("stopping agent: %v", err)
		}
		for _, n := range c.nodes {
			if err := n.proc.Stop(30 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", n.name, err)
			}
		}
		if t.Failed() {
			for _, p := range c.procs() {
				t.Logf("---- %s log tail ----\n%s", p.Name, p.LogTail(30))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if err := harness.WaitHTTP(ctx, "http://"+n.http+"/readyz", n.proc); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.proc.Start(); err != nil {
		t.Fatal(err)
	}
	if err := harness.WaitHTTP(ctx, "http://"+a.http+"/readyz", a.proc); err != nil {
		t.Fatal(err)
	}
	c.sendTraffic(t)
	return c
}

func (c *cluster) procs() []*harness.Proc {
	ps := []*harness.Proc{c.agent.proc}
	for _, n := range c.nodes {
		ps = append(ps, n.proc)
	}
	return ps
}

// organicCampaign has impressions and clicks only (sendTraffic).
const organicCampaign = "organic_only"

// sendTraffic posts 6,000 generated events, and 500 impressions and
// clicks of organicCampaign, with timestamps over the 20 minutes before
// the current one, then waits until the API's totals equal the ground
// truth (every minute written to InfluxDB).
func (c *cluster) sendTraffic(t *testing.T) {
	t.Helper()
	now := time.Now().UTC()
	c.to = now.Truncate(time.Minute)
	c.from = c.to.Add(-20 * time.Minute)
	gen := loadgen.New(loadgen.Config{Seed: 14, Campaigns: 4, Visitors: 2000, BotShare: 0.08})
	rng := rand.New(rand.NewPCG(14, 41))
	client := &loadgen.Client{URL: "http://" + c.agent.http + "/v1/events", Token: harness.DefaultServerToken}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	span := c.to.Sub(c.from)
	for b := range 13 {
		batch := make([]loadgen.Event, 500)
		for i := range batch {
			batch[i] = gen.Event(c.from.Add(time.Duration(rng.Int64N(int64(span)))))
			if b == 12 {
				// A campaign without money or bots: its points have no
				// money or bots fields at all, which every panel must
				// show as 0, as the API does.
				batch[i] = loadgen.Event{Type: []string{"impression", "click"}[i%2], TS: batch[i].TS, Campaign: organicCampaign,
					Source: "google", Medium: "organic", Country: "DE", Visitor: fmt.Sprintf("o%04d", i%50), UA: loadgen.BrowserUAs[0]}
			}
		}
		if err := client.Post(ctx, batch); err != nil {
			t.Fatal(err)
		}
		c.truth.Add(batch)
	}
	var want uint64
	for _, cell := range c.truth.Cells() {
		want += cell.Count
	}
	for {
		var got uint64
		var camps struct {
			Total struct {
				KPIs map[string]float64 `json:"kpis"`
			} `json:"total"`
		}
		err := c.api(ctx, "/api/v1/campaigns", url.Values{"from": {rfc(c.from)}, "to": {rfc(c.to)}}, &camps)
		if err == nil {
			k := camps.Total.KPIs
			got = uint64(k["impressions"] + k["clicks"] + k["conversions"] + k["pageviews"])
		}
		// The API's four counters cover part of the types; compare them
		// with the same part of the truth.
		if err == nil && got == c.truthOf("impression", "click", "conversion", "pageview") && got > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("API never caught up with the traffic: %d of %d counted (%v)", got, c.truthOf("impression", "click", "conversion", "pageview"), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// truthOf is the exact number of non-bot events of the given types.
func (c *cluster) truthOf(types ...string) uint64 {
	var n uint64
	for k, cell := range c.truth.Cells() {
		for _, ty := range types {
			if k.Type == ty {
				n += cell.Count
			}
		}
	}
	return n
}

// api GETs an API route from node 1 with the admin token.
func (c *cluster) api(ctx context.Context, path string, q url.Values, out any) error {
	u := "http://" + c.nodes[0].http + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// TestOps starts one cluster and runs every check against it.
func TestOps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs InfluxDB, three nodes, an agent and Prometheus")
	}
	c := startCluster(t)
	t.Run("Grafana", func(t *testing.T) { testGrafana(t, c) })
	t.Run("Status", func(t *testing.T) { testStatus(t, c) })
	t.Run("Prometheus", func(t *testing.T) { testPrometheus(t, c) })
}
