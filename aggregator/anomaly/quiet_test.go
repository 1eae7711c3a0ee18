package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// quietTraffic is a campaign's minute: a day with a morning and an evening
// peak, weekends at 60 % of weekdays, Poisson noise; peak events a minute
// at the busiest time of a weekday.
func quietTraffic(rng *rand.Rand, at time.Time, peak float64) float64 {
	h := float64(at.Hour()) + float64(at.Minute())/60
	shape := 0.15 + math.Exp(-(h-11)*(h-11)/8) + 0.7*math.Exp(-(h-20)*(h-20)/6)
	week := 1.0
	if wd := at.Weekday(); wd == time.Saturday || wd == time.Sunday {
		week = 0.6
	}
	return float64(poissonN(rng, peak*shape*week/1.15))
}

// TestQuietWeeks: after a week of seasonal Poisson traffic at one-minute
// steps (warmed as history, the way a backfill or a takeover loads it), two
// more weeks raise no alert, at a few and at hundreds of events a minute.
// (The first week, judged, alerts on its first morning and weekend: see
// TestSeasonalBaseline and TestWeeklyPattern.)
func TestQuietWeeks(t *testing.T) {
	t.Parallel()
	for _, peak := range []float64{3, 300} {
		t.Run(fmt.Sprint(peak), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(7, uint64(peak)))
			d := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: Count})
			at := t0
			for range 7 * 1440 {
				if err := d.Warm(at, Obs{Num: quietTraffic(rng, at, peak)}); err != nil {
					t.Fatal(err)
				}
				at = at.Add(time.Minute)
			}
			var alerts []Transition
			for range 14 * 1440 {
				r, err := d.Observe(at, Obs{Num: quietTraffic(rng, at, peak)})
				if err != nil {
					t.Fatal(err)
				}
				if r.Transition != nil && r.Transition.State == Firing {
					alerts = append(alerts, *r.Transition)
				}
				at = at.Add(time.Minute)
			}
			if len(alerts) != 0 {
				t.Errorf("peak %v a minute: alerts in weeks 2-3: %+v", peak, alerts)
			}
		})
	}
}
