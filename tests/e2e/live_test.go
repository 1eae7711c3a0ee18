package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/influxtest"
	"github.com/tally-edge/tally/internal/pki"
	"github.com/tally-edge/tally/wire"
)

// liveRig is a real InfluxDB, three aggregator nodes and two agents with
// live counters on: edge-std at the default flush interval (15 s) and
// edge-thin in the low-bandwidth setting (60 s, uniques per campaign).
// Each agent sends its own campaign, owned by a node other than agg-1, and
// a stream client reads agg-1: the figures it shows come from owners
// elsewhere.
type liveRig struct {
	c         *aggCluster
	std, thin *agentProc
	// campaigns of edge-std and edge-thin.
	stdCampaign, thinCampaign string
	stream                    *streamWatch
}

// ownedBy returns a campaign name that node owns among agg-1..3.
func ownedBy(node, prefix string) string {
	members := []wire.Member{{Name: "agg-1"}, {Name: "agg-2"}, {Name: "agg-3"}}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%s-%d", prefix, i)
		if m, _ := wire.Owner(members, c); m.Name == node {
			return c
		}
	}
}

func startLiveRig(t testing.TB) *liveRig {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: needs built binaries and InfluxDB")
	}
	c := &aggCluster{t: t, dir: t.TempDir(), nodes: map[string]*aggNode{}}
	c.influx = influxtest.StartWith(t, influxtest.Options{DisableFlux: true})
	c.certs = filepath.Join(c.dir, "certs")
	names := []string{"agg-1", "agg-2", "agg-3"}
	if _, err := pki.GenerateDev(c.certs, pki.DevOptions{Agents: []string{"edge-std", "edge-thin"}, Aggregators: names}); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		c.seeds = append(c.seeds, c.addNode(name).gossip)
	}
	var quics []string
	for _, name := range names {
		c.configure(c.nodes[name])
		quics = append(quics, c.nodes[name].quic)
	}
	c.startTogether(names...)
	c.waitMembers(20*time.Second, names...)
	r := &liveRig{c: c, stdCampaign: ownedBy("agg-2", "live-std"), thinCampaign: ownedBy("agg-3", "live-thin")}
	for _, o := range []struct {
		name   string
		flush  time.Duration
		rollup string
	}{{"edge-std", 15 * time.Second, ""}, {"edge-thin", 60 * time.Second, "uniques: campaign"}} {
		tcp, err := harness.FreeTCP(1)
		if err != nil {
			t.Fatal(err)
		}
		a := &agentProc{name: o.name, http: fmt.Sprintf("127.0.0.1:%d", tcp[0])}
		cfg := filepath.Join(c.dir, o.name+".yaml")
		if err := harness.WriteAgentConfig(cfg, harness.AgentOptions{Name: o.name, Region: "region-" + o.name, StateDir: filepath.Join(c.dir, o.name),
			HTTPAddr: a.http, Aggregators: quics, CertsDir: c.certs, Secret: testSecret, FlushInterval: o.flush,
			RollupExtra: o.rollup}); err != nil {
			t.Fatal(err)
		}
		a.proc = &harness.Proc{Name: o.name, Bin: filepath.Join(binDir, "tally-agent"), Args: []string{"-config", cfg}, LogPath: filepath.Join(c.dir, o.name+".log")}
		if err := a.proc.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = harness.WaitHTTP(ctx, "http://"+a.http+"/healthz", a.proc)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		c.agents = append(c.agents, a)
		if o.name == "edge-std" {
			r.std = a
		} else {
			r.thin = a
		}
	}
	t.Cleanup(func() {
		for _, a := range c.agents {
			_ = a.proc.Stop(20 * time.Second)
		}
		for _, name := range names {
			_ = c.nodes[name].proc.Stop(30 * time.Second)
		}
		if t.Failed() {
			for _, p := range append([]*harness.Proc{c.nodes["agg-1"].proc, c.nodes["agg-2"].proc, c.nodes["agg-3"].proc}, agentProcs(c.agents)...) {
				t.Logf("---- %s log tail ----\n%s", p.Name, p.LogTail(30))
			}
		}
	})
	r.stream = watchStream(t, c.nodes["agg-1"].http)
	return r
}

// sendClicks posts n clicks of campaign to agent a as its server sender
// and returns when the agent has accepted them.
func sendClicks(t testing.TB, a *agentProc, campaign string, n int, visitor int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"type":"click","campaign":%q,"source":"news","visitor":"v%d"}`+"\n", campaign, visitor+i)
	}
	resp, err := postAsServer(a.eventsURL(), strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Accepted int `json:"accepted"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || resp.StatusCode != http.StatusAccepted || ans.Accepted != n {
		t.Fatalf("%s: status %d, accepted %d of %d (%v)", a.name, resp.StatusCode, ans.Accepted, n, err)
	}
}

// streamUpdate is one campaign-minute as the stream carries it.
type streamUpdate struct {
	Campaign string `json:"campaign"`
	Minute   int64  `json:"minute"`
	KPIs     struct {
		Clicks uint64 `json:"clicks"`
	} `json:"kpis"`
	Provisional bool `json:"provisional"`
}

// streamWatch reads one node's stream and keeps, per campaign, the
// latest update of each minute, and the most clicks it ever showed.
type streamWatch struct {
	mu      sync.Mutex
	latest  map[string]map[int64]streamUpdate
	most    map[string]uint64
	changed chan struct{} // closed and replaced on every message
	err     error
}

func watchStream(t testing.TB, hostport string) *streamWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := adminRequest(ctx, "http://"+hostport+"/api/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("stream on %s: status %d", hostport, resp.StatusCode)
	}
	w := &streamWatch{latest: map[string]map[int64]streamUpdate{}, most: map[string]uint64{}, changed: make(chan struct{})}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			var msg struct {
				Updates []streamUpdate `json:"updates"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &msg); err != nil {
				continue // status events
			}
			w.mu.Lock()
			for _, u := range msg.Updates {
				if w.latest[u.Campaign] == nil {
					w.latest[u.Campaign] = map[int64]streamUpdate{}
				}
				w.latest[u.Campaign][u.Minute] = u
				w.most[u.Campaign] = max(w.most[u.Campaign], w.clicksLocked(u.Campaign))
			}
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *streamWatch) clicksLocked(campaign string) uint64 {
	var n uint64
	for _, u := range w.latest[campaign] {
		n += u.KPIs.Clicks
	}
	return n
}

// state returns the clicks the stream shows for campaign now and whether
// any of its minutes is provisional.
func (w *streamWatch) state(campaign string) (clicks uint64, provisional bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, u := range w.latest[campaign] {
		provisional = provisional || u.Provisional
	}
	return w.clicksLocked(campaign), provisional
}

// waitFor waits until ok holds for campaign's clicks and provisional
// flag, or d passes; it returns when the message that made ok hold
// arrived (zero if it never did).
func (w *streamWatch) waitFor(campaign string, d time.Duration, ok func(clicks uint64, provisional bool) bool) (time.Time, uint64, bool) {
	deadline := time.After(d)
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		clicks, prov := w.state(campaign)
		if ok(clicks, prov) {
			return time.Now(), clicks, prov
		}
		select {
		case <-ch:
		case <-deadline:
			return time.Time{}, clicks, prov
		}
	}
}

func (w *streamWatch) mostClicks(campaign string) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.most[campaign]
}

// TestLiveCountersOnACluster: with live counters on, an event reaches the
// stream of a node that does not own its campaign long before the agent's
// flush, marked provisional in the low-bandwidth setting (60 s flush);
// the stream never shows more than was sent; once the flush lands it
// shows exactly the durable figure, no longer provisional, and storage
// holds exactly what was sent (live counters never reach it).
func TestLiveCountersOnACluster(t *testing.T) {
	r := startLiveRig(t)
	// edge-thin flushes at minute boundaries: start well inside a minute,
	// so no flush lands while the rounds run.
	if s := time.Now().Second(); s > 40 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	start := time.Now().Truncate(time.Minute)
	sent := map[string]int{}
	for round := range 4 {
		for _, x := range []struct {
			a        *agentProc
			campaign string
		}{{r.std, r.stdCampaign}, {r.thin, r.thinCampaign}} {
			n := 1 + 3*round
			sendClicks(t, x.a, x.campaign, n, sent[x.campaign])
			sent[x.campaign] += n
			want := uint64(sent[x.campaign])
			at, got, prov := r.stream.waitFor(x.campaign, 15*time.Second, func(c uint64, _ bool) bool { return c >= want })
			if at.IsZero() {
				t.Fatalf("round %d: agg-1's stream shows %d clicks of %s, want %d", round, got, x.campaign, want)
			}
			if x.a == r.thin && !prov {
				t.Fatalf("round %d: %s shows %d clicks before edge-thin's flush, not marked provisional", round, x.campaign, got)
			}
		}
	}
	for c, n := range sent {
		if most := r.stream.mostClicks(c); most > uint64(n) {
			t.Fatalf("the stream showed %d clicks of %s, more than the %d sent", most, c, n)
		}
	}
	// Owners took live records; the stream node took none (it owns
	// neither campaign).
	var applied float64
	for _, name := range []string{"agg-2", "agg-3"} {
		applied += harness.MetricSum(metrics(t, r.c.nodes[name].http), "tally_aggregator_live_records_total", `outcome="applied"`)
	}
	if applied == 0 {
		t.Fatal("no owner took a live record")
	}
	if n := harness.MetricSum(metrics(t, r.c.nodes["agg-1"].http), "tally_aggregator_live_records_total", `outcome="applied"`); n != 0 {
		t.Fatalf("agg-1 owns neither campaign but applied %v live records", n)
	}
	for _, a := range []*agentProc{r.std, r.thin} {
		if b := harness.MetricSum(metrics(t, a.http), "tally_agent_live_bytes_sent_total"); b == 0 {
			t.Fatalf("%s reports no live bytes", a.name)
		}
	}

	// edge-thin stops gracefully: its final flush lands; edge-std
	// flushes within 15 s. Then the flush wins everywhere.
	if err := r.thin.proc.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	for c, n := range sent {
		at, got, prov := r.stream.waitFor(c, 30*time.Second, func(clicks uint64, p bool) bool { return clicks == uint64(n) && !p })
		if at.IsZero() {
			t.Fatalf("after the flush, %s shows %d clicks (provisional %v), want exactly %d, durable", c, got, prov, n)
		}
	}
	for c, n := range sent {
		k := kpis(t, r.c.nodes["agg-1"].http, c, start.Add(-time.Minute), time.Now().Add(2*time.Minute))
		if k["clicks"] != float64(n) {
			t.Fatalf("storage holds %v clicks of %s, want %d", k["clicks"], c, n)
		}
	}
}

// BenchmarkLiveEventToStream measures, on real processes (three
// aggregator nodes, InfluxDB, two agents, a stream client on a node that
// owns neither campaign), the time from an event accepted by the agent
// (its 202) to the stream message that carries the new count, over 200
// events at the default flush interval (15 s) and 200 in the
// low-bandwidth setting (60 s, uniques per campaign), both at once.
// Events are spaced by a random 0.2-1.2 s so they fall anywhere in the
// agents' and the stream's one-second rhythms.
//
//	go test -run='^$' -bench=LiveEventToStream -benchtime=1x ./tests/e2e/
func BenchmarkLiveEventToStream(b *testing.B) {
	r := startLiveRig(b)
	const events = 200
	for b.Loop() {
		var wg sync.WaitGroup
		lat := map[string][]float64{}
		var mu sync.Mutex
		for _, x := range []struct {
			name     string
			a        *agentProc
			campaign string
		}{{"flush=15s", r.std, r.stdCampaign}, {"flush=60s,uniques=campaign", r.thin, r.thinCampaign}} {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(len(x.name)), 3))
				base, _ := r.stream.state(x.campaign)
				for i := range events {
					time.Sleep(200*time.Millisecond + time.Duration(rng.IntN(1000))*time.Millisecond)
					sendClicks(b, x.a, x.campaign, 1, 1_000_000*len(x.name)+i)
					accepted := time.Now()
					want := base + uint64(i+1)
					at, got, _ := r.stream.waitFor(x.campaign, 30*time.Second, func(c uint64, _ bool) bool { return c >= want })
					if at.IsZero() {
						b.Errorf("%s: event %d never reached the stream (%d of %d clicks)", x.name, i, got, want)
						return
					}
					mu.Lock()
					lat[x.name] = append(lat[x.name], float64(at.Sub(accepted).Microseconds())/1000)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, name := range []string{"flush=15s", "flush=60s,uniques=campaign"} {
			l := lat[name]
			if len(l) == 0 {
				continue
			}
			slices.Sort(l)
			p50, p99 := l[len(l)/2], l[min(len(l)-1, int(0.99*float64(len(l))))]
			short := strings.SplitN(name, ",", 2)[0]
			b.ReportMetric(p50, short+"-p50-ms")
			b.ReportMetric(p99, short+"-p99-ms")
			b.Logf("%s: event accepted → stream shows it, %d events: p50 %.0f ms, p99 %.0f ms, min %.0f ms, max %.0f ms",
				name, len(l), p50, p99, l[0], l[len(l)-1])
		}
	}
}
