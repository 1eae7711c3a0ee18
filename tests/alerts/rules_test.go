package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// TestRulesBudgetsSilences: a threshold rule of the configuration file, a
// budget and a silence set through the admin API, on a node fed three
// minutes of live traffic of three campaigns through an agent. The rule fires
// for the busy campaign (at the webhook, signed, once) and not for the
// calm one; the silenced campaign's alert is stored, marked silenced,
// and never reaches the webhook; the budget far below the day's spend
// fires budget_daily_exhausted at once; the forecast's spend so far is
// exactly the cost sent today, and its pacing says the budget is spent;
// the dashboard (headless Chromium) lists both alerts, shows the budget's
// in its banner and the forecast, and an alert's link opens its range.
func TestRulesBudgetsSilences(t *testing.T) {
	needLong(t)
	s := startStack(t, stackOptions{nodes: 1, agents: 1, alertsExtra: `rules:
  - {name: click-flood, kind: threshold, metric: clicks, op: ">", value: 5, window: 1m, for: 1s}
`})
	n := s.nodes[0]
	// A silence of the muted campaign's rule and a budget of shop, set
	// before any traffic: they apply from the first judgement.
	for path, body := range map[string]string{
		"/api/v1/alerts/silences/maintenance": fmt.Sprintf(`{"campaign":"muted","rule":"click-flood","ends":%q,"comment":"tag manager release"}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339)),
		"/api/v1/alerts/budgets/shop": `{"daily":1}`,
	} {
		if code, resp := do(t, n, http.MethodPut, path, adminToken, []byte(body)); code != 200 {
			t.Fatalf("PUT %s: %d %s", path, code, resp)
		}
	}
	busy := map[string]float64{"click": 30, "conversion": 2, "pageview": 10, "cost": 6}
	g := &traffic{seed: 7, models: []model{
		{campaign: "shop", sources: []string{"google"}, valueCents: 2500, costCents: 37, peak: busy},
		{campaign: "muted", sources: []string{"bing"}, valueCents: 2500, costCents: 37, peak: busy},
		{campaign: "calm", sources: []string{"mail"}, valueCents: 1000, costCents: 10,
			peak: map[string]float64{"click": 0.3, "pageview": 0.3, "cost": 0.3}},
	}}
	now := time.Now().UTC()
	g.peakAt = now.Sub(now.Truncate(24 * time.Hour))
	// Live traffic only: a campaign's watch starts with its first live
	// minute (backfilled minutes would be history, never judged).
	from := now
	snd := newSender(s.eventURLs(), g.models)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	liveErr := make(chan error, 1)
	go func() { liveErr <- snd.live(ctx, g, from) }()

	var fired hit
	waitFor(t, "click-flood and budget_daily_exhausted of shop at the webhook", 3*time.Minute, func() error {
		checkLive(t, liveErr)
		hits := s.hook.all()
		var missing []string
		for _, rule := range []string{"click-flood", alert.RuleDailyExhausted} {
			h, ok := firstRule(hits, "shop", rule)
			if !ok {
				missing = append(missing, rule)
			}
			if rule == "click-flood" {
				fired = h
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing %s", strings.Join(missing, ", "))
		}
		return nil
	})
	if fired.a.Kind != alert.KindThreshold || fired.a.Silenced || !(fired.a.Value > 5) {
		t.Fatalf("click-flood of shop: %+v", fired.a)
	}
	// The silenced campaign's alert is stored, marked, and delivered to
	// nobody; the calm campaign has none.
	var muted alertList
	waitFor(t, "the silenced alert in storage", 2*time.Minute, func() error {
		if err := api(n, "/api/v1/alerts?campaign=muted", &muted); err != nil {
			return err
		}
		for _, a := range muted.Alerts {
			if a.Rule == "click-flood" {
				return nil
			}
		}
		return fmt.Errorf("not yet: %s", metricsOf(muted))
	})
	for _, a := range muted.Alerts {
		if a.Rule == "click-flood" && !a.Silenced {
			t.Fatalf("muted's click-flood is not marked silenced: %+v", a.Alert)
		}
	}
	// Let the judgements of a few more minutes reach the receiver.
	time.Sleep(5 * time.Second)
	seen := map[string]int{}
	for _, h := range s.hook.all() {
		if h.a.Rule == "click-flood" && h.a.Campaign != "shop" {
			t.Fatalf("the webhook got %s's click-flood alert (silenced or below the threshold): %+v", h.a.Campaign, h.a)
		}
		if seen[h.key]++; seen[h.key] > 1 {
			t.Fatalf("the webhook got %s twice", h.key)
		}
	}
	if len(s.hook.bad) > 0 {
		t.Fatalf("webhook requests refused: %v", s.hook.bad)
	}
	var calm alertList
	if err := api(n, "/api/v1/alerts?campaign=calm", &calm); err != nil {
		t.Fatal(err)
	}
	for _, a := range calm.Alerts {
		if a.Rule == "click-flood" {
			t.Fatalf("calm (0.3 clicks a minute) has a click-flood alert: %+v", a.Alert)
		}
	}

	// The dashboard shows both alerts, the budget's in the banner, and
	// shop's forecast.
	checkDashboard(t, n, dashboardCheck{campaign: "shop", lines: []string{"shop · click-flood", "shop · " + alert.RuleDailyExhausted},
		banner: "the daily budget of 1 is spent", forecast: "the daily budget of 1 ran out at"})

	// The traffic stops; once it is all stored, the forecast, asked by
	// the viewer of shop, has the spend so far exact and the budget spent.
	cancel()
	if err := <-liveErr; err != nil {
		t.Fatal(err)
	}
	to := time.Now().Add(time.Minute)
	waitStored(t, n, "shop", from.Add(-time.Minute), to, float64(snd.clicks("shop")), time.Minute)
	sent := snd.dayTotal("shop", time.Now().UTC().Truncate(24*time.Hour)) // the budget's day (UTC)
	var fc struct {
		Day struct {
			Spend struct {
				Actual, Projected, Low, High float64
			} `json:"spend"`
		} `json:"day"`
		Pacing *struct {
			DailyBudget    float64 `json:"daily_budget"`
			DailyExhausted bool    `json:"daily_exhausted"`
		} `json:"pacing"`
		Summary string `json:"summary"`
	}
	// A forecast is reused for 30 s (the dashboard asked for one above).
	var body string
	waitFor(t, "the forecast of all the traffic sent", 45*time.Second, func() error {
		code, b := do(t, n, http.MethodGet, "/api/v1/forecast?campaign=shop", viewerToken, nil)
		if code != 200 {
			t.Fatalf("the viewer's forecast of shop: %d %s", code, b)
		}
		body = b
		if err := json.Unmarshal([]byte(body), &fc); err != nil {
			t.Fatal(err)
		}
		if got, want := math.Round(fc.Day.Spend.Actual*100), float64(sent.spendCents); got != want {
			return fmt.Errorf("forecast spend so far %.2f, sent %.2f today", fc.Day.Spend.Actual, want/100)
		}
		return nil
	})
	if fc.Pacing == nil || fc.Pacing.DailyBudget != 1 || !fc.Pacing.DailyExhausted || fc.Day.Spend.Projected < fc.Day.Spend.Actual ||
		fc.Day.Spend.Low > fc.Day.Spend.Projected || fc.Day.Spend.High < fc.Day.Spend.Projected {
		t.Fatalf("forecast of shop: %s", body)
	}
	t.Logf("click-flood of shop at the webhook %v after its minute began; forecast: %s", fired.at.Sub(fired.a.Start).Round(time.Second), fc.Summary)
}

// firstRule returns the first firing hit of campaign's rule.
func firstRule(hits []hit, campaign, rule string) (hit, bool) {
	for _, h := range hits {
		if h.a.Campaign == campaign && h.a.Rule == rule && h.a.State == alert.StateFiring {
			return h, true
		}
	}
	return hit{}, false
}
