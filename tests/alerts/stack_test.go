package alerts

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/notify"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
)

const (
	adminToken = harness.DefaultAdminToken
	hookSecret = "alerts-e2e-hook-secret-0123456789"
	salt       = "alerts-e2e-deployment-secret-0123"
)

// node is one tally-aggregator process.
type node struct {
	name, http, quic, gossip string
	cfg                      string
	proc                     *harness.Proc
}

// agent is one tally-agent process.
type agent struct {
	name, http string
	proc       *harness.Proc
}

// stack is InfluxDB, aggregator nodes, agents and a webhook receiver.
type stack struct {
	t      *testing.T
	dir    string
	certs  string
	influx *influxtest.Server
	nodes  []*node
	agents []*agent
	hook   *receiver
}

type stackOptions struct {
	nodes, agents int
	// alertsExtra is YAML added under alerts: (indented by two spaces).
	alertsExtra string
	// alertmanager is its base URL ("" for none).
	alertmanager string
	// influxExtra is YAML added to the nodes' influx: section.
	influxExtra string
}

// Tokens of the analyst and of the viewer of campaign "shop" every stack
// knows besides the admin.
const (
	analystToken = "alerts-e2e-analyst-token-0123"
	viewerToken  = "alerts-e2e-viewer-token-01234"
	authLines    = `  - {token: "` + analystToken + `", subject: ann, role: analyst}
  - {token: "` + viewerToken + `", subject: vic, role: viewer, campaigns: [shop]}
`
)

func startStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("alerts e2e: needs built binaries and InfluxDB")
	}
	s := &stack{t: t, dir: t.TempDir()}
	s.influx = influxtest.Start(t)
	s.hook = newReceiver(t)
	var nodeNames, agentNames []string
	for i := range o.nodes {
		nodeNames = append(nodeNames, fmt.Sprintf("agg-%d", i+1))
	}
	for i := range o.agents {
		agentNames = append(agentNames, fmt.Sprintf("edge-%d", i+1))
	}
	s.certs = filepath.Join(s.dir, "certs")
	if _, err := pki.GenerateDev(s.certs, pki.DevOptions{Agents: agentNames, Aggregators: nodeNames}); err != nil {
		t.Fatal(err)
	}
	tcp, err := harness.FreeTCP(o.nodes*2 + o.agents)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(o.nodes)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range nodeNames {
		n := &node{name: name, http: fmt.Sprintf("127.0.0.1:%d", tcp[2*i]), quic: fmt.Sprintf("127.0.0.1:%d", udp[i])}
		if o.nodes > 1 {
			n.gossip = fmt.Sprintf("127.0.0.1:%d", tcp[2*i+1])
		}
		s.nodes = append(s.nodes, n)
	}
	var seeds, quics []string
	for _, n := range s.nodes {
		if n.gossip != "" {
			seeds = append(seeds, n.gossip)
		}
		quics = append(quics, n.quic)
	}
	for _, n := range s.nodes {
		alerts := fmt.Sprintf(`alerts:
  settle: 5s
  peek_interval: 2s
  notify:
    dashboard_url: http://%s
    backoff_min: 200ms
    backoff_max: 2s
    webhooks:
      - name: e2e
        url: %s
        secret: %s
`, n.http, s.hook.URL, hookSecret)
		if o.alertmanager != "" {
			alerts += fmt.Sprintf("    alertmanagers:\n      - name: am\n        url: %s\n    resend_interval: 10s\n", o.alertmanager)
		}
		for _, l := range strings.Split(strings.TrimRight(o.alertsExtra, "\n"), "\n") {
			if l != "" {
				alerts += "  " + l + "\n"
			}
		}
		n.cfg = filepath.Join(s.dir, n.name+".yaml")
		if err := harness.WriteAggregatorConfig(n.cfg, harness.AggregatorOptions{Name: n.name, DataDir: filepath.Join(s.dir, n.name),
			QUICAddr: n.quic, HTTPAddr: n.http, CertsDir: s.certs, InfluxURL: s.influx.URL(), InfluxBucket: s.influx.Bucket(),
			WriteInterval: 300 * time.Millisecond, GossipAddr: n.gossip, Seeds: seeds, Extra: alerts, AuthExtra: authLines,
			InfluxExtra: o.influxExtra}); err != nil {
			t.Fatal(err)
		}
		n.proc = &harness.Proc{Name: n.name, Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", n.cfg},
			LogPath: filepath.Join(s.dir, n.name+".log")}
	}
	for _, n := range s.nodes {
		if err := n.proc.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range s.nodes {
		s.waitReady(n)
	}
	for i, name := range agentNames {
		a := &agent{name: name, http: fmt.Sprintf("127.0.0.1:%d", tcp[2*o.nodes+i])}
		cfg := filepath.Join(s.dir, name+".yaml")
		// Written here rather than by the harness: the history is weeks
		// old, past the agent's default http.max_event_age.
		yaml := fmt.Sprintf(`name: %s
region: region-%d
state_dir: %s
http:
  listen: %s
  max_event_age: 720h
  server_tokens: ["%s"]
aggregator:
  addrs: [%s]
  server_name: localhost
  ca: %s/ca.pem
  cert: %s/%s.pem
  key: %s/%s-key.pem
  in_flight: 8
privacy:
  secret: %s
rollup:
  flush_interval: 1s
`, name, i+1, filepath.Join(s.dir, name), a.http, harness.DefaultServerToken, strings.Join(quics, ", "), s.certs, s.certs, name, s.certs, name, salt)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		a.proc = &harness.Proc{Name: name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", cfg},
			LogPath: filepath.Join(s.dir, name+".log")}
		if err := a.proc.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		err := harness.WaitHTTP(ctx, "http://"+a.http+"/healthz", a.proc)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		s.agents = append(s.agents, a)
	}
	t.Cleanup(func() {
		for _, a := range s.agents {
			_ = a.proc.Stop(20 * time.Second)
		}
		for _, n := range s.nodes {
			if n.proc.Running() {
				_ = n.proc.Stop(30 * time.Second)
			}
		}
		if t.Failed() {
			for _, n := range s.nodes {
				t.Logf("---- %s log tail ----\n%s", n.name, n.proc.LogTail(60))
			}
			for _, a := range s.agents {
				t.Logf("---- %s log tail ----\n%s", a.name, a.proc.LogTail(20))
			}
		}
	})
	return s
}

func (s *stack) waitReady(n *node) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := harness.WaitHTTP(ctx, "http://"+n.http+"/readyz", n.proc); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) eventURLs() []string {
	var out []string
	for _, a := range s.agents {
		out = append(out, "http://"+a.http+"/v1/events")
	}
	return out
}

// get fetches path of node n as the admin.
func get(n *node, path string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.http+path, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return b, nil
}

// api gets a JSON answer of node n as the admin.
func api(n *node, path string, v any) error {
	b, err := get(n, path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// hit is one alert transition that reached a receiver, and when.
type hit struct {
	at  time.Time
	key string
	a   alert.Alert
}

// receiver is a webhook target: it checks each request's signature and
// records the alerts.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	hits []hit
	bad  []string
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if err := notify.Verify([]byte(hookSecret), r.Header.Get(notify.HeaderSignature), body, time.Now(), time.Minute); err != nil {
			rc.bad = append(rc.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var p notify.Payload
		if err := json.Unmarshal(body, &p); err != nil || r.Header.Get(notify.HeaderIdempotencyKey) != p.IdempotencyKey {
			rc.bad = append(rc.bad, fmt.Sprintf("payload %v, key header %q", err, r.Header.Get(notify.HeaderIdempotencyKey)))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		rc.hits = append(rc.hits, hit{at: time.Now(), key: p.IdempotencyKey, a: p.Alert})
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) all() []hit {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]hit(nil), rc.hits...)
}

// stream reads one node's /api/v1/stream and records its alert events.
type stream struct {
	mu   sync.Mutex
	hits []hit
	done chan struct{}
}

func openStream(t *testing.T, n *node) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.http+"/api/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("stream: %v %v", err, resp)
	}
	st := &stream{done: make(chan struct{})}
	go func() {
		defer close(st.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		event := ""
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[7:]
			case strings.HasPrefix(line, "data: ") && event == "alert":
				var a alert.Alert
				if json.Unmarshal([]byte(line[6:]), &a) == nil {
					st.mu.Lock()
					st.hits = append(st.hits, hit{at: time.Now(), key: a.ID + ":" + a.State, a: a})
					st.mu.Unlock()
				}
			case line == "":
				event = ""
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-st.done
	})
	return st
}

func (st *stream) all() []hit {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]hit(nil), st.hits...)
}

// first returns the first hit of a firing alert of campaign whose metric
// is one of metrics (any metric when none are given).
func first(hits []hit, campaign string, metrics ...string) (hit, bool) {
	for _, h := range hits {
		if h.a.Campaign != campaign || h.a.State != alert.StateFiring {
			continue
		}
		if len(metrics) == 0 {
			return h, true
		}
		for _, m := range metrics {
			if h.a.Metric == m {
				return h, true
			}
		}
	}
	return hit{}, false
}

// waitFor polls cond every half second until it holds or d passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// alertList is GET /api/v1/alerts.
type alertList struct {
	Alerts []struct {
		alert.Alert
		Delivered bool `json:"delivered"`
	} `json:"alerts"`
}

// waitStored waits until the API holds clicks of campaign in [from, to)
// equal to want: the history has reached InfluxDB.
func waitStored(t *testing.T, n *node, campaign string, from, to time.Time, want float64, d time.Duration) {
	t.Helper()
	waitFor(t, "the history in InfluxDB", d, func() error {
		var k map[string]any
		q := fmt.Sprintf("/api/v1/kpis?campaign=%s&from=%s&to=%s", campaign, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
		if err := api(n, q, &k); err != nil {
			return err
		}
		if got, _ := k["clicks"].(float64); got != want {
			return fmt.Errorf("%s: %v clicks stored, %v sent", campaign, got, want)
		}
		return nil
	})
}
