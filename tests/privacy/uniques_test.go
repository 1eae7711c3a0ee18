// Package privacy_test proves what docs/privacy.md says about uniques and
// erasure.
//
// Salt rotation: a question that spans several salt periods merges
// HyperLogLogs in which one visitor has a different hash in each period,
// so a returning visitor counts once per period. The path is the real one
// from a raw event to an API answer, without the network: event.Normalize
// with the agent's privacy.Hasher, the agent's rollup, the contributions'
// encoding as shipped (register updates), the aggregator's decode and the
// KPI merge the API answers with (kpi.Compute).
//
// Erasure: the InfluxQL statement the page gives operators removes a
// campaign's range at every resolution of a real InfluxDB 1.8.
package privacy_test

import (
	"fmt"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/agent/privacy"
	"github.com/tally-edge/tally/agent/rollup"
	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
)

// hllTolerance is three standard errors of a HyperLogLog at
// sketch.HLLPrecision (1.04/√2^p = 0.81 % at p=14): the bound docs/privacy.md
// quotes for a uniques estimate.
var hllTolerance = 3 * 1.04 / math.Sqrt(float64(uint64(1)<<sketch.HLLPrecision))

const secret = "privacy-uniques-test-secret-0123"

// visits returns one pageview per visitor on the given day: half carry a
// visitor id, half only an address and user agent (hashed with the site).
// The visitors are the same on every day the function is called for.
func visits(visitors int, day time.Time) []event.Raw {
	raws := make([]event.Raw, visitors)
	for i := range raws {
		r := event.Raw{Type: "pageview", Campaign: "spring_sale", Source: fmt.Sprintf("src%d", i%5), Medium: "cpc",
			URL: "https://shop.example.com/landing"}
		// Spread the visits over the day's minutes.
		r.TS.SetMillis(float64(day.Add(time.Duration(i%1440) * time.Minute).Add(time.Duration(i%60) * time.Second).UnixMilli()))
		if i%2 == 0 {
			r.Visitor = fmt.Sprintf("visitor-%d", i)
		} else {
			r.IP = fmt.Sprintf("198.51.%d.%d", (i/250)%256, i%250+1)
			r.UA = fmt.Sprintf("Mozilla/5.0 (X11; Linux x86_64; rv:%d.0) Gecko/20100101 Firefox/%d.0", 100+i%40, 100+i%40)
		}
		raws[i] = r
	}
	return raws
}

// minutes runs raw events through the agent (normalise with the hasher,
// roll up, cut) and the aggregator's decode of what was shipped, and
// returns the merged series-minutes.
func minutes(t *testing.T, period privacy.Period, raws []event.Raw) []sketch.Minute {
	t.Helper()
	hasher, err := privacy.NewHasher(secret, period)
	if err != nil {
		t.Fatal(err)
	}
	ctx := &event.Context{Now: time.UnixMilli(raws[0].TS.UnixMillis), Region: "eu", TrustBody: true, Hasher: hasher}
	events := make([]event.Event, len(raws))
	for i := range raws {
		if err := event.Normalize(&raws[i], ctx, &events[i]); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if events[i].Visitor == 0 {
			t.Fatalf("event %d has no visitor hash", i)
		}
	}
	r := rollup.New(1, rollup.DefaultConfig())
	var out rollup.Slice
	if err := r.Add(events, &out); err != nil {
		t.Fatal(err)
	}
	if err := r.Cut(&out); err != nil {
		t.Fatal(err)
	}
	merged := map[sketch.Key]*sketch.State{}
	for _, c := range out {
		if len(c.State.HLL) != 0 || len(c.State.Registers) == 0 {
			t.Fatalf("contribution ships HLL %d bytes, registers %d bytes: want register updates only", len(c.State.HLL), len(c.State.Registers))
		}
		st, err := c.State.Decode()
		if err != nil {
			t.Fatal(err)
		}
		k := sketch.Key{Series: c.Series, Minute: c.Minute}
		if merged[k] == nil {
			merged[k] = &sketch.State{}
		}
		if err := merged[k].Merge(st); err != nil {
			t.Fatal(err)
		}
	}
	ms := make([]sketch.Minute, 0, len(merged))
	for k, st := range merged {
		ms = append(ms, sketch.Minute{Series: k.Series, Minute: k.Minute, State: st})
	}
	return ms
}

func uniques(t *testing.T, ms ...[]sketch.Minute) uint64 {
	t.Helper()
	var all []sketch.Minute
	for _, m := range ms {
		all = append(all, m...)
	}
	k, _, err := kpi.Compute(all)
	if err != nil {
		t.Fatal(err)
	}
	return k.Uniques
}

func within(got uint64, want int) bool {
	return math.Abs(float64(got)-float64(want)) <= hllTolerance*float64(want)
}

// TestUniquesAcrossSaltPeriods: the same visitors on two days. Each day
// alone has as many uniques as visitors under every period; over both
// days a visitor counts once per salt period the two days fall in: twice
// with day, and with week when the days straddle a Monday; once with week
// inside one ISO week, with month inside one month, and always with never.
func TestUniquesAcrossSaltPeriods(t *testing.T) {
	const visitors = 6000
	monday := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	tuesday, sunday := monday.AddDate(0, 0, 1), monday.AddDate(0, 0, -1)
	// Ground truth from the input itself: the distinct identities sent.
	distinct := map[string]bool{}
	for _, r := range visits(visitors, monday) {
		distinct[r.Visitor+"|"+r.IP+"|"+r.UA] = true
	}
	if len(distinct) != visitors {
		t.Fatalf("generator made %d distinct visitors, want %d", len(distinct), visitors)
	}
	for _, tc := range []struct {
		period privacy.Period
		a, b   time.Time
		per    int // salt periods the two days fall in
	}{
		{privacy.Day, monday, tuesday, 2},
		{privacy.Week, monday, tuesday, 1},
		{privacy.Week, sunday, monday, 2},
		{privacy.Month, monday, tuesday, 1},
		{privacy.Never, sunday, monday, 1},
		{privacy.Never, monday, monday.AddDate(1, 0, 0), 1},
	} {
		name := fmt.Sprintf("%s/%s+%s", tc.period, tc.a.Format("Mon 2006-01-02"), tc.b.Format("Mon 2006-01-02"))
		t.Run(name, func(t *testing.T) {
			a, b := minutes(t, tc.period, visits(visitors, tc.a)), minutes(t, tc.period, visits(visitors, tc.b))
			ua, ub, both := uniques(t, a), uniques(t, b), uniques(t, a, b)
			t.Logf("uniques: first day %d, second day %d, both %d (visitors %d)", ua, ub, both, len(distinct))
			if !within(ua, len(distinct)) || !within(ub, len(distinct)) {
				t.Fatalf("one day: %d and %d uniques, want %d ± %.2f %%", ua, ub, len(distinct), 100*hllTolerance)
			}
			if want := tc.per * len(distinct); !within(both, want) {
				t.Fatalf("both days: %d uniques, want %d (%d per salt period) ± %.2f %%", both, want, len(distinct), 100*hllTolerance)
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
