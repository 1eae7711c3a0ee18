package alerts

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tally-edge/tally/aggregator/alert"
)

// TestAlertsShort: eight hours of a shop's traffic backfilled through an
// agent with event times (history: no alert), live traffic on top, then
// tracking breaks (conversions fall to zero while clicks go on). The
// conversions alert reaches the webhook (signed, with its idempotency
// key), the stream and the API within two minutes of the break, once.
func TestAlertsShort(t *testing.T) {
	needLong(t)
	s := startStack(t, stackOptions{nodes: 1, agents: 1})
	n := s.nodes[0]
	shop := model{campaign: "shop", sources: []string{"google"}, valueCents: 4000, costCents: 500,
		peak: map[string]float64{"click": 60, "conversion": 30, "cost": 3}}
	// Eight hours of history: the rolling baseline (the seasonal one
	// wants two days), so the traffic is nearly flat.
	g := &traffic{seed: 1, models: []model{shop}, flatness: 0.9}
	start := time.Now().UTC()
	g.peakAt = start.Sub(start.Truncate(24*time.Hour)) + 5*time.Minute // busy when tracking breaks
	liveFrom := start.Truncate(time.Minute)
	histFrom := liveFrom.Add(-8 * time.Hour)
	snd := newSender(s.eventURLs(), g.models)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := snd.backfill(ctx, g, histFrom, liveFrom, 8000); err != nil {
		t.Fatal(err)
	}
	backfilled := time.Since(start)
	liveErr := make(chan error, 1)
	go func() { liveErr <- snd.live(ctx, g, liveFrom) }()
	stream := openStream(t, n)

	// The detectors load the history once it stops arriving (the node
	// says so in its metrics); tracking breaks at the next whole minute
	// after that.
	waitFor(t, "the detectors to load the history", 3*time.Minute, func() error {
		var m string
		if err := getText(n, "/metrics", &m); err != nil {
			return err
		}
		if !strings.Contains(m, `tally_aggregator_alert_rebuilds_total{result="ok"} 1`) {
			return fmt.Errorf("not loaded yet")
		}
		return nil
	})
	loaded := time.Since(start)
	t0 := time.Now().Add(15 * time.Second).Truncate(time.Minute).Add(time.Minute)
	g.plan(anomaly{campaign: "shop", kind: "tracking", start: t0, end: t0.Add(10 * time.Minute)})
	t.Logf("history (%v of it) sent in %v, loaded by the detectors after %v; tracking breaks at %s", liveFrom.Sub(histFrom),
		backfilled.Round(time.Second), loaded.Round(time.Second), t0.Format(time.TimeOnly))

	var hook hit
	waitFor(t, "the conversions alert at the webhook", time.Until(t0)+3*time.Minute, func() error {
		select {
		case err := <-liveErr:
			t.Fatalf("live traffic: %v", err)
		default:
		}
		h, ok := first(s.hook.all(), "shop", "conversions")
		if !ok {
			return fmt.Errorf("not yet")
		}
		hook = h
		return nil
	})
	if d := hook.at.Sub(t0); d > 2*time.Minute {
		t.Fatalf("the conversions alert reached the webhook %v after tracking broke, want within 2m", d)
	}
	if hook.a.Direction != "drop" || hook.a.Kind != alert.KindAnomaly || !hook.a.Start.After(t0.Add(-time.Second)) {
		t.Fatalf("webhook alert %+v", hook.a)
	}
	waitFor(t, "the alert on the stream", 30*time.Second, func() error {
		if _, ok := first(stream.all(), "shop", "conversions"); !ok {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	sh, _ := first(stream.all(), "shop", "conversions")
	var list alertList
	if err := api(n, "/api/v1/alerts?campaign=shop", &list); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, a := range list.Alerts {
		if a.Start.Before(t0) {
			t.Fatalf("an alert before tracking broke (the history is not judged): %+v", a.Alert)
		}
		stored[a.ID] = true
	}
	if !stored[hook.a.ID] || sh.a.ID != hook.a.ID {
		t.Fatalf("the webhook's alert %s is not the stream's %s or not stored (%v)", hook.a.ID, sh.a.ID, stored)
	}
	// Each transition once at every outlet.
	for name, hits := range map[string][]hit{"webhook": s.hook.all(), "stream": stream.all()} {
		seen := map[string]int{}
		for _, h := range hits {
			if seen[h.key]++; seen[h.key] > 1 {
				t.Fatalf("%s got %s twice", name, h.key)
			}
		}
	}
	if len(s.hook.bad) > 0 {
		t.Fatalf("webhook requests refused: %v", s.hook.bad)
	}
	t.Logf("conversions alert: webhook %v, stream %v after tracking broke; %d alerts (%s)", hook.at.Sub(t0).Round(time.Second),
		sh.at.Sub(t0).Round(time.Second), len(list.Alerts), metricsOf(list))
}

func metricsOf(l alertList) string {
	var out []string
	for _, a := range l.Alerts {
		out = append(out, a.Metric+":"+a.Direction)
	}
	return strings.Join(out, ", ")
}

// getText gets a text answer of node n as the admin.
func getText(n *node, path string, out *string) error {
	b, err := get(n, path)
	*out = string(b)
	return err
}
