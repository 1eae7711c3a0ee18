package anomaly

import (
	"slices"
	"sort"
	"testing"
	"time"
)

// campaign is one quiet step: 4000 impressions, 200 clicks from three
// sources, 20 conversions worth 50 each, 400 spent in 40 cost events, 5 %
// bots.
func campaign() Counters {
	return Counters{Impressions: 4000, Clicks: 200, Conversions: 20, Pageviews: 1000, Uniques: 900,
		Revenue: 1000, Spend: 400, CostEvents: 40, Events: 5260, Bots: 277,
		SourceClicks: map[string]float64{"google": 100, "bing": 60, "meta": 40}}
}

// monitorRun feeds three quiet days and then six anomalous steps, and
// returns the metrics that fired with their directions.
func monitorRun(t *testing.T, cfg MonitorConfig, anomalous func(c *Counters)) (map[Metric]Direction, *Monitor) {
	t.Helper()
	m, err := NewMonitor(cfg, step5)
	if err != nil {
		t.Fatal(err)
	}
	got := map[Metric]Direction{}
	for i := range threeDays + 6 {
		c := campaign()
		if i >= threeDays {
			anomalous(&c)
		}
		evs, err := m.Observe(t0.Add(time.Duration(i)*step5), c)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.State == Firing {
				if _, dup := got[e.Metric]; dup {
					t.Fatalf("%s fired twice", e.Metric)
				}
				got[e.Metric] = e.Direction
			}
		}
	}
	return got, m
}

func keys(m map[Metric]Direction) []string {
	var out []string
	for k, v := range m {
		out = append(out, string(k)+":"+v.String())
	}
	sort.Strings(out)
	return out
}

func TestMonitorQuiet(t *testing.T) {
	t.Parallel()
	got, m := monitorRun(t, DefaultMonitorConfig(), func(*Counters) {})
	if len(got) != 0 {
		t.Fatalf("quiet campaign alerted: %v", keys(got))
	}
	want := append(slices.Clone(AllMetrics), ShareMetric("bing"), ShareMetric("google"), ShareMetric("meta"))
	if !slices.Equal(m.Metrics(), want) {
		t.Fatalf("metrics %v, want %v", m.Metrics(), want)
	}
}

// TestMonitorMixShift: google's share of clicks falls from 50 % to 20 % and
// bing's rises, with the same clicks in total: only the shares alert.
func TestMonitorMixShift(t *testing.T) {
	t.Parallel()
	got, _ := monitorRun(t, DefaultMonitorConfig(), func(c *Counters) {
		c.SourceClicks = map[string]float64{"google": 40, "bing": 120, "meta": 40}
	})
	want := []string{"share:source=bing:spike", "share:source=google:drop"}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("alerts %v, want %v", keys(got), want)
	}
}

// TestMonitorBotShare: five times the bots on the same traffic.
func TestMonitorBotShare(t *testing.T) {
	t.Parallel()
	got, _ := monitorRun(t, DefaultMonitorConfig(), func(c *Counters) { c.Bots *= 5 })
	if want := []string{"bot_share:spike"}; !slices.Equal(keys(got), want) {
		t.Fatalf("alerts %v, want %v", keys(got), want)
	}
}

// TestMonitorBrokenTracking: conversions (and their revenue) fall to zero
// while clicks and spend continue: conversions, revenue, CVR and ROAS drop
// and CPA (judged as conversions per unit of spend) spikes.
func TestMonitorBrokenTracking(t *testing.T) {
	t.Parallel()
	got, _ := monitorRun(t, DefaultMonitorConfig(), func(c *Counters) { c.Conversions, c.Revenue = 0, 0 })
	want := []string{"conversions:drop", "cpa:spike", "cvr:drop", "revenue:drop", "roas:drop"}
	if !slices.Equal(keys(got), want) {
		t.Fatalf("alerts %v, want %v", keys(got), want)
	}
}

// TestMonitorMaxShares: the share detectors are bounded; the first sources
// seen at once are taken in name order.
func TestMonitorMaxShares(t *testing.T) {
	t.Parallel()
	cfg := DefaultMonitorConfig()
	cfg.MaxShares = 2
	_, m := monitorRun(t, cfg, func(c *Counters) {
		c.SourceClicks = map[string]float64{"google": 100, "bing": 60, "meta": 40, "new": 5}
	})
	if m.Detector(ShareMetric("bing")) == nil || m.Detector(ShareMetric("google")) == nil ||
		m.Detector(ShareMetric("meta")) != nil || m.Detector(ShareMetric("new")) != nil {
		t.Fatalf("share detectors %v, want bing and google only", m.Metrics())
	}
}

func TestMonitorConfig(t *testing.T) {
	cfg := DefaultMonitorConfig()
	cfg.Metrics = []Metric{"clicks", "nonsense"}
	if err := cfg.Validate(); err == nil {
		t.Fatal("unknown metric accepted")
	}
	cfg = DefaultMonitorConfig()
	cfg.MaxShares = 1000
	if err := cfg.Validate(); err == nil {
		t.Fatal("1000 shares accepted")
	}
	cfg = DefaultMonitorConfig()
	cfg.Metrics = []Metric{ShareMetric("google")}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a named share metric: %v", err)
	}
}

// TestMonitorJudgedBy: a monitor reports the baseline its last point was
// judged against: none before min_history, rolling until
// min_seasonal_history, seasonal after, for every metric; warming counts
// as history but is not a judgement.
func TestMonitorJudgedBy(t *testing.T) {
	t.Parallel()
	m, err := NewMonitor(DefaultMonitorConfig(), step5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Observe(t0, campaign()); err != nil {
		t.Fatal(err)
	}
	n := len(m.Metrics()) // the shares of the sources seen are added
	if got := m.JudgedBy(NoBaseline); got != n || m.JudgedBy(Rolling)+m.JudgedBy(Seasonal) != 0 {
		t.Fatalf("first point: %d of %d metrics without a baseline, %d rolling, %d seasonal", got, n, m.JudgedBy(Rolling), m.JudgedBy(Seasonal))
	}
	at := t0.Add(step5)
	for ; at.Before(t0.Add(12 * time.Hour)); at = at.Add(step5) {
		if err := m.Warm(at, campaign()); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.JudgedBy(NoBaseline); got != n {
		t.Fatalf("warming changed the counts of the last judgement: %d", got)
	}
	if _, err := m.Observe(at, campaign()); err != nil {
		t.Fatal(err)
	}
	if got := m.JudgedBy(Rolling); got != n {
		t.Fatalf("after 12 h: %d of %d metrics rolling (none %d, seasonal %d)", got, n, m.JudgedBy(NoBaseline), m.JudgedBy(Seasonal))
	}
	for at = at.Add(step5); at.Before(t0.Add(49 * time.Hour)); at = at.Add(step5) {
		if err := m.Warm(at, campaign()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Observe(at, campaign()); err != nil {
		t.Fatal(err)
	}
	if got := m.JudgedBy(Seasonal); got != n {
		t.Fatalf("after 49 h: %d of %d metrics seasonal (none %d, rolling %d)", got, n, m.JudgedBy(NoBaseline), m.JudgedBy(Rolling))
	}
}
