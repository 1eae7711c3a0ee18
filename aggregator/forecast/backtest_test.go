package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The generated campaign: a day with a morning and an evening peak, weekdays
// busier than weekends, a day level that wanders (±8 % a day, a random walk)
// and drifts within the day (±3 % an hour, a random walk from the day's level),
// clicks Poisson per minute, a cost per click around 0.50, 3 % of clicks
// converting at a value around 60.
var weekdayFactor = [7]float64{0.5, 1.0, 1.05, 1.1, 1.0, 0.9, 0.6} // Sunday first

func intraday(hour float64) float64 {
	return 0.25 + 1.0*math.Exp(-(hour-11)*(hour-11)/8) + 0.7*math.Exp(-(hour-20)*(hour-20)/6)
}

type genDay struct {
	start   time.Time
	minutes []Amounts
	totals  Amounts
}

// generate returns days of per-minute amounts; peak is the clicks per minute
// at the busiest time of an average weekday.
func generate(seed uint64, start time.Time, days int, peak float64) []genDay {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	level := 1.0
	out := make([]genDay, days)
	for d := range days {
		level *= math.Exp(rng.NormFloat64() * 0.08)
		day := genDay{start: start.AddDate(0, 0, d), minutes: make([]Amounts, 1440)}
		wf := weekdayFactor[day.start.Weekday()]
		drift := 1.0
		for m := range 1440 {
			if m%60 == 0 {
				drift *= math.Exp(rng.NormFloat64() * 0.03)
			}
			rate := peak * level * drift * wf * intraday(float64(m)/60) / 1.25
			clicks := poisson(rng, rate)
			var a Amounts
			for range clicks {
				a.Spend += 0.5 * math.Exp(rng.NormFloat64()*0.3)
				a.CostEvents++
				if rng.Float64() < 0.03 {
					a.Conversions++
					a.Revenue += 60 * math.Exp(rng.NormFloat64()*0.5)
				}
			}
			day.minutes[m] = a
			day.totals.Spend += a.Spend
			day.totals.Conversions += a.Conversions
			day.totals.Revenue += a.Revenue
		}
		out[d] = day
	}
	return out
}

func poisson(rng *rand.Rand, lambda float64) int {
	if lambda > 50 {
		return max(0, int(math.Round(lambda+rng.NormFloat64()*math.Sqrt(lambda))))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// backtestResult is the error of the noon projection of end-of-day totals.
type backtestResult struct {
	days                          int
	mapeSpend, mapeConv           float64 // ours
	mapeSpendLinear, mapeConvLin  float64 // baseline: so far × 24/12
	mapeSpendWeekAgo, mapeConvAgo float64 // baseline: the same weekday a week ago (days 8+)
	coverSpend, coverConv         float64 // share of days whose total fell inside the interval
}

// backtest feeds the generated days minute by minute and, at noon of each
// day from firstDay (0-based), compares the projection with the day's total.
func backtest(t testing.TB, days []genDay, firstDay, lastDay int) backtestResult {
	f, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var r backtestResult
	ape := func(p, a float64) float64 { return math.Abs(p-a) / a }
	for d, day := range days {
		for m, a := range day.minutes {
			at := day.start.Add(time.Duration(m) * time.Minute)
			if m == 720 && d >= firstDay && d <= lastDay {
				fc, err := f.Today(at)
				if err != nil {
					t.Fatal(err)
				}
				tot := day.totals
				r.days++
				r.mapeSpend += ape(fc.Spend.Projected, tot.Spend)
				r.mapeConv += ape(fc.Conversions.Projected, tot.Conversions)
				r.mapeSpendLinear += ape(2*fc.Spend.Actual, tot.Spend)
				r.mapeConvLin += ape(2*fc.Conversions.Actual, tot.Conversions)
				if d >= 7 {
					r.mapeSpendWeekAgo += ape(days[d-7].totals.Spend, tot.Spend)
					r.mapeConvAgo += ape(days[d-7].totals.Conversions, tot.Conversions)
				}
				if fc.Spend.Low <= tot.Spend && tot.Spend <= fc.Spend.High {
					r.coverSpend++
				}
				if fc.Conversions.Low <= tot.Conversions && tot.Conversions <= fc.Conversions.High {
					r.coverConv++
				}
			}
			if err := f.Observe(at, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := float64(r.days)
	weekAgo := float64(r.days - max(0, 7-firstDay))
	r.mapeSpend, r.mapeConv = 100*r.mapeSpend/n, 100*r.mapeConv/n
	r.mapeSpendLinear, r.mapeConvLin = 100*r.mapeSpendLinear/n, 100*r.mapeConvLin/n
	if weekAgo > 0 {
		r.mapeSpendWeekAgo, r.mapeConvAgo = 100*r.mapeSpendWeekAgo/weekAgo, 100*r.mapeConvAgo/weekAgo
	}
	r.coverSpend, r.coverConv = r.coverSpend/n, r.coverConv/n
	return r
}

var monday = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// TestBacktestNoonProjection: over generated seasonal weeks, the noon
// projection of end-of-day spend and conversions beats extrapolating the
// clock (the morning is not half the day) and the same weekday a week ago
// (the level wanders), and its 80 % interval covers most days.
func TestBacktestNoonProjection(t *testing.T) {
	days := generate(1, monday, 42, 30)
	r := backtest(t, days, 7, 41) // weeks 2-6
	t.Logf("noon projection over %d days: spend MAPE %.2f%% (clock %.2f%%, week ago %.2f%%), conversions %.2f%% (clock %.2f%%, week ago %.2f%%), 80%% interval covers spend %.0f%%, conversions %.0f%%",
		r.days, r.mapeSpend, r.mapeSpendLinear, r.mapeSpendWeekAgo, r.mapeConv, r.mapeConvLin, r.mapeConvAgo, 100*r.coverSpend, 100*r.coverConv)
	if r.mapeSpend > 5 || r.mapeConv > 8 {
		t.Fatalf("MAPE spend %.2f%%, conversions %.2f%%: want at most 5%% and 8%%", r.mapeSpend, r.mapeConv)
	}
	if r.mapeSpend > 0.7*r.mapeSpendLinear || r.mapeSpend > 0.7*r.mapeSpendWeekAgo {
		t.Fatalf("spend MAPE %.2f%% is not 30%% below the baselines' (%.2f%%, %.2f%%)", r.mapeSpend, r.mapeSpendLinear, r.mapeSpendWeekAgo)
	}
	if r.coverSpend < 0.6 || r.coverConv < 0.6 {
		t.Fatalf("the 80%% interval covers spend on %.0f%% and conversions on %.0f%% of days", 100*r.coverSpend, 100*r.coverConv)
	}
}

// TestBacktestLittleHistory: on days 2 to 7 (one to six days of history, no
// weekday seen twice) the projection is still useful.
func TestBacktestLittleHistory(t *testing.T) {
	days := generate(2, monday, 7, 30)
	r := backtest(t, days, 1, 6)
	t.Logf("days 2-7: spend MAPE %.2f%% (clock %.2f%%), conversions %.2f%% (clock %.2f%%), interval covers %.0f%% / %.0f%%",
		r.mapeSpend, r.mapeSpendLinear, r.mapeConv, r.mapeConvLin, 100*r.coverSpend, 100*r.coverConv)
	if r.mapeSpend > 15 || r.mapeSpend > r.mapeSpendLinear {
		t.Fatalf("spend MAPE %.2f%% with little history (clock baseline %.2f%%)", r.mapeSpend, r.mapeSpendLinear)
	}
}

// BenchmarkBacktest reports the backtest's figures (for docs/alerts.md):
//
//	go test -run='^$' -bench=Backtest -benchtime=1x ./aggregator/forecast/
func BenchmarkBacktest(b *testing.B) {
	for _, tc := range []struct {
		name        string
		peak        float64
		first, last int
	}{{"large_weeks2-6", 30, 7, 41}, {"small_weeks2-6", 1, 7, 41}, {"large_days2-7", 30, 1, 6}} {
		b.Run(tc.name, func(b *testing.B) {
			var r backtestResult
			for i := 0; i < b.N; i++ {
				r = backtest(b, generate(uint64(10+i), monday, tc.last+1, tc.peak), tc.first, tc.last)
			}
			b.ReportMetric(r.mapeSpend, "spend_MAPE_%")
			b.ReportMetric(r.mapeConv, "conv_MAPE_%")
			b.ReportMetric(r.mapeSpendLinear, "spend_clock_MAPE_%")
			b.ReportMetric(r.mapeConvLin, "conv_clock_MAPE_%")
			if r.mapeSpendWeekAgo > 0 {
				b.ReportMetric(r.mapeSpendWeekAgo, "spend_weekago_MAPE_%")
				b.ReportMetric(r.mapeConvAgo, "conv_weekago_MAPE_%")
			}
			b.ReportMetric(100*r.coverSpend, "spend_cover_%")
			b.ReportMetric(100*r.coverConv, "conv_cover_%")
		})
	}
}
