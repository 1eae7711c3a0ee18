package links

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/api"
	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/linkemu"
	"github.com/tally-edge/tally/internal/loadgen"
	"github.com/tally-edge/tally/internal/pki"
)

// linkSpec is one emulated link, the same each way.
type linkSpec struct {
	name   string
	rate   int64 // bits per second
	delay  time.Duration
	jitter time.Duration
	loss   float64
}

func (l linkSpec) path() linkemu.Path {
	return linkemu.Path{Rate: l.rate, Delay: l.delay, Jitter: l.jitter, Loss: l.loss, MaxQueue: 2 * time.Second}
}

func (l linkSpec) String() string {
	return fmt.Sprintf("%d kbit/s, %v ± %v, %.0f %% loss each way", l.rate/1000, l.delay, l.jitter, 100*l.loss)
}

// The links.
var (
	link64  = linkSpec{name: "64kbit", rate: 64_000, delay: 300 * time.Millisecond, jitter: 30 * time.Millisecond, loss: 0.10}
	link256 = linkSpec{name: "256kbit", rate: 256_000, delay: 150 * time.Millisecond, jitter: 30 * time.Millisecond, loss: 0.03}
)

const testSecret = "links-deployment-secret-0123456789"

// stack is one aggregator on its own InfluxDB database and one agent that
// reaches it only through an emulated link.
type stack struct {
	t         *testing.T
	dir       string
	influx    *influxtest.Server
	db        string
	agg       *harness.Proc
	aggHTTP   string
	link      *linkemu.Link
	agent     *harness.Proc
	agentHTTP string
}

// stackOptions vary a stack.
type stackOptions struct {
	// agentExtra is YAML appended to the agent's file (sections such as
	// spool:), shipExtra YAML for its aggregator: section.
	agentExtra, shipExtra string
	// rollupExtra is YAML for the agent's rollup: section.
	rollupExtra string
	// flush is the agent's flush interval; default its default, 15 s.
	flush time.Duration
	seed  uint64
}

// stacksMade numbers the stacks the package has started.
var stacksMade atomic.Int64

// newStack starts InfluxDB's database, the aggregator, the link and the
// agent, and stops them when the test ends.
func newStack(t *testing.T, spec linkSpec, o stackOptions) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("links: needs built binaries and InfluxDB")
	}
	// A database of its own per stack, also when a test runs again
	// (-count) on the package's one InfluxDB.
	db := fmt.Sprintf("links_%s_%d", strings.ReplaceAll(t.Name(), "/", "_"), stacksMade.Add(1))
	s := &stack{t: t, dir: t.TempDir(), influx: sharedInflux(t), db: db}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.influx.CreateDatabase(ctx, s.db, "rp"); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(s.dir, "certs")
	if _, err := pki.GenerateDev(certs, pki.DevOptions{Agents: []string{"agent-far"}, Aggregators: []string{"agg-1"}}); err != nil {
		t.Fatal(err)
	}
	tcp, err := harness.FreeTCP(2)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := harness.FreeUDP(1)
	if err != nil {
		t.Fatal(err)
	}
	s.aggHTTP, s.agentHTTP = fmt.Sprintf("127.0.0.1:%d", tcp[0]), fmt.Sprintf("127.0.0.1:%d", tcp[1])
	aggQUIC := fmt.Sprintf("127.0.0.1:%d", udp[0])
	aggCfg := filepath.Join(s.dir, "agg-1.yaml")
	if err := harness.WriteAggregatorConfig(aggCfg, harness.AggregatorOptions{Name: "agg-1", DataDir: filepath.Join(s.dir, "agg-1"),
		QUICAddr: aggQUIC, HTTPAddr: s.aggHTTP, CertsDir: certs, InfluxURL: s.influx.URL(), InfluxBucket: s.db + "/rp"}); err != nil {
		t.Fatal(err)
	}
	s.agg = &harness.Proc{Name: "agg-1", Bin: filepath.Join(binDir, "tally-aggregator"), Args: []string{"-config", aggCfg},
		LogPath: filepath.Join(s.dir, "agg-1.log")}
	if err := s.agg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.agg.Stop(30 * time.Second); err != nil {
			t.Errorf("stopping aggregator: %v", err)
		}
	})
	if err := harness.WaitHTTP(ctx, "http://"+s.aggHTTP+"/readyz", s.agg); err != nil {
		t.Fatal(err)
	}

	s.link, err = linkemu.Start(linkemu.Config{Upstream: aggQUIC, Up: spec.path(), Down: spec.path(), Seed: o.seed + 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.link.Close() })

	flush := o.flush
	if flush == 0 {
		flush = 15 * time.Second
	}
	agentCfg := filepath.Join(s.dir, "agent-far.yaml")
	if err := harness.WriteAgentConfig(agentCfg, harness.AgentOptions{Name: "agent-far", Region: "far", StateDir: filepath.Join(s.dir, "agent-far"),
		HTTPAddr: s.agentHTTP, Aggregators: []string{s.link.Addr()}, CertsDir: certs, Secret: testSecret, FlushInterval: flush,
		ShipExtra: o.shipExtra, RollupExtra: o.rollupExtra, Extra: o.agentExtra}); err != nil {
		t.Fatal(err)
	}
	s.agent = &harness.Proc{Name: "agent-far", Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", agentCfg},
		LogPath: filepath.Join(s.dir, "agent-far.log")}
	if err := s.agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.agent.Stop(20 * time.Second); err != nil {
			t.Errorf("stopping agent: %v", err)
		}
		if t.Failed() {
			for _, p := range []*harness.Proc{s.agent, s.agg} {
				t.Logf("---- %s log tail ----\n%s", p.Name, p.LogTail(30))
			}
		}
		if os.Getenv("TALLY_LINKS_KEEP") != "" {
			t.Logf("logs kept: %s", s.keepLogs())
		}
	})
	if err := harness.WaitHTTP(ctx, "http://"+s.agentHTTP+"/healthz", s.agent); err != nil {
		t.Fatal(err)
	}
	return s
}

// keepLogs copies the stack's logs out of the test's temporary directory.
func (s *stack) keepLogs() string {
	dst, err := os.MkdirTemp("", "tally-links-logs-")
	if err != nil {
		return err.Error()
	}
	for _, name := range []string{"agent-far.log", "agg-1.log"} {
		if b, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil {
			_ = os.WriteFile(filepath.Join(dst, name), b, 0o644)
		}
	}
	return dst
}

// post sends events to the agent as a server sender, in bodies of up to
// 5000, waiting out 503s, and adds what was accepted to truth.
func (s *stack) post(ctx context.Context, evs []loadgen.Event, truth *loadgen.Truth) {
	s.t.Helper()
	client := &loadgen.Client{URL: "http://" + s.agentHTTP + "/v1/events", HTTP: &http.Client{Timeout: 60 * time.Second},
		Token: harness.DefaultServerToken}
	for i := 0; i < len(evs); i += 5000 {
		part := evs[i:min(i+5000, len(evs))]
		if err := client.Post(ctx, part); err != nil {
			s.t.Fatalf("post: %v", err)
		}
		truth.Add(part)
	}
}

// campaignTruth is what the API's campaign list should show.
type campaignTruth struct {
	impressions, clicks, conversions, pageviews, bots uint64
	valueMicros, costMicros                           int64
}

func (c campaignTruth) events() uint64 {
	return c.impressions + c.clicks + c.conversions + c.pageviews + c.bots
}

func byCampaign(truth *loadgen.Truth, from, to time.Time) map[string]campaignTruth {
	out := map[string]campaignTruth{}
	for k, cell := range truth.Cells() {
		if k.Minute < from.Unix() || k.Minute >= to.Unix() {
			continue
		}
		c := out[k.Campaign]
		switch k.Type {
		case "impression":
			c.impressions += cell.Count
		case "click":
			c.clicks += cell.Count
		case "conversion":
			c.conversions += cell.Count
		case "pageview":
			c.pageviews += cell.Count
		}
		c.bots += cell.Bots
		c.valueMicros += cell.ValueMicros
		c.costMicros += cell.CostMicros
		out[k.Campaign] = c
	}
	return out
}

// apiState compares the API's campaign list over [from, to) with want:
// it returns "" when every campaign is exact, else the first difference,
// and how many of want's events the API shows.
func (s *stack) apiState(want map[string]campaignTruth, from, to time.Time) (diff string, seen uint64) {
	q := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.aggHTTP+"/api/v1/campaigns?"+q.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+harness.DefaultAdminToken)
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	var list api.CampaignsResponse
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		return fmt.Sprintf("campaigns: %d %v", resp.StatusCode, err), 0
	}
	got := map[string]api.CampaignKPIs{}
	for _, c := range list.Campaigns {
		got[c.Campaign] = c
	}
	for name, w := range want {
		k := got[name].KPIs
		g := campaignTruth{impressions: k.Impressions, clicks: k.Clicks, conversions: k.Conversions, pageviews: k.Pageviews,
			bots: k.BotsFiltered, valueMicros: int64(math.Round(k.Revenue * 1e6)), costMicros: int64(math.Round(k.Cost * 1e6))}
		seen += min(g.events(), w.events())
		if g != w && diff == "" {
			diff = fmt.Sprintf("%s: got %+v, want %+v", name, g, w)
		}
	}
	return diff, seen
}

// waitExact polls the API every 500 ms until every campaign is exact or
// the deadline passes; it returns when that happened (zero if never) and
// logs progress every 10 s.
func (s *stack) waitExact(want map[string]campaignTruth, from, to, deadline time.Time, since time.Time) time.Time {
	var total uint64
	for _, w := range want {
		total += w.events()
	}
	lastLog := time.Now()
	for {
		diff, seen := s.apiState(want, from, to)
		if diff == "" {
			return time.Now()
		}
		if time.Now().After(deadline) {
			s.t.Logf("after %.0f s: %d of %d events in the API; %s", time.Since(since).Seconds(), seen, total, diff)
			return time.Time{}
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			st := s.link.Stats()
			s.t.Logf("%.0f s: %d of %d events in the API; link up %d B (%d lost, %d tail-dropped), down %d B",
				time.Since(since).Seconds(), seen, total, st.Up.Bytes, st.Up.Lost, st.Up.QueueDropped, st.Down.Bytes)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// metrics returns the agent's Prometheus text.
func (s *stack) metrics() string {
	resp, err := http.Get("http://" + s.agentHTTP + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
