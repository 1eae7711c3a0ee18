package forecast

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Budget is what a campaign may spend.
type Budget struct {
	// Daily is the most the campaign should spend in one local day; 0 for
	// no daily budget.
	Daily float64
	// Total is the most it should spend over its flight; 0 for none.
	Total float64
	// Start and End bound the flight (End exclusive); zero for open.
	Start, End time.Time
	// PriorSpend is the flight's spend before the days the forecaster
	// holds (its history is HistoryDays long): read from storage by the
	// caller for a flight longer than that.
	PriorSpend float64
}

// Validate reports every problem of b.
func (b Budget) Validate() error {
	var errs []error
	for name, v := range map[string]float64{"daily": b.Daily, "total": b.Total, "prior spend": b.PriorSpend} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("%s budget %v: must be a finite amount >= 0", name, v))
		}
	}
	if !b.Start.IsZero() && !b.End.IsZero() && !b.End.After(b.Start) {
		errs = append(errs, fmt.Errorf("flight ends (%v) before it starts (%v)", b.End, b.Start))
	}
	return errors.Join(errs...)
}

// Pacing compares spend with the budgets.
type Pacing struct {
	At  time.Time `json:"at"`
	Day Day       `json:"day"`

	// DailyBudget is the daily budget (0: none); BudgetShare the share of
	// it spent today, TimeShare the share of the day elapsed.
	DailyBudget float64 `json:"daily_budget"`
	BudgetShare float64 `json:"budget_share"`
	TimeShare   float64 `json:"time_share"`
	// PaceVsClock is BudgetShare ÷ TimeShare, PaceVsTypical BudgetShare ÷
	// the share of a typical day's spend done by now: 1 is on pace, 2
	// spends twice as fast. 0 without a daily budget.
	PaceVsClock   float64 `json:"pace_vs_clock"`
	PaceVsTypical float64 `json:"pace_vs_typical"`
	// DailyExhausted is true when today's spend reached the daily budget;
	// DailyRunsOutAt is when it did or, at this pace, will (nil when the
	// projected day stays under it).
	DailyExhausted bool       `json:"daily_exhausted"`
	DailyRunsOutAt *time.Time `json:"daily_runs_out_at,omitempty"`

	// Flight: spend so far, the budget, the share of the flight's time
	// elapsed, the projected spend at its end, and when the total budget
	// runs out at the usual pace (nil: not within the flight, or no total).
	TotalBudget    float64     `json:"total_budget"`
	FlightSpent    float64     `json:"flight_spent"`
	FlightShare    float64     `json:"flight_time_share"`
	FlightProjects *Projection `json:"flight_projection,omitempty"`
	TotalExhausted bool        `json:"total_exhausted"`
	TotalRunsOutAt *time.Time  `json:"total_runs_out_at,omitempty"`
}

// maxFlightDays bounds the days a flight projection walks.
const maxFlightDays = 400

// Pacing compares the campaign's spend with budget b at now.
func (f *Forecaster) Pacing(now time.Time, b Budget) (Pacing, error) {
	if err := b.Validate(); err != nil {
		return Pacing{}, err
	}
	today, err := f.Today(now)
	if err != nil {
		return Pacing{}, err
	}
	d := f.dayOf(now)
	tau := today.TimeShare
	p := Pacing{At: now, Day: today, DailyBudget: b.Daily, TimeShare: tau, TotalBudget: b.Total}
	sample, all, _ := f.sample(d)
	spent := today.Spend.Actual

	if b.Daily > 0 {
		p.BudgetShare = spent / b.Daily
		if tau > 0 {
			p.PaceVsClock = p.BudgetShare / tau
		}
		if today.ActivityShare > 0 {
			p.PaceVsTypical = p.BudgetShare / today.ActivityShare
		}
		if at, done := f.runsOut(d, sample, all, now, b.Daily); !at.IsZero() {
			p.DailyExhausted = done
			p.DailyRunsOutAt = &at
		}
	}

	// The flight.
	for i := range f.days {
		day := &f.days[i]
		if inFlight(b, day.start) && day.start.Before(d.start) {
			p.FlightSpent += day.total(mSpend)
		}
	}
	p.FlightSpent += b.PriorSpend + spent
	if !b.Start.IsZero() && !b.End.IsZero() {
		p.FlightShare = min(1, max(0, float64(now.Sub(b.Start))/float64(b.End.Sub(b.Start))))
	}
	if b.End.IsZero() {
		if b.Total > 0 && p.FlightSpent >= b.Total {
			p.TotalExhausted = true
		}
		return p, nil
	}
	// Today's remainder plus a typical day for each day left (capped by the
	// daily budget, as ad platforms cap it).
	z := normalQuantile(0.5 + f.cfg.Interval/2)
	proj := Projection{Actual: p.FlightSpent}
	cap := func(x float64) float64 {
		if b.Daily > 0 {
			return min(x, b.Daily)
		}
		return x
	}
	rest := cap(today.Spend.Projected) - spent
	sd := (today.Spend.High - today.Spend.Low) / (2 * z)
	variance := sd * sd
	cum := p.FlightSpent + max(0, rest)
	var runsOut time.Time
	if b.Total > 0 && p.FlightSpent >= b.Total {
		p.TotalExhausted = true
	} else if b.Total > 0 && cum >= b.Total {
		runsOut, _ = f.runsOut(d, sample, all, now, b.Total-(p.FlightSpent-spent))
	}
	next := d.start
	for n := 0; n < maxFlightDays; n++ {
		lt := next.In(f.loc)
		next = time.Date(lt.Year(), lt.Month(), lt.Day()+1, 0, 0, 0, 0, f.loc)
		if !next.Before(b.End) {
			break
		}
		wd := next.Weekday()
		total, tsd := f.typicalTotal(wd)
		total = cap(total)
		if b.Total > 0 && runsOut.IsZero() && !p.TotalExhausted && cum+total >= b.Total && total > 0 {
			runsOut = f.crossing(next, wd, (b.Total-cum)/total)
		}
		cum += total
		variance += tsd * tsd
	}
	proj.Projected = cum
	proj.Low = max(p.FlightSpent, cum-z*math.Sqrt(variance))
	proj.High = cum + z*math.Sqrt(variance)
	p.FlightProjects = &proj
	if !runsOut.IsZero() {
		p.TotalRunsOutAt = &runsOut
	}
	return p, nil
}

func inFlight(b Budget, t time.Time) bool {
	return (b.Start.IsZero() || !t.Before(b.Start)) && (b.End.IsZero() || t.Before(b.End))
}

// runsOut returns when today's spend reaches need: the time it did (done),
// or when it will at this pace (today's spend so far carried along the
// typical shape), or the zero time when the projected day stays under it.
func (f *Forecaster) runsOut(d *day, sample, all []*day, now time.Time, need float64) (time.Time, bool) {
	tau := f.tau(d, now)
	sofar := d.total(mSpend) // all of today's steps are before now
	// Already reached: find the slot.
	if sofar >= need {
		c := 0.0
		for i, v := range d.slots {
			if c+v[mSpend] >= need {
				// Within the slot, spend is taken as even over the
				// slot's elapsed part: the slot in progress is not over.
				frac := (need - c) / v[mSpend]
				at := f.at(d, (float64(i)+frac)/float64(f.k))
				if start := f.at(d, float64(i)/float64(f.k)); now.Before(f.at(d, float64(i+1)/float64(f.k))) {
					at = start.Add(time.Duration(frac * float64(now.Sub(start))))
				}
				return at, true
			}
			c += v[mSpend]
		}
	}
	s0 := f.share(sample, all, tau)
	if len(sample) == 0 {
		s0 = tau
	}
	if sofar <= 0 || s0 <= 0 {
		return time.Time{}, false
	}
	// Projected cumulative at tau' is sofar × share(tau') / share(tau).
	for i := 1; i <= f.k; i++ {
		t1 := float64(i) / float64(f.k)
		if t1 <= tau {
			continue
		}
		s1 := t1
		if len(sample) > 0 {
			s1 = f.share(sample, all, t1)
		}
		if sofar*s1/s0 >= need {
			t0 := max(tau, float64(i-1)/float64(f.k))
			sPrev := t0
			if len(sample) > 0 {
				sPrev = f.share(sample, all, t0)
			}
			frac := 1.0
			if c0, c1 := sofar*sPrev/s0, sofar*s1/s0; c1 > c0 {
				frac = (need - c0) / (c1 - c0)
			}
			return f.at(d, t0+frac*(t1-t0)), false
		}
	}
	return time.Time{}, false
}

// at is the wall time at share tau of day d, to the minute.
func (f *Forecaster) at(d *day, tau float64) time.Time {
	return d.start.Add(time.Duration(tau * float64(d.length))).Truncate(time.Minute)
}

// typicalTotal is the typical spend of a day of weekday wd and its spread.
func (f *Forecaster) typicalTotal(wd time.Weekday) (float64, float64) {
	var same, all []float64
	for i := range len(f.days) - 1 { // complete days only
		t := f.days[i].total(mSpend)
		all = append(all, t)
		if f.days[i].weekday == wd {
			same = append(same, t)
		}
	}
	xs := all
	if len(same) >= f.cfg.MinWeekdayDays {
		xs = same
	}
	if len(xs) == 0 {
		return 0, 0
	}
	m := median(xs)
	return m, 1.4826 * mad(xs, m)
}

// crossing is when, in the future day starting at start, a typical day's
// cumulative spend reaches share need of its total.
func (f *Forecaster) crossing(start time.Time, wd time.Weekday, need float64) time.Time {
	probe := day{start: start, weekday: wd}
	sample, all, _ := f.sample(&probe)
	end := time.Date(start.Year(), start.Month(), start.Day()+1, 0, 0, 0, 0, f.loc)
	probe.length = end.Sub(start)
	prev := 0.0
	for i := 1; i <= f.k; i++ {
		t1 := float64(i) / float64(f.k)
		s1 := t1
		if len(sample) > 0 {
			s1 = f.share(sample, all, t1)
		}
		if s1 >= need {
			frac := 1.0
			if s1 > prev {
				frac = (need - prev) / (s1 - prev)
			}
			return f.at(&probe, (float64(i-1)+frac)/float64(f.k))
		}
		prev = s1
	}
	return end
}

// share is the typical cumulative share of spend at tau.
func (f *Forecaster) share(sample, all []*day, tau float64) float64 {
	return shapeOf(sample, all, mSpend, tau, f.cfg.Interval, 1).share
}
