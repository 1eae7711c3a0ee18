package e2e

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
)

// cluster is one InfluxDB, one aggregator and some agents, all real
// processes on loopback.
type cluster struct {
	t       *testing.T
	dir     string
	certs   string
	influx  *influxtest.Server
	agg     *harness.Proc
	aggHTTP string
	aggQUIC string
	agents  []*agentProc
}

type agentProc struct {
	name string
	proc *harness.Proc
	http string
}

func (a *agentProc) eventsURL() string { return "http://" + a.http + "/v1/events" }

const testSecret = "e2e-deployment-secret-0123456789"

// startCluster starts InfluxDB as it ships (Flux off: nothing here reads
// Flux, and an influxd with Flux on takes 5-20 s longer to start), one
// aggregator and the agents.
func startCluster(t *testing.T, agentNames ...string) *cluster {
	t.Helper()
	return startClusterWith(t, clusterOptions{influx: influxtest.Options{DisableFlux: true}}, agentNames...)
}

// clusterOptions vary the storage of a cluster.
type clusterOptions struct {
	// influx configures the InfluxDB server (Flux off, no database ...).
	influx influxtest.Options
	// influxExtra is YAML for the aggregator's influx: section.
	influxExtra string
	// aggExtra is YAML appended to the aggregator's configuration
	// (top-level sections, e.g. archive:).
	aggExtra string
}

// startClusterWith is startCluster with the storage and aggregator
// configuration of o.
func startClusterWith(t *testing.T, o clusterOptions, agentNames ...string) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: needs built binaries and InfluxDB")
	}
	c := &cluster{t: t, dir: t.TempDir()}
	c.influx = influxtest.StartWith(t, o.influx)
	c.certs = filepath.Join(c.dir, "certs")
	if _, err := pki.GenerateDev(c.certs, pki.DevOptions{Agents: agentNames, Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	tcp, err := harness.FreeTCP(1 + len(agentNames))
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		t.Fatal(err)
	}
	c.aggHTTP = fmt.Sprintf("127.0.0.1:%d", tcp[0])
	c.aggQUIC = fmt.Sprintf("127.0.0.1:%d", udp[0])
	aggCfg := filepath.Join(c.dir, "agg-1.yaml")
	if err := harness.WriteAggregatorConfig(aggCfg, harness.AggregatorOptions{Name: "agg-1", DataDir: filepath.Join(c.dir, "agg-1"),
		QUICAddr: c.aggQUIC, HTTPAddr: c.aggHTTP, CertsDir: c.certs, InfluxURL: c.influx.URL(), InfluxBucket: c.influx.Bucket(),
		WriteInterval: 300 * time.Millisecond, InfluxExtra: o.influxExtra, Extra: o.aggExtra}); err != nil {
		t.Fatal(err)
	}
	c.agg = &harness.Proc{Name: "agg-1", Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", aggCfg, "-log-level", "debug"},
		LogPath: filepath.Join(c.dir, "agg-1.log")}
	c.startAggregator()
	for i, name := range agentNames {
		a := &agentProc{name: name, http: fmt.Sprintf("127.0.0.1:%d", tcp[1+i])}
		cfg := filepath.Join(c.dir, name+".yaml")
		if err := harness.WriteAgentConfig(cfg, harness.AgentOptions{Name: name, Region: "region-" + name, StateDir: filepath.Join(c.dir, name),
			HTTPAddr: a.http, Aggregators: []string{c.aggQUIC}, CertsDir: c.certs, Secret: testSecret, FlushInterval: time.Second}); err != nil {
			t.Fatal(err)
		}
		a.proc = &harness.Proc{Name: name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", cfg}, LogPath: filepath.Join(c.dir, name+".log")}
		c.agents = append(c.agents, a)
		c.startAgent(a)
	}
	t.Cleanup(func() {
		for _, a := range c.agents {
			if err := a.proc.Stop(20 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", a.name, err)
			}
		}
		if err := c.agg.Stop(30 * time.Second); err != nil {
			t.Errorf("stopping aggregator: %v", err)
		}
		if t.Failed() {
			for _, p := range append([]*harness.Proc{c.agg}, agentProcs(c.agents)...) {
				t.Logf("---- %s log tail ----\n%s", p.Name, p.LogTail(40))
			}
			t.Logf("---- influxd log tail ----\n%s", c.influx.LogTail(20))
		}
	})
	return c
}

func agentProcs(as []*agentProc) []*harness.Proc {
	var ps []*harness.Proc
	for _, a := range as {
		ps = append(ps, a.proc)
	}
	return ps
}

func (c *cluster) startAggregator() {
	c.t.Helper()
	if err := c.agg.Start(); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := harness.WaitHTTP(ctx, "http://"+c.aggHTTP+"/readyz", c.agg); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) startAgent(a *agentProc) {
	c.t.Helper()
	if err := a.proc.Start(); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := harness.WaitHTTP(ctx, "http://"+a.http+"/healthz", a.proc); err != nil {
		c.t.Fatal(err)
	}
}

// metrics returns the Prometheus text of an endpoint.
func metrics(t *testing.T, hostport string) string {
	t.Helper()
	resp, err := clientFor(hostport).Get("http://" + hostport + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
