package alerting

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
	"github.com/tally-edge/tally/aggregator/live"
)

// day4 is 14:00 on the fourth day of generated traffic: three days of
// history behind it, the busiest time of day.
var day4 = time.Date(2026, 3, 5, 14, 0, 0, 0, time.UTC)

// brokenTracking makes conversions (and their revenue) zero in [from, to).
func brokenTracking(from, to time.Time) func(string, time.Time, *Step) {
	return func(_ string, m time.Time, s *Step) {
		if !m.Before(from) && m.Before(to) {
			s.Conversions, s.Revenue = 0, 0
		}
	}
}

// run steps the node every 5 s of test time until the clock reaches end.
func run(ctx context.Context, t *testing.T, n *node, clk *clock, end time.Time) {
	t.Helper()
	runEvery(ctx, t, n, clk, end, 5*time.Second)
}

// runEvery steps the node every d of test time until end.
func runEvery(ctx context.Context, t *testing.T, n *node, clk *clock, end time.Time, d time.Duration) {
	t.Helper()
	for clk.now().Before(end) {
		n.step(ctx, t, false)
		clk.add(d)
	}
}

// runThrough runs finely through the anomaly's first minutes, then more
// coarsely until the longest window has let go of it.
func runThrough(ctx context.Context, t *testing.T, n *node, clk *clock, t0 time.Time) {
	t.Helper()
	run(ctx, t, n, clk, t0.Add(3*time.Minute))
	runEvery(ctx, t, n, clk, t0.Add(100*time.Minute), 30*time.Second)
}

func firings(as []storedAlert) map[string]storedAlert {
	out := map[string]storedAlert{}
	for _, a := range as {
		if a.State == alert.StateFiring {
			out[a.ID] = a
		}
	}
	return out
}

// brokenMetrics are what broken tracking moves (CPA is judged as
// conversions per unit of spend).
var brokenMetrics = map[string]bool{"conversions": true, "cvr": true, "cpa": true, "revenue": true, "roas": true}

// TestEngineBrokenTrackingEarlyAndOnce: conversions fall to zero while
// clicks continue; the conversions alert is stored, streamed and sent
// within two minutes of the anomaly's start (the peek, before the second
// minute is over), each transition once, nothing before it and nothing
// that broken tracking does not explain; every metric resolves once when
// tracking is back, and every transition ends marked delivered.
func TestEngineBrokenTrackingEarlyAndOnce(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(20 * time.Minute)
	g := &traffic{seed: 1, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	runThrough(ctx, t, n, clk, t0)

	stored := st.stored(t)
	fired := firings(stored)
	var conv *storedAlert
	for _, a := range fired {
		if a.Start.Before(t0) || !brokenMetrics[a.Metric] {
			t.Fatalf("unexpected alert %s %s %s starting %s", a.Metric, a.Direction, a.State, a.Start)
		}
		if a.Metric == "conversions" {
			conv = &a
		}
	}
	if conv == nil || conv.Direction != "drop" {
		t.Fatalf("no conversions drop among %v", fired)
	}
	sentAt := n.out.at[conv.ID+":firing"]
	if sentAt.IsZero() || sentAt.Sub(t0) > 2*time.Minute {
		t.Fatalf("conversions alert sent %v after the anomaly started, want within 2m", sentAt.Sub(t0))
	}
	keys := map[string]int{}
	for _, a := range n.out.sends() {
		keys[a.ID+":"+a.State]++
	}
	for k, c := range keys {
		if c != 1 {
			t.Fatalf("%s sent %d times", k, c)
		}
	}
	resolved := 0
	for _, a := range stored {
		if !a.delivered {
			t.Fatalf("%s %s stored but not marked delivered", a.ID, a.State)
		}
		if a.State == alert.StateResolved {
			if _, ok := fired[a.ID]; !ok {
				t.Fatalf("resolution of an alert that never fired: %+v", a)
			}
			resolved++
		}
	}
	if resolved != len(fired) || len(n.out.stream) != len(stored) {
		t.Fatalf("%d fired, %d resolved, %d streamed of %d stored", len(fired), resolved, len(n.out.stream), len(stored))
	}
	t.Logf("conversions alert after %v; %d alerts: %v", sentAt.Sub(t0), len(fired), keysOf(fired))
}

func keysOf(m map[string]storedAlert) []string {
	var out []string
	for _, a := range m {
		out = append(out, a.Metric+":"+a.Direction)
	}
	return out
}

// TestEngineOwnerKilled: the owner dies before storing the alert, after
// storing it but before delivering it, and after delivering it; a new
// owner rebuilds from storage and carries on. In every case storage holds
// one firing and one resolution per alert, and every transition reaches
// the receivers once (counting what the dead owner delivered).
func TestEngineOwnerKilled(t *testing.T) {
	for _, kill := range []string{"before_store", "before_delivery", "after_delivery"} {
		t.Run(kill, func(t *testing.T) {
			ctx := context.Background()
			clk := &clock{t: day4}
			t0 := day4.Add(20 * time.Minute)
			g := &traffic{seed: 2, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
			st := newStorage(g, clk)
			src := &source{g: g, clk: clk, campaigns: []string{"shop"}}
			a := newNode(t, testConfig(), src, st, clk)
			// A runs until its round decides the conversions alert.
			decided := func() bool {
				a.e.mu.Lock()
				defer a.e.mu.Unlock()
				for _, o := range a.e.outbox {
					for _, al := range o.alerts {
						if al.Metric == "conversions" {
							return true
						}
					}
				}
				return false
			}
			for !decided() {
				if clk.now().After(t0.Add(10 * time.Minute)) {
					t.Fatal("A never decided the alert")
				}
				a.step(ctx, t, true)
				if !decided() {
					a.e.flush(ctx)
					clk.add(5 * time.Second)
				}
			}
			var delivered []string
			switch kill {
			case "before_store":
				// A dies with the alert in its outbox.
			case "before_delivery":
				a.out.engine = nil // A's deliveries die with it
				a.e.cfg.Send, a.e.cfg.Publish = nil, nil
				st.mu.Lock()
				before := len(st.alerts)
				st.mu.Unlock()
				// Store without delivering: what flush does up to deliver.
				a.e.cfg.Send = lostSender{}
				a.e.flush(ctx)
				st.mu.Lock()
				if len(st.alerts) == before {
					t.Fatal("nothing stored")
				}
				st.mu.Unlock()
			case "after_delivery":
				a.e.flush(ctx)
				a.e.flush(ctx) // and marked delivered in storage
				for _, s := range a.out.sends() {
					delivered = append(delivered, s.ID+":"+s.State)
				}
			}
			clk.add(30 * time.Second) // detection of the death, handoff
			b := newNode(t, testConfig(), src, st, clk)
			runThrough(ctx, t, b, clk, t0)

			stored := st.stored(t)
			count := map[string]int{}
			for _, s := range stored {
				count[s.ID+":"+s.State]++
			}
			fired := firings(stored)
			conv := false
			for id, f := range fired {
				conv = conv || f.Metric == "conversions"
				if count[id+":resolved"] != 1 {
					t.Fatalf("%s (%s): %d resolutions stored", id, f.Metric, count[id+":resolved"])
				}
			}
			if !conv {
				t.Fatalf("no conversions alert stored: %v", keysOf(fired))
			}
			for _, s := range b.out.sends() {
				delivered = append(delivered, s.ID+":"+s.State)
			}
			got := map[string]int{}
			for _, k := range delivered {
				got[k]++
			}
			for id := range fired {
				for _, state := range []string{"firing", "resolved"} {
					if got[id+":"+state] != 1 {
						t.Fatalf("%s:%s delivered %d times (A and B together)", fired[id].Metric, state, got[id+":"+state])
					}
				}
			}
			for k := range got {
				if !strings.HasSuffix(k, ":firing") && !strings.HasSuffix(k, ":resolved") {
					t.Fatalf("odd key %s", k)
				}
			}
		})
	}
}

// lostSender takes alerts and never delivers them: the node dies first.
type lostSender struct{}

func (lostSender) Send(alert.Alert) int { return 1 }

// TestEngineBackfillIsHistory: an anomaly two hours before the engine
// starts is history: learnt from, never alerted on.
func TestEngineBackfillIsHistory(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(-2 * time.Hour)
	g := &traffic{seed: 3, peak: 300, change: brokenTracking(t0, t0.Add(20*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	run(ctx, t, n, clk, day4.Add(20*time.Minute))
	if got := st.stored(t); len(got) != 0 {
		t.Fatalf("alerts on history: %+v", got)
	}
}

// TestEngineStoresBeforeDelivering: while InfluxDB refuses writes, an
// alert reaches no receiver and no stream; once it takes them, the alert
// is stored and delivered, once.
func TestEngineStoresBeforeDelivering(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(20 * time.Minute)
	g := &traffic{seed: 4, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	run(ctx, t, n, clk, t0)
	st.mu.Lock()
	st.failing = true
	st.mu.Unlock()
	run(ctx, t, n, clk, t0.Add(5*time.Minute))
	if len(n.out.sends()) != 0 || len(n.out.stream) != 0 {
		t.Fatalf("delivered while storage was down: %d sent, %d streamed", len(n.out.sends()), len(n.out.stream))
	}
	n.e.mu.Lock()
	waiting := len(n.e.outbox)
	n.e.mu.Unlock()
	if waiting == 0 {
		t.Fatal("nothing waits in the outbox")
	}
	st.mu.Lock()
	st.failing = false
	st.mu.Unlock()
	run(ctx, t, n, clk, t0.Add(6*time.Minute))
	fired := firings(st.stored(t))
	if len(fired) == 0 {
		t.Fatal("nothing stored after storage came back")
	}
	sent := map[string]int{}
	for _, a := range n.out.sends() {
		sent[a.ID+":"+a.State]++
	}
	for id, f := range fired {
		if sent[id+":firing"] != 1 {
			t.Fatalf("%s sent %d times", f.Metric, sent[id+":firing"])
		}
	}
}

// TestEngineRulesAndPacing: a threshold rule on CVR and a daily budget
// the day's pace overruns: the rule fires during broken tracking, and the
// pacing alert says when the budget runs out.
func TestEngineRulesAndPacing(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(20 * time.Minute)
	g := &traffic{seed: 5, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	cfg := testConfig()
	cfg.Rules = []alert.Rule{{Name: "cvr-floor", Kind: alert.KindThreshold, Metric: "cvr", Op: "<", Value: 0.02,
		Window: 5 * time.Minute, For: 2 * time.Minute, MinVolume: 100, Severity: alert.SeverityCritical}}
	// About 118,000 is spent on a weekday, 65,000 of it by 14:30: a
	// budget of 100,000 runs out in the evening.
	cfg.Budgets = []alert.Budget{{Campaign: "shop", Daily: 100000}}
	n := newNode(t, cfg, &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	run(ctx, t, n, clk, t0.Add(10*time.Minute))
	var rule, pacing *storedAlert
	for _, a := range st.stored(t) {
		switch a.Rule {
		case "cvr-floor":
			rule = &a
		case alert.RuleDailyRunsOut:
			pacing = &a
		}
	}
	if rule == nil || rule.Start.Before(t0) || rule.Severity != alert.SeverityCritical {
		t.Fatalf("cvr rule: %+v", rule)
	}
	if pacing == nil || !strings.Contains(pacing.Summary, "at this pace the daily budget of 100000 runs out at") {
		t.Fatalf("pacing alert: %+v", pacing)
	}
	t.Logf("%s", pacing.Summary)
}

// TestEngineLoadsHistoryWrittenLate: a campaign starts with six hours of
// history; a backfill then writes three more days of it. Once the late
// writes stop, the detectors load the history again, and the broken
// tracking that follows is judged against the seasonal baseline.
func TestEngineLoadsHistoryWrittenLate(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(20 * time.Minute)
	g := &traffic{seed: 6, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	backfilled := day4.Add(-6 * time.Hour)
	st.since = &backfilled // storage holds only the last six hours
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	n.step(ctx, t, false)
	clk.add(5 * time.Second)
	if got := n.e.m.rebuilds.WithLabelValues("ok"); testutilValue(got) != 1 {
		t.Fatalf("%v loads", testutilValue(got))
	}
	// The backfill: three days, written (and reported) over a minute.
	st.mu.Lock()
	st.since = nil
	st.mu.Unlock()
	for i := range 12 {
		n.e.Written([]live.Update{{Campaign: "shop", Minute: day4.Add(-72*time.Hour + time.Duration(i)*time.Hour).Unix()}})
		n.step(ctx, t, false)
		clk.add(5 * time.Second)
	}
	run(ctx, t, n, clk, day4.Add(6*time.Minute))
	if got := testutilValue(n.e.m.rebuilds.WithLabelValues("ok")); got != 2 {
		t.Fatalf("%v loads after a backfill, want 2", got)
	}
	st.mu.Lock()
	served := st.stepsServed
	st.mu.Unlock()
	if served < 72*12 {
		t.Fatalf("%d steps of history loaded in all, want three days' worth", served)
	}
	rolling := testutilValue(n.e.m.judgedBy.WithLabelValues("rolling"))
	run(ctx, t, n, clk, t0.Add(5*time.Minute))
	if fired := firings(st.stored(t)); len(fired) == 0 {
		t.Fatal("no alert after the reload")
	}
	// The metrics say which baseline judged: the six hours the rolling
	// one, the minutes after the reload the seasonal one.
	if seasonal := testutilValue(n.e.m.judgedBy.WithLabelValues("seasonal")); seasonal == 0 ||
		testutilValue(n.e.m.judgedBy.WithLabelValues("rolling")) != rolling {
		t.Fatalf("after the reload: %v points judged seasonal, rolling went from %v to %v", seasonal, rolling,
			testutilValue(n.e.m.judgedBy.WithLabelValues("rolling")))
	}
}

// TestEngineStalledMinutesAreHistory: an engine that could not run for
// an hour and a half (the process stopped) does not alert on minutes older
// than judge_lag when it gets to them. (An anomaly within the hour before
// the minutes it judges would still show in its longest window.)
func TestEngineStalledMinutesAreHistory(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(10 * time.Minute)
	g := &traffic{seed: 7, peak: 300, change: brokenTracking(t0, t0.Add(10*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	run(ctx, t, n, clk, day4.Add(time.Minute))
	clk.add(90 * time.Minute) // stalled past the anomaly, judge_lag and the longest window
	run(ctx, t, n, clk, clk.now().Add(time.Minute))
	if got := st.stored(t); len(got) != 0 {
		t.Fatalf("alerts on minutes judged 90 minutes late: %d", len(got))
	}
}

// TestEngineWaitsForHistoryAndKeepsItsJudgements: a campaign whose
// history is still being written (a backfill) is not loaded until the late
// writes stop; a reload for late data after an alert fired neither judges
// its minutes again nor sends the alert again.
func TestEngineWaitsForHistoryAndKeepsItsJudgements(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(5 * time.Minute)
	g := &traffic{seed: 10, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	loads := func() float64 { return testutilValue(n.e.m.rebuilds.WithLabelValues("ok")) }
	for i := range 12 { // a minute of backfill writes; the first discovers the campaign
		n.e.Written([]live.Update{{Campaign: "shop", Minute: day4.Add(-time.Duration(48-i) * time.Hour).Unix()}})
		clk.add(5 * time.Second)
		n.step(ctx, t, false)
	}
	if got := loads(); got != 0 {
		t.Fatalf("%v loads while the history was being written", got)
	}
	run(ctx, t, n, clk, clk.now().Add(35*time.Second))
	if got := loads(); got != 1 {
		t.Fatalf("%v loads once the writes stopped, want 1", got)
	}
	runThrough(ctx, t, n, clk, t0)
	if len(firings(st.stored(t))) == 0 {
		t.Fatal("nothing fired")
	}
	sentBefore := len(n.out.sends())
	// Late data now: the campaign is loaded again, carrying on.
	n.e.Written([]live.Update{{Campaign: "shop", Minute: day4.Unix()}})
	runEvery(ctx, t, n, clk, clk.now().Add(2*time.Minute), 5*time.Second)
	if got := loads(); got != 2 {
		t.Fatalf("%v loads after late data, want 2", got)
	}
	runEvery(ctx, t, n, clk, clk.now().Add(10*time.Minute), 30*time.Second)
	if got := len(n.out.sends()); got != sentBefore {
		t.Fatalf("%d more sends after the reload: %v", got-sentBefore, n.out.sends()[sentBefore:])
	}
}
