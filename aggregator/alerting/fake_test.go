package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/aggregator/live"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// traffic generates a campaign's minutes: seasonal Poisson counts, the
// same for a minute whoever asks, and anomalies where a test says.
type traffic struct {
	seed uint64
	// peak is the clicks a minute at the busiest time of day.
	peak float64
	// change, if set, alters a minute's full step (an anomaly).
	change func(campaign string, m time.Time, s *Step)
}

func poisson(r *rand.Rand, lambda float64) float64 {
	if lambda > 60 {
		return math.Max(0, math.Round(lambda+r.NormFloat64()*math.Sqrt(lambda)))
	}
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// full is the whole minute m of campaign c.
func (g *traffic) full(c string, m time.Time) Step {
	h := fnv.New64a()
	h.Write([]byte(c))
	r := rand.New(rand.NewPCG(g.seed^h.Sum64(), uint64(m.Unix())))
	hour := float64(m.Hour()) + float64(m.Minute())/60
	level := g.peak * (0.55 + 0.45*math.Cos((hour-14)/24*2*math.Pi))
	var s Step
	s.Clicks = poisson(r, level)
	s.Impressions = poisson(r, level*20)
	s.Conversions = poisson(r, level*0.1)
	s.Pageviews = poisson(r, level*2)
	s.CostEvents = poisson(r, level*0.1)
	s.Spend = s.CostEvents * 5
	s.Revenue = s.Conversions * 40
	s.Uniques = math.Round(s.Pageviews * 0.8)
	s.Bots = poisson(r, level*0.05)
	g1 := math.Round(s.Clicks * 0.6)
	s.SourceClicks = map[string]float64{"google": g1, "bing": s.Clicks - g1}
	if g.change != nil {
		g.change(c, m, &s)
	}
	s.Events = s.Clicks + s.Impressions + s.Conversions + s.Pageviews + s.CostEvents
	return s
}

// clock is the tests' time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// lag is how long after an event the owner's merge store holds it.
const lag = 3 * time.Second

// source is the owner's merge store: a minute shows the part of its
// events that has arrived by now.
type source struct {
	g         *traffic
	clk       *clock
	campaigns []string
}

func (s *source) Steps(c string, minutes []time.Time, withUniques bool) ([]Step, error) {
	now := s.clk.now()
	out := make([]Step, len(minutes))
	for i, m := range minutes {
		f := math.Min(1, math.Max(0, float64(now.Add(-lag).Sub(m))/float64(time.Minute)))
		full := s.g.full(c, m)
		out[i] = scaled(full, f)
		if !withUniques {
			out[i].Uniques = math.NaN()
		}
	}
	return out, nil
}

func scaled(s Step, f float64) Step {
	var out Step
	out.mergeScaled(s, f)
	for k, v := range out.SourceClicks {
		out.SourceClicks[k] = math.Floor(v)
	}
	for _, p := range []*float64{&out.Clicks, &out.Impressions, &out.Conversions, &out.Pageviews, &out.CostEvents, &out.Uniques, &out.Bots, &out.Events} {
		*p = math.Floor(*p)
	}
	out.Spend, out.Revenue = out.CostEvents*5, out.Conversions*40
	return out
}

func (s *source) Campaigns(time.Time) []string { return s.campaigns }

// storage is InfluxDB for the engine: alerts and states as stored
// (keyed like tally_alert), history from the generator.
type storage struct {
	mu      sync.Mutex
	g       *traffic
	clk     *clock
	alerts  map[string]influx.StoredAlert // campaign|metric|rule|state|start
	states  []influx.StoredState
	docs    []influx.ConfigDoc
	failing bool
	writes  int
	// since, if set, hides the minutes before it (not written yet);
	// stepsServed counts the steps CampaignSteps returned.
	since       *time.Time
	stepsServed int
	// only, if set, are the campaigns with any history.
	only []string
}

func newStorage(g *traffic, clk *clock) *storage {
	return &storage{g: g, clk: clk, alerts: map[string]influx.StoredAlert{}}
}

var errDown = errors.New("influxdb down")

func (s *storage) WriteAlerts(_ context.Context, alerts []influx.StoredAlert, states []influx.StoredState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return errDown
	}
	s.writes++
	s.states = append(s.states, states...)
	for _, a := range alerts {
		s.alerts[a.Campaign+"|"+a.Metric+"|"+a.Rule+"|"+a.State+"|"+a.Start.String()] = a
	}
	return nil
}

func (s *storage) LoadAlerts(_ context.Context, q influx.AlertQuery) ([]influx.StoredAlert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return nil, errDown
	}
	var out []influx.StoredAlert
	for _, a := range s.alerts {
		if (q.AllCampaigns || slices.Contains(q.Campaigns, a.Campaign)) && !a.Start.Before(q.From) && a.Start.Before(q.To) &&
			!(q.Undelivered && a.Delivered) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b influx.StoredAlert) int { return a.Start.Compare(b.Start) })
	return out, nil
}

func (s *storage) LoadAlertStates(_ context.Context, campaigns []string, from, to time.Time) ([]influx.StoredState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return nil, errDown
	}
	latest := map[string]influx.StoredState{}
	for _, st := range s.states {
		if slices.Contains(campaigns, st.Campaign) && !st.Minute.Before(from) && st.Minute.Before(to) && !st.Minute.Before(latest[st.Campaign].Minute) {
			latest[st.Campaign] = st
		}
	}
	var out []influx.StoredState
	for _, st := range latest {
		out = append(out, st)
	}
	return out, nil
}

// CampaignSteps sums the generator's full minutes that storage holds by
// now (written a few seconds after they end).
func (s *storage) CampaignSteps(_ context.Context, campaigns []string, from, to time.Time, every time.Duration) (out []influx.StepTotals, err error) {
	s.mu.Lock()
	failing, since := s.failing, s.since
	s.mu.Unlock()
	if failing {
		return nil, errDown
	}
	written := s.clk.now().Add(-lag - time.Minute)
	defer func() { s.mu.Lock(); s.stepsServed += len(out); s.mu.Unlock() }()
	for _, c := range campaigns {
		if s.only != nil && !slices.Contains(s.only, c) {
			continue
		}
		for w := from.Truncate(every); w.Before(to); w = w.Add(every) {
			st := influx.StepTotals{Campaign: c, Start: w, Count: map[string]int64{}, ClicksBySource: map[string]int64{}}
			any := false
			for m := w; m.Before(w.Add(every)); m = m.Add(time.Minute) {
				if m.Before(from) || !m.Before(to) || m.After(written) || (since != nil && m.Before(*since)) {
					continue
				}
				f := s.g.full(c, m)
				any = true
				st.Count["click"] += int64(f.Clicks)
				st.Count["impression"] += int64(f.Impressions)
				st.Count["conversion"] += int64(f.Conversions)
				st.Count["pageview"] += int64(f.Pageviews)
				st.Count["cost"] += int64(f.CostEvents)
				st.Bots += int64(f.Bots)
				st.Uniques += int64(f.Uniques)
				st.Revenue += f.Revenue
				st.Cost += f.Spend
				for src, n := range f.SourceClicks {
					st.ClicksBySource[src] += int64(n)
				}
			}
			if any {
				out = append(out, st)
			}
		}
	}
	return out, nil
}

func (s *storage) WriteConfigDocs(_ context.Context, docs []influx.ConfigDoc) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return errDown
	}
	s.docs = append(s.docs, docs...)
	return nil
}

func (s *storage) LoadConfigDocs(_ context.Context, from, to time.Time) ([]influx.ConfigDoc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing {
		return nil, errDown
	}
	var out []influx.ConfigDoc
	for _, d := range s.docs {
		if !d.Written.Before(from) && d.Written.Before(to) {
			out = append(out, d)
		}
	}
	return out, nil
}

// stored returns the stored transitions, decoded.
func (s *storage) stored(t *testing.T) []storedAlert {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []storedAlert
	for _, sa := range s.alerts {
		var a alert.Alert
		if err := json.Unmarshal(sa.Doc, &a); err != nil {
			t.Fatal(err)
		}
		out = append(out, storedAlert{a, sa.Delivered})
	}
	slices.SortFunc(out, func(a, b storedAlert) int { return a.At.Compare(b.At) })
	return out
}

type storedAlert struct {
	alert.Alert
	delivered bool
}

// outlet records what reached the stream and the notifier.
type outlet struct {
	mu     sync.Mutex
	stream []live.Alert
	sent   []alert.Alert
	at     map[string]time.Time // first Send per key, in test time
	clk    *clock
	engine *Engine
}

func (o *outlet) PublishAlerts(as []live.Alert) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stream = append(o.stream, as...)
}

func (o *outlet) Send(a alert.Alert) int {
	o.mu.Lock()
	o.sent = append(o.sent, a)
	if o.at == nil {
		o.at = map[string]time.Time{}
	}
	if _, ok := o.at[a.ID+":"+a.State]; !ok {
		o.at[a.ID+":"+a.State] = o.clk.now()
	}
	e := o.engine
	o.mu.Unlock()
	e.Done(a, "hook", true) // before Send returns, as a fast target may
	return 1
}

func (o *outlet) sends() []alert.Alert {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.sent)
}

// node is one engine on the shared storage.
type node struct {
	e   *Engine
	out *outlet
}

func testConfig() Config {
	c := DefaultConfig()
	c.Notify.DeadLetterDir = ""
	return c
}

func newNode(t *testing.T, cfg Config, src *source, st *storage, clk *clock) *node {
	t.Helper()
	objs, err := NewObjects(cfg.Config, st, cfg.ObjectsRefresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := &outlet{clk: clk}
	e, err := NewEngine(EngineConfig{Config: cfg, Node: "n", Source: src, Storage: st, Objects: objs, Publish: out, Send: out, Now: clk.now},
		prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	out.engine = e
	return &node{e: e, out: out}
}

// step runs one round of the engine as Run would, loading synchronously,
// and stores and delivers what it decided unless hold.
func (n *node) step(ctx context.Context, t *testing.T, hold bool) {
	t.Helper()
	var reqs []func() loaded
	n.e.round(ctx, func(c string, w *watch, key string, mcfg anomalyMonitorConfig, b *alert.Budget) {
		kept := w.carry
		reqs = append(reqs, func() loaded { return n.e.load(ctx, c, key, mcfg, b, kept) })
	})
	for _, r := range reqs {
		l := r()
		if l.err != nil {
			t.Fatalf("load %s: %v", l.campaign, l.err)
		}
		n.e.apply(l)
		n.e.round(ctx, func(string, *watch, string, anomalyMonitorConfig, *alert.Budget) {})
	}
	if !hold {
		n.e.flush(ctx)
	}
}

type anomalyMonitorConfig = anomaly.MonitorConfig

func testutilValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }
