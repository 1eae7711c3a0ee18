package forecast

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"
)

func newF(t *testing.T, tz string) *Forecaster {
	t.Helper()
	cfg := DefaultConfig()
	cfg.TimeZone = tz
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// spendFrom feeds perMinute spend (one cost event a minute) from from to to.
func spendFrom(t *testing.T, f *Forecaster, from, to time.Time, perMinute float64) {
	t.Helper()
	for at := from; at.Before(to); at = at.Add(time.Minute) {
		if err := f.Observe(at, Amounts{Spend: perMinute, CostEvents: 1, Conversions: perMinute / 10, Revenue: perMinute * 3}); err != nil {
			t.Fatal(err)
		}
	}
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// TestClockBasis: with no history the day's shape is the clock's; 6,000 by
// 10:00 of a 10,000 budget runs out at 16:40.
func TestClockBasis(t *testing.T) {
	f := newF(t, "UTC")
	spendFrom(t, f, monday, monday.Add(10*time.Hour), 10)
	now := monday.Add(10 * time.Hour)
	p, err := f.Pacing(now, Budget{Daily: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if p.Day.Basis != "clock" || !near(p.Day.Spend.Actual, 6000, 1e-6) || !near(p.Day.Spend.Projected, 14400, 1) {
		t.Fatalf("day %+v, want clock basis, 6000 so far, 14400 projected", p.Day)
	}
	if !(p.Day.Spend.Low >= 6000 && p.Day.Spend.Low < 14400 && p.Day.Spend.High > 14400) {
		t.Fatalf("interval %+v does not hold the projection", p.Day.Spend)
	}
	if !near(p.BudgetShare, 0.6, 1e-9) || !near(p.PaceVsClock, 0.6/(10.0/24), 1e-9) {
		t.Fatalf("budget share %v, pace %v", p.BudgetShare, p.PaceVsClock)
	}
	if p.DailyExhausted || p.DailyRunsOutAt == nil || !p.DailyRunsOutAt.Equal(monday.Add(16*time.Hour+40*time.Minute)) {
		t.Fatalf("runs out at %v (exhausted %v), want 16:40", p.DailyRunsOutAt, p.DailyExhausted)
	}
	if !near(p.Day.Conversions.Projected, 1440, 5) || !near(p.Day.ROAS.Projected, 3, 1e-6) {
		t.Fatalf("conversions %+v, ROAS %+v", p.Day.Conversions, p.Day.ROAS)
	}
}

// TestExhausted: a budget already spent says when it ran out.
func TestExhausted(t *testing.T) {
	f := newF(t, "UTC")
	spendFrom(t, f, monday, monday.Add(10*time.Hour), 20) // 12,000 by 10:00
	p, err := f.Pacing(monday.Add(10*time.Hour), Budget{Daily: 10000})
	if err != nil {
		t.Fatal(err)
	}
	if !p.DailyExhausted || p.DailyRunsOutAt == nil || !p.DailyRunsOutAt.Equal(monday.Add(8*time.Hour+20*time.Minute)) {
		t.Fatalf("exhausted %v at %v, want true at 08:20", p.DailyExhausted, p.DailyRunsOutAt)
	}
}

// TestExhaustedInTheSlotInProgress: a budget spent within the slot in
// progress ran out before now, not later in the slot: at one a minute from
// 06:02, a budget of 29 is reached in 06:31 (the slot 06:30–06:45 holds two
// minutes so far), not at 06:37:30 (half of the whole slot).
func TestExhaustedInTheSlotInProgress(t *testing.T) {
	f := newF(t, "UTC")
	spendFrom(t, f, monday.Add(6*time.Hour+2*time.Minute), monday.Add(6*time.Hour+32*time.Minute), 1)
	now := monday.Add(6*time.Hour + 32*time.Minute)
	p, err := f.Pacing(now, Budget{Daily: 29})
	if err != nil {
		t.Fatal(err)
	}
	want := monday.Add(6*time.Hour + 31*time.Minute)
	if !p.DailyExhausted || p.DailyRunsOutAt == nil || p.DailyRunsOutAt.After(now) || p.DailyRunsOutAt.Sub(want).Abs() > time.Minute {
		t.Fatalf("exhausted %v at %v, want true at about %v (now %v)", p.DailyExhausted, p.DailyRunsOutAt, want, now)
	}
}

// TestFirstDayLate: a campaign whose history begins late in a day (24
// minutes before midnight, a forecast at 06:40) has a typical day that
// spends nothing by 06:40, so neither pace nor typical day bounds today:
// the interval has no upper end, and still encodes as JSON (the API
// answered an empty body when it did not).
func TestFirstDayLate(t *testing.T) {
	f := newF(t, "UTC")
	spendFrom(t, f, monday.Add(-24*time.Minute), monday.Add(6*time.Hour+40*time.Minute), 1)
	d, err := f.Today(monday.Add(6*time.Hour + 40*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if d.Spend.Actual != 400 || d.Spend.Projected < 400 {
		t.Fatalf("spend %+v, want 400 so far", d.Spend)
	}
	if _, err := json.Marshal(d); err != nil {
		t.Fatal(err)
	}
}

// TestProjectionJSON: an unbounded interval is null, not an error.
func TestProjectionJSON(t *testing.T) {
	b, err := json.Marshal(Projection{Actual: 3, Projected: 3, Low: 3, High: math.Inf(1)})
	if err != nil || string(b) != `{"actual":3,"projected":3,"low":3,"high":null}` {
		t.Fatalf("%s %v", b, err)
	}
}

// TestShapeFromHistory: after a week of days that spend only between 08:00
// and 16:00, half the day's spend is done at noon; 5,000 by noon projects
// 10,000 and an 8,000 budget runs out when 80 % is usually done: 14:24.
func TestShapeFromHistory(t *testing.T) {
	f := newF(t, "UTC")
	for d := range 7 {
		day := monday.AddDate(0, 0, d)
		spendFrom(t, f, day.Add(8*time.Hour), day.Add(16*time.Hour), 1000.0/480)
	}
	today := monday.AddDate(0, 0, 7)
	spendFrom(t, f, today.Add(8*time.Hour), today.Add(12*time.Hour), 5000.0/240)
	now := today.Add(12 * time.Hour)
	p, err := f.Pacing(now, Budget{Daily: 8000})
	if err != nil {
		t.Fatal(err)
	}
	if p.Day.Basis != "all_days" || p.Day.HistoryDays != 7 || !near(p.Day.ActivityShare, 0.5, 1e-9) {
		t.Fatalf("basis %s over %d days, activity share %v", p.Day.Basis, p.Day.HistoryDays, p.Day.ActivityShare)
	}
	// Today is five times a typical day: the pace speaks, the history (1,000)
	// pulls a little.
	if p.Day.Spend.Projected < 9000 || p.Day.Spend.Projected > 10000 {
		t.Fatalf("projected %v, want about 10,000", p.Day.Spend.Projected)
	}
	if p.DailyRunsOutAt == nil || !p.DailyRunsOutAt.Equal(today.Add(14*time.Hour+24*time.Minute)) {
		t.Fatalf("runs out at %v, want 14:24", p.DailyRunsOutAt)
	}
	if !near(p.PaceVsTypical, (5000.0/8000)/0.5, 1e-9) {
		t.Fatalf("pace vs typical %v", p.PaceVsTypical)
	}
	if p, _ := f.Pacing(now, Budget{Daily: 20000}); p.DailyRunsOutAt != nil {
		t.Fatalf("a budget the day will not reach runs out at %v", p.DailyRunsOutAt)
	}
}

// TestWeekdayBasis: two weeks of history make each weekday its own shape.
func TestWeekdayBasis(t *testing.T) {
	f := newF(t, "UTC")
	for d := range 14 {
		day := monday.AddDate(0, 0, d)
		if day.Weekday() == time.Monday {
			spendFrom(t, f, day.Add(6*time.Hour), day.Add(10*time.Hour), 1) // Mondays are early
		} else {
			spendFrom(t, f, day.Add(14*time.Hour), day.Add(18*time.Hour), 1)
		}
	}
	mon := monday.AddDate(0, 0, 14)
	spendFrom(t, f, mon.Add(6*time.Hour), mon.Add(8*time.Hour), 1)
	fc, err := f.Today(mon.Add(8 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if fc.Basis != "weekday" || fc.HistoryDays != 2 || !near(fc.ActivityShare, 0.5, 1e-9) {
		t.Fatalf("basis %s (%d days), share %v: want Mondays' shape, half done at 08:00", fc.Basis, fc.HistoryDays, fc.ActivityShare)
	}
}

// TestFlight: a week of 1,000 a day; a 14,500 total over a flight that ends
// in 10 days runs out at noon 7 days from now (of flat days).
func TestFlight(t *testing.T) {
	f := newF(t, "UTC")
	for d := range 7 {
		day := monday.AddDate(0, 0, d)
		spendFrom(t, f, day, day.Add(24*time.Hour), 1000.0/1440)
	}
	today := monday.AddDate(0, 0, 7)
	now := today.Add(12 * time.Hour)
	spendFrom(t, f, today, now, 1000.0/1440)
	b := Budget{Total: 14500, Start: monday, End: today.AddDate(0, 0, 10)}
	p, err := f.Pacing(now, b)
	if err != nil {
		t.Fatal(err)
	}
	if !near(p.FlightSpent, 7500, 0.01) || !near(p.FlightShare, 7.5/17, 1e-9) {
		t.Fatalf("flight spent %v share %v", p.FlightSpent, p.FlightShare)
	}
	if p.FlightProjects == nil || !near(p.FlightProjects.Projected, 17000, 5) {
		t.Fatalf("flight projection %+v, want 17,000", p.FlightProjects)
	}
	// 7,500 spent, 500 more today, then 1,000 a day: 14,500 at noon 7 days on.
	want := today.AddDate(0, 0, 7).Add(12 * time.Hour)
	if p.TotalRunsOutAt == nil || p.TotalRunsOutAt.Sub(want).Abs() > 20*time.Minute {
		t.Fatalf("total runs out at %v, want about %v", p.TotalRunsOutAt, want)
	}
	// With a prior spend the flight is exhausted already.
	b.PriorSpend = 8000
	if p, _ := f.Pacing(now, b); !p.TotalExhausted {
		t.Fatalf("prior spend 8,000 + 7,500 of 14,500: not exhausted")
	}
	// A daily cap of 500 stretches it: 17 days of history would not reach.
	b.PriorSpend, b.Daily = 0, 500
	if p, _ := f.Pacing(now, b); p.TotalRunsOutAt != nil || !near(p.FlightProjects.Projected, 7500+10*500-500, 5) {
		t.Fatalf("capped flight: %+v runs out %v", p.FlightProjects, p.TotalRunsOutAt)
	}
}

// TestTimeZoneAndDST: the day is the campaign's local day, 23 hours long
// when clocks go forward.
func TestTimeZoneAndDST(t *testing.T) {
	f := newF(t, "Europe/Berlin")
	berlin, _ := time.LoadLocation("Europe/Berlin")
	start := time.Date(2026, 3, 29, 0, 0, 0, 0, berlin) // clocks go forward at 02:00
	noon := time.Date(2026, 3, 29, 12, 0, 0, 0, berlin)
	spendFrom(t, f, start, noon, 1)
	fc, err := f.Today(noon)
	if err != nil {
		t.Fatal(err)
	}
	if !fc.Start.Equal(start) || !near(fc.TimeShare, 11.0/23, 1e-9) || !near(fc.Spend.Actual, 11*60, 1e-9) {
		t.Fatalf("start %v, time share %v (want 11/23), so far %v", fc.Start, fc.TimeShare, fc.Spend.Actual)
	}
	if !near(fc.Spend.Projected, 23*60, 1) {
		t.Fatalf("projected %v, want the 23-hour day's 1380", fc.Spend.Projected)
	}
}

func TestRejects(t *testing.T) {
	f := newF(t, "UTC")
	if err := f.Observe(monday.Add(time.Hour), Amounts{Spend: 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.Observe(monday, Amounts{Spend: 1}); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("earlier step: %v", err)
	}
	if _, err := f.Today(monday.AddDate(0, 0, -1)); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("forecast of a past day: %v", err)
	}
	// Hostile amounts carry nothing.
	if err := f.Observe(monday.Add(2*time.Hour), Amounts{Spend: math.NaN(), Conversions: math.Inf(1), Revenue: -5}); err != nil {
		t.Fatal(err)
	}
	fc, _ := f.Today(monday.Add(3 * time.Hour))
	if fc.Spend.Actual != 1 || fc.Conversions.Actual != 0 || fc.Revenue.Actual != 0 {
		t.Fatalf("hostile amounts counted: %+v", fc)
	}
	for name, b := range map[string]Budget{
		"negative": {Daily: -1}, "nan": {Total: math.NaN()}, "inf": {Daily: math.Inf(1)},
		"flight": {Start: monday, End: monday.Add(-time.Hour)},
	} {
		if _, err := f.Pacing(monday.Add(3*time.Hour), b); err == nil {
			t.Errorf("budget %s accepted", name)
		}
	}
	for name, mut := range map[string]func(c *Config){
		"zone": func(c *Config) { c.TimeZone = "Mars/Olympus" }, "slot": func(c *Config) { c.Slot = 7 * time.Minute },
		"history": func(c *Config) { c.HistoryDays = 0 }, "interval": func(c *Config) { c.Interval = 1 },
		"weekday": func(c *Config) { c.MinWeekdayDays = 0 },
	} {
		c := DefaultConfig()
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("config %s accepted", name)
		}
	}
}

// TestHistoryBounded: days beyond HistoryDays are dropped, their spend kept
// for the flight.
func TestHistoryBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HistoryDays = 3
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for d := range 10 {
		day := monday.AddDate(0, 0, d)
		spendFrom(t, f, day, day.Add(time.Hour), 1)
	}
	if len(f.days) != 4 || f.spentBefore != 6*60 {
		t.Fatalf("%d days kept, %v spent before", len(f.days), f.spentBefore)
	}
}

// TestConversionsFollowSpend: a lucky morning (twice the usual conversions
// on the usual spend) does not double the day: the afternoon's spend buys
// conversions at a yield between today's and a typical day's.
func TestConversionsFollowSpend(t *testing.T) {
	f := newF(t, "UTC")
	for d := range 7 {
		day := monday.AddDate(0, 0, d)
		for m := range 1440 {
			a := Amounts{Spend: 10, CostEvents: 1}
			if m%10 == 0 {
				a.Conversions = 0.5 // 72 a day
			}
			if err := f.Observe(day.Add(time.Duration(m)*time.Minute), a); err != nil {
				t.Fatal(err)
			}
		}
	}
	today := monday.AddDate(0, 0, 7)
	for m := range 720 {
		a := Amounts{Spend: 10, CostEvents: 1}
		if m%10 == 0 {
			a.Conversions = 2 // 144 by noon
		}
		if err := f.Observe(today.Add(time.Duration(m)*time.Minute), a); err != nil {
			t.Fatal(err)
		}
	}
	fc, err := f.Today(today.Add(12 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Yield (144 + 72) / (7,200 + 14,400) on the 7,200 still to spend: 72 more.
	if !near(fc.Spend.Projected, 14400, 1) || !near(fc.Conversions.Projected, 216, 2) {
		t.Fatalf("spend %v, conversions %v: want 14,400 and 216 (not the morning's pace, 288)", fc.Spend.Projected, fc.Conversions.Projected)
	}
}
