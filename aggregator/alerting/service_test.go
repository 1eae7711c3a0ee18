package alerting

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// TestServiceListsLatestTransition: the list shows each alert once, as
// its latest transition, newest first, within the campaigns asked for.
func TestServiceListsLatestTransition(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	t0 := day4.Add(20 * time.Minute)
	g := &traffic{seed: 8, peak: 300, change: brokenTracking(t0, t0.Add(15*time.Minute))}
	st := newStorage(g, clk)
	n := newNode(t, testConfig(), &source{g: g, clk: clk, campaigns: []string{"shop"}}, st, clk)
	runThrough(ctx, t, n, clk, t0)
	svc := NewService(st, n.e.cfg.Objects, DefaultConfig().Forecast)
	svc.now = clk.now
	all, err := svc.Alerts(ctx, AlertQuery{All: true})
	if err != nil {
		t.Fatal(err)
	}
	fired := firings(st.stored(t))
	if len(all.Alerts) != len(fired) || all.Firing != 0 {
		t.Fatalf("%d alerts listed (%d firing), %d stored", len(all.Alerts), all.Firing, len(fired))
	}
	for i, a := range all.Alerts {
		if a.State != alert.StateResolved || a.End == nil || !a.Delivered {
			t.Fatalf("alert %d listed as %+v, want its resolution", i, a)
		}
		if i > 0 && a.Start.After(all.Alerts[i-1].Start) {
			t.Fatal("not newest first")
		}
	}
	if got, _ := svc.Alerts(ctx, AlertQuery{Campaigns: []string{"other"}}); len(got.Alerts) != 0 {
		t.Fatalf("another campaign's list: %+v", got)
	}
	if got, _ := svc.Alerts(ctx, AlertQuery{All: true, State: alert.StateFiring}); len(got.Alerts) != 0 {
		t.Fatalf("firing only: %+v", got)
	}
	if _, err := svc.Alerts(ctx, AlertQuery{All: true, From: day4, To: day4.Add(40 * 24 * time.Hour)}); err == nil {
		t.Fatal("a span of 40 days: no error")
	}
}

// TestServiceForecast: the forecast of a campaign with a budget projects
// the day from stored history and says how its budget is pacing.
func TestServiceForecast(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: day4}
	st := newStorage(&traffic{seed: 9, peak: 300}, clk)
	st.only = []string{"shop"}
	cfg := testConfig()
	cfg.Budgets = []alert.Budget{{Campaign: "shop", Daily: 100000}}
	objs, err := NewObjects(cfg.Config, st, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := NewService(st, objs, cfg.Forecast)
	f, err := svc.Forecast(ctx, "shop", day4.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if f.Pacing == nil || f.Pacing.DailyRunsOutAt == nil || !strings.Contains(f.Summary, "at this pace the budget runs out at") {
		t.Fatalf("forecast %+v", f)
	}
	if d := f.Day; !(d.Spend.Low <= d.Spend.Projected && d.Spend.Projected <= d.Spend.High) || d.Spend.Projected < d.Spend.Actual {
		t.Fatalf("projection %+v", d.Spend)
	}
	if _, err := svc.Forecast(ctx, "nothing", day4); err != ErrNoData {
		t.Fatalf("a campaign without data: %v", err)
	}
}
