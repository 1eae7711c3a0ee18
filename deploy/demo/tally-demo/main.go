// Command tally-demo runs a complete local Tally for `make demo`: a real
// InfluxDB, a cluster of three aggregator nodes, two agents in two regions
// and a generator of realistic campaign traffic (bots included), all on
// loopback. Ctrl-C stops everything in order.
//
// Ports come from the environment: TALLY_DEMO_HTTP (first node's API and
// dashboard, default 8080; the others are +100 and +200),
// TALLY_DEMO_AGENT_EU and TALLY_DEMO_AGENT_US (agent ingest, defaults 8081
// and 8082), TALLY_DEMO_QUIC (first node's QUIC, default 7400; the others
// +1, +2), TALLY_DEMO_GOSSIP (first node's memberlist port, default 7946;
// the others +1, +2), TALLY_DEMO_RATE (events per second, default 200).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tally-edge/tally/internal/cli"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin", "directory with tally-agent and tally-aggregator")
	binDir = bin
	influxd := flag.String("influxd", ".bin/influxd", "influxd binary (make influxdb installs it)")
	dir := flag.String("dir", ".demo", "state directory (certificates, data, logs)")
	flag.Parse()
	logger, _ := cli.NewLogger(os.Stderr, "text", "info")
	ctx, stop := cli.SignalContext(logger)
	defer stop()
	if err := demo(ctx, *bin, *influxd, *dir, logger); err != nil {
		fmt.Fprintln(os.Stderr, "tally-demo:", err)
		return 1
	}
	return 0
}

// binDir is the -bin flag as given, for the commands the demo prints.
var binDir *string

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func demo(ctx context.Context, bin, influxd, dir string, logger *slog.Logger) error {
	httpPort, euPort, usPort := env("TALLY_DEMO_HTTP", 8080), env("TALLY_DEMO_AGENT_EU", 8081), env("TALLY_DEMO_AGENT_US", 8082)
	quicPort, gossipPort, rate := env("TALLY_DEMO_QUIC", 7400), env("TALLY_DEMO_GOSSIP", 7946), env("TALLY_DEMO_RATE", 200)
	aggBin, err := harness.FindBin(bin, "tally-aggregator")
	if err != nil {
		return err
	}
	agentBin, err := harness.FindBin(bin, "tally-agent")
	if err != nil {
		return err
	}
	dirArg := dir // as given, for the commands the banner prints
	for _, p := range []*string{&dir, &influxd, &aggBin, &agentBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	certs := filepath.Join(dir, "certs")
	agents := []struct {
		name, region string
		port         int
	}{{"agent-eu", "eu-west", euPort}, {"agent-us", "us-east", usPort}}
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-eu", "agent-us"}, Aggregators: []string{"agg-1", "agg-2", "agg-3"}}); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	logger.Info("starting InfluxDB", "binary", influxd)
	db, err := influxtest.Launch(ctx, influxtest.Options{Binary: influxd, Dir: filepath.Join(dir, "influxdb")})
	if err != nil {
		return fmt.Errorf("start InfluxDB: %w", err)
	}
	defer db.Close()

	token, err := secretFile(filepath.Join(dir, "token"))
	if err != nil {
		return err
	}
	// The nodes share the key of sign-in links, so a link minted with
	// `tally-aggregator link` opens a session on any of them.
	linkSecret, err := secretFile(filepath.Join(dir, "link-secret"))
	if err != nil {
		return err
	}
	// The agents' server senders' token, for the README's curl examples.
	if err := os.WriteFile(filepath.Join(dir, "server-token"), []byte(harness.DefaultServerToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("write server token: %w", err)
	}
	type node struct {
		name, quic, http, gossip string
		proc                     *harness.Proc
	}
	var nodes []*node
	var seeds, quics []string
	for i := range 3 {
		n := &node{name: fmt.Sprintf("agg-%d", i+1), quic: fmt.Sprintf("127.0.0.1:%d", quicPort+i),
			http: fmt.Sprintf("127.0.0.1:%d", httpPort+100*i), gossip: fmt.Sprintf("127.0.0.1:%d", gossipPort+i)}
		nodes = append(nodes, n)
		seeds = append(seeds, n.gossip)
		quics = append(quics, n.quic)
	}
	for _, n := range nodes {
		cfg := filepath.Join(dir, n.name+".yaml")
		if err := harness.WriteAggregatorConfig(cfg, harness.AggregatorOptions{Name: n.name, DataDir: filepath.Join(dir, n.name),
			QUICAddr: n.quic, HTTPAddr: n.http, CertsDir: certs, InfluxURL: db.URL(), InfluxBucket: db.Bucket(),
			GossipAddr: n.gossip, Seeds: seeds, AdminToken: token, AuthExtra: "links: {secret: \"" + linkSecret + "\"}"}); err != nil {
			return err
		}
		n.proc = &harness.Proc{Name: n.name, Bin: aggBin, Args: []string{"-config", cfg}, LogPath: filepath.Join(logs, n.name+".log")}
		if err := n.proc.Start(); err != nil {
			return err
		}
		defer n.proc.Stop(30 * time.Second)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := harness.WaitHTTP(wctx, "http://"+n.http+"/readyz", n.proc); err != nil {
			return err
		}
	}
	httpAddr := nodes[0].http
	var nodeURLs []string
	for _, n := range nodes {
		nodeURLs = append(nodeURLs, "http://"+n.http)
	}

	var clients []*loadgen.Client
	for _, a := range agents {
		cfg := filepath.Join(dir, a.name+".yaml")
		addr := fmt.Sprintf("127.0.0.1:%d", a.port)
		if err := harness.WriteAgentConfig(cfg, harness.AgentOptions{Name: a.name, Region: a.region, StateDir: filepath.Join(dir, a.name),
			HTTPAddr: addr, Aggregators: quics, CertsDir: certs, Secret: "demo-deployment-secret-change-me"}); err != nil {
			return err
		}
		p := &harness.Proc{Name: a.name, Bin: agentBin, Args: []string{"-config", cfg}, LogPath: filepath.Join(logs, a.name+".log")}
		if err := p.Start(); err != nil {
			return err
		}
		defer p.Stop(30 * time.Second)
		if err := harness.WaitHTTP(wctx, "http://"+addr+"/healthz", p); err != nil {
			return err
		}
		clients = append(clients, &loadgen.Client{URL: "http://" + addr + "/v1/events", HTTP: &http.Client{Timeout: 30 * time.Second}, Token: harness.DefaultServerToken})
	}

	// The dashboard link carries a short-lived, single-use link token,
	// minted by the same command the banner tells the user to run for a
	// new one, never the admin token.
	linkCmd := []string{filepath.Join(*binDir, "tally-aggregator"), "link", "-config", filepath.Join(dirArg, nodes[0].name+".yaml"),
		"-url", "http://" + httpAddr}
	mint := exec.CommandContext(ctx, aggBin, linkCmd[1:]...)
	mint.Dir, _ = os.Getwd()
	out, err := mint.Output()
	if err != nil {
		return fmt.Errorf("mint the dashboard link: %w", err)
	}
	printBanner(os.Stdout, banner{HTTP: httpAddr, Link: strings.TrimSpace(string(out)), LinkCommand: strings.Join(linkCmd, " "),
		NodeURLs: nodeURLs, TokenPath: filepath.Join(dirArg, "token"), ServerTokenPath: filepath.Join(dirArg, "server-token"), EU: euPort, US: usPort, QUIC: quics, Certs: certs,
		Influx: db.URL(), Bucket: db.Bucket(), Logs: logs, Rate: rate})

	return generate(ctx, clients, rate, logger)
}

// generate sends rate events per second, alternating agents, until ctx ends.
func generate(ctx context.Context, clients []*loadgen.Client, rate int, logger *slog.Logger) error {
	gen := loadgen.New(loadgen.Config{Seed: uint64(time.Now().UnixNano())})
	var sent, failed atomic.Uint64
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	report := time.NewTicker(15 * time.Second)
	defer report.Stop()
	perTick := max(1, rate/4)
	i := 0
	for {
		select {
		case <-ctx.Done():
			logger.Info("stopping", "events_sent", sent.Load())
			return nil
		case <-report.C:
			logger.Info("traffic", "events_sent", sent.Load(), "failed_posts", failed.Load())
		case <-tick.C:
			evs := make([]loadgen.Event, perTick)
			now := time.Now()
			for j := range evs {
				evs[j] = gen.Event(now)
			}
			c := clients[i%len(clients)]
			i++
			go func() {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := c.Post(pctx, evs); err != nil && !errors.Is(err, context.Canceled) {
					failed.Add(1)
					return
				}
				sent.Add(uint64(len(evs)))
			}()
		}
	}
}

// banner is what the demo prints once everything runs.
type banner struct {
	HTTP, Link, LinkCommand string
	NodeURLs                []string
	TokenPath               string
	ServerTokenPath         string
	EU, US                  int
	QUIC                    []string
	Certs, Influx, Bucket   string
	Logs                    string
	Rate                    int
}

// printBanner writes where everything runs. The dashboard link holds a
// link token, not the admin token: the banner names the admin token's
// file, never its value.
func printBanner(w io.Writer, b banner) {
	fmt.Fprintf(w, `
Tally demo is running.

  Dashboard   %[1]s
              (opens one admin session, once, within 15 minutes; a new link:
               %[2]s)
              every node serves the same global view: %[3]s
  KPI API     curl -H "Authorization: Bearer $(cat %[4]s)" 'http://%[5]s/api/v1/kpis?campaign=spring_sale&window=15m'
  Cluster     curl -H "Authorization: Bearer $(cat %[4]s)" 'http://%[5]s/api/v1/cluster'   (members, owners)
  Admin token %[4]s
  Metrics     http://%[5]s/metrics  (a node; campaign series need the admin token)   http://127.0.0.1:%[6]d/metrics  http://127.0.0.1:%[7]d/metrics  (agents)
  Agents      agent-eu (eu-west) POST http://127.0.0.1:%[6]d/v1/events
              agent-us (us-east) POST http://127.0.0.1:%[7]d/v1/events
              (server senders: -H "Authorization: Bearer $(cat %[14]s)")
  QUIC        %[8]s (mutual TLS, certificates in %[9]s)
  InfluxDB    %[10]s  bucket %[11]s
  Logs        %[12]s
  Traffic     %[13]d events/s over 6 campaigns, about 5%% from crawlers (filtered at the edge)

Press Ctrl-C to stop everything.

`, b.Link, b.LinkCommand, strings.Join(b.NodeURLs, " "), b.TokenPath, b.HTTP, b.EU, b.US, strings.Join(b.QUIC, " "), b.Certs,
		b.Influx, b.Bucket, b.Logs, b.Rate, b.ServerTokenPath)
}

// secretFile returns the secret kept in path, creating a random one
// (readable by the owner only) on first use, so that the admin token and
// the links secret stay the same across demo runs.
func secretFile(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	token := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return token, nil
}
