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

// TestQuietWeeks: three weeks of seasonal Poisson traffic at one-minute
// steps raise no alert once a week of history shows the weekly pattern, at
// any volume; the first week, judged against the rolling and then the daily
// baseline alone, may alert at most on its first weekend.
func TestQuietWeeks(t *testing.T) {
	t.Parallel()
	for _, peak := range []float64{3, 300} {
		t.Run(fmt.Sprint(peak), func(t *testing.T) {
			t.Parallel()
			quietWeeks(t, peak)
		})
	}
}

func quietWeeks(t *testing.T, peak float64) {
	{
		rng := rand.New(rand.NewPCG(7, uint64(peak)))
		d := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: Count})
		var first, later []Transition
		for i, r := range run(t, d, time.Minute, 21*1440, func(_ int, at time.Time) Obs {
			return Obs{Num: quietTraffic(rng, at, peak)}
		}) {
			if r.Transition == nil || r.Transition.State != Firing {
				continue
			}
			if i < 8*1440 {
				first = append(first, *r.Transition)
			} else {
				later = append(later, *r.Transition)
			}
		}
		if len(later) != 0 {
			t.Errorf("peak %v a minute: alerts in weeks 2-3: %+v", peak, later)
		}
		for _, tr := range first {
			if wd := tr.Start.Weekday(); wd != time.Saturday && tr.Start.After(t0.Add(2*24*time.Hour)) {
				t.Errorf("peak %v a minute: first-week alert on a %v: %+v", peak, wd, tr)
			}
		}
		t.Logf("peak %v a minute: %d alerts in the first week (%v), none after", peak, len(first), first)
	}
}
