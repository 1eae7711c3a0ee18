// Package forecast projects a campaign's day and flight: end-of-day spend,
// conversions, revenue and ROAS with an interval, pacing against daily and
// total budgets, and the time of day the budget runs out at this pace.
//
// A day's projection divides what happened so far by the share of a typical
// day's total that has usually happened by this time of day (the cumulative
// share of the same weekday in recent weeks, of any day when there are too
// few, of the clock when there is no history), and weighs it against the
// typical day's total by how certain each is: early in the day the history
// speaks, late in the day today's numbers do. See docs/alerts.md.
package forecast

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Config tunes a Forecaster.
type Config struct {
	// TimeZone is the campaign's day: budgets and projections run from
	// local midnight to midnight. IANA name; default UTC.
	TimeZone string `yaml:"time_zone"`
	// Slot is the resolution of the daily shape. Default 15m.
	Slot time.Duration `yaml:"slot"`
	// HistoryDays is how many past days are kept. Default 28.
	HistoryDays int `yaml:"history_days"`
	// MinWeekdayDays is how many past days of the same weekday it takes to
	// use that weekday's shape rather than every day's. Default 2.
	MinWeekdayDays int `yaml:"min_weekday_days"`
	// Interval is the probability the projection interval is meant to
	// cover. Default 0.8.
	Interval float64 `yaml:"interval"`
}

// DefaultConfig returns the configuration of the backtest in docs/alerts.md.
func DefaultConfig() Config {
	return Config{TimeZone: "UTC", Slot: 15 * time.Minute, HistoryDays: 28, MinWeekdayDays: 2, Interval: 0.8}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("time_zone %q: %w", c.TimeZone, err))
	}
	if c.Slot < time.Minute || c.Slot > 2*time.Hour || (24*time.Hour)%c.Slot != 0 {
		errs = append(errs, fmt.Errorf("slot %v: must divide a day, 1m..2h", c.Slot))
	}
	if c.HistoryDays < 1 || c.HistoryDays > 400 {
		errs = append(errs, fmt.Errorf("history_days %d: must be 1..400", c.HistoryDays))
	}
	if c.MinWeekdayDays < 1 || c.MinWeekdayDays > 60 {
		errs = append(errs, fmt.Errorf("min_weekday_days %d: must be 1..60", c.MinWeekdayDays))
	}
	if !(c.Interval > 0 && c.Interval < 1) {
		errs = append(errs, fmt.Errorf("interval %v: must be in (0, 1)", c.Interval))
	}
	return errors.Join(errs...)
}

// Amounts are one step of a campaign: money and the events behind it.
type Amounts struct {
	Spend       float64
	Conversions float64
	Revenue     float64
	// CostEvents is the number of cost events behind Spend (the Poisson
	// part of the interval); 0 when unknown.
	CostEvents float64
}

const (
	mSpend = iota
	mConv
	mRev
	mCostEv
	nMetrics
)

func (a Amounts) vec() [nMetrics]float64 {
	return [nMetrics]float64{pos(a.Spend), pos(a.Conversions), pos(a.Revenue), pos(a.CostEvents)}
}

func pos(x float64) float64 {
	if x > 0 && !math.IsInf(x, 1) {
		return x
	}
	return 0
}

// day is one local day's increments per slot.
type day struct {
	start   time.Time // local midnight
	length  time.Duration
	slots   [][nMetrics]float64
	weekday time.Weekday
}

func (d *day) total(m int) float64 {
	s := 0.0
	for _, v := range d.slots {
		s += v[m]
	}
	return s
}

// cumAt is the day's cumulative amount of metric m at share tau of the day,
// linear within a slot.
func (d *day) cumAt(m int, tau float64) float64 {
	pos := tau * float64(len(d.slots))
	full := int(pos)
	s := 0.0
	for i := 0; i < full && i < len(d.slots); i++ {
		s += d.slots[i][m]
	}
	if full < len(d.slots) {
		s += (pos - float64(full)) * d.slots[full][m]
	}
	return s
}

// Forecaster follows one campaign. It is not safe for concurrent use.
type Forecaster struct {
	cfg  Config
	loc  *time.Location
	k    int   // slots per day
	days []day // oldest first; the last is today (possibly partial)
	// spentBefore is the spend of days that fell out of the history, so a
	// flight total stays exact.
	spentBefore float64
	last        time.Time
}

// New returns a forecaster.
func New(cfg Config) (*Forecaster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	loc, _ := time.LoadLocation(cfg.TimeZone)
	return &Forecaster{cfg: cfg, loc: loc, k: int(24 * time.Hour / cfg.Slot)}, nil
}

// ErrOutOfOrder is returned for a step before the previous one.
var ErrOutOfOrder = errors.New("forecast: step before the previous one")

// Observe adds the amounts of the step that starts at t. Steps come in time
// order (several in one slot add up).
func (f *Forecaster) Observe(t time.Time, a Amounts) error {
	if t.Before(f.last) || (len(f.days) > 0 && t.Before(f.days[len(f.days)-1].start)) {
		return fmt.Errorf("%w: %v", ErrOutOfOrder, t)
	}
	f.last = t
	d := f.dayOf(t)
	tau := f.tau(d, t)
	i := min(int(tau*float64(f.k)), f.k-1)
	v := a.vec()
	for m := range nMetrics {
		d.slots[i][m] += v[m]
	}
	return nil
}

// dayOf returns the day holding t, opening days as needed.
func (f *Forecaster) dayOf(t time.Time) *day {
	lt := t.In(f.loc)
	start := time.Date(lt.Year(), lt.Month(), lt.Day(), 0, 0, 0, 0, f.loc)
	if n := len(f.days); n > 0 && f.days[n-1].start.Equal(start) {
		return &f.days[n-1]
	}
	end := time.Date(lt.Year(), lt.Month(), lt.Day()+1, 0, 0, 0, 0, f.loc)
	f.days = append(f.days, day{start: start, length: end.Sub(start), slots: make([][nMetrics]float64, f.k), weekday: lt.Weekday()})
	if over := len(f.days) - (f.cfg.HistoryDays + 1); over > 0 {
		for _, old := range f.days[:over] {
			f.spentBefore += old.total(mSpend)
		}
		f.days = slices.Delete(f.days, 0, over)
	}
	return &f.days[len(f.days)-1]
}

func (f *Forecaster) tau(d *day, t time.Time) float64 {
	return min(1, max(0, float64(t.Sub(d.start))/float64(d.length)))
}

// Projection is one projected end-of-day (or end-of-flight) figure.
type Projection struct {
	// Actual is the amount so far.
	Actual float64 `json:"actual"`
	// Projected is the expected final amount; Low and High bound it with
	// the configured probability.
	Projected float64 `json:"projected"`
	Low       float64 `json:"low"`
	High      float64 `json:"high"`
}

// MarshalJSON writes a bound that is not finite (an interval with no upper
// end, when neither the day's pace nor typical days tell) as null: JSON
// has no infinity.
func (p Projection) MarshalJSON() ([]byte, error) {
	type plain struct {
		Actual    *float64 `json:"actual"`
		Projected *float64 `json:"projected"`
		Low       *float64 `json:"low"`
		High      *float64 `json:"high"`
	}
	finite := func(x float64) *float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
		return &x
	}
	return json.Marshal(plain{finite(p.Actual), finite(p.Projected), finite(p.Low), finite(p.High)})
}

// Day is the forecast of the day in progress.
type Day struct {
	Start time.Time `json:"start"`
	At    time.Time `json:"at"`
	// TimeShare is the share of the day's clock elapsed; ActivityShare the
	// share of a typical day's spend done by this time.
	TimeShare     float64 `json:"time_share"`
	ActivityShare float64 `json:"activity_share"`
	// Basis says which history shaped the day: "weekday" (the same weekday
	// in recent weeks), "all_days", or "clock" (no history yet).
	Basis       string     `json:"basis"`
	HistoryDays int        `json:"history_days"`
	Spend       Projection `json:"spend"`
	Conversions Projection `json:"conversions"`
	Revenue     Projection `json:"revenue"`
	// ROAS is projected revenue over projected spend; its bounds pair the
	// revenue bound with the opposite spend bound.
	ROAS Projection `json:"roas"`
}

// shape is the typical cumulative share of one metric at tau, its spread,
// and the typical day total with its spread.
type shape struct {
	share, shareSD float64
	total, totalSD float64
	days           int
}

// shapeOf computes the shape of metric m at tau: the share and the total
// are those of the sample days (pooled: steady at low counts), their
// spreads those of every past day in all (more days measure a spread
// better than the few of one weekday, and weekdays that differ only make
// it wider). A spread is the deviation from the median that the interval's
// share of days kept within (a conformal quantile, so no shape of the
// errors is assumed), expressed as the standard deviation of a normal with
// that quantile: interval is the coverage, z its normal quantile.
func shapeOf(sample, all []*day, m int, tau, interval, z float64) shape {
	sh := shape{share: tau, shareSD: math.Inf(1), totalSD: math.Inf(1), days: len(sample)}
	var pooledCum, pooledTot float64
	var totals []float64
	for _, d := range sample {
		tot := d.total(m)
		totals = append(totals, tot)
		pooledCum += d.cumAt(m, tau)
		pooledTot += tot
	}
	if pooledTot > 0 {
		sh.share = pooledCum / pooledTot
	}
	if len(totals) >= 3 {
		sh.total = median(totals)
	} else if len(totals) > 0 {
		sh.total = mean(totals)
	}
	var shares, allTotals []float64
	for _, d := range all {
		tot := d.total(m)
		allTotals = append(allTotals, tot)
		if tot > 0 {
			shares = append(shares, d.cumAt(m, tau)/tot)
		}
	}
	if len(shares) >= 3 {
		sh.shareSD = spread(shares, interval) / z
	}
	if len(allTotals) >= 3 {
		sh.totalSD = spread(allTotals, interval) / z
	}
	return sh
}

// spread is the conformal quantile of the absolute deviations of xs from
// their median: the ceil((n+1)·q)-th smallest, the largest when n is small.
func spread(xs []float64, q float64) float64 {
	c := median(xs)
	d := make([]float64, len(xs))
	for i, x := range xs {
		d[i] = math.Abs(x - c)
	}
	slices.Sort(d)
	k := min(len(d), int(math.Ceil(float64(len(d)+1)*q))) - 1
	return d[max(k, 0)]
}

// sample returns the past days that shape day d (the same weekday when
// there are enough, else every day), every past day, and the basis name.
func (f *Forecaster) sample(d *day) ([]*day, []*day, string) {
	var same, all []*day
	for i := len(f.days) - 2; i >= 0; i-- { // the last day is in progress
		p := &f.days[i]
		if !p.start.Before(d.start) {
			continue
		}
		all = append(all, p)
		if p.weekday == d.weekday {
			same = append(same, p)
		}
	}
	switch {
	case len(same) >= f.cfg.MinWeekdayDays:
		return same, all, "weekday"
	case len(all) > 0:
		return all, all, "all_days"
	}
	return nil, nil, "clock"
}

// Today forecasts the day that holds now from everything observed. now
// may not fall on a day before the last step's.
func (f *Forecaster) Today(now time.Time) (Day, error) {
	if n := len(f.days); n > 0 && now.Before(f.days[n-1].start) {
		return Day{}, fmt.Errorf("%w: forecast for %v", ErrOutOfOrder, now)
	}
	d := f.dayOf(now)
	tau := f.tau(d, now)
	sample, all, basis := f.sample(d)
	out := Day{Start: d.start, At: now, TimeShare: tau, Basis: basis, HistoryDays: len(sample)}
	z := normalQuantile(0.5 + f.cfg.Interval/2)
	// Everything observed today happened before now (the slot holding now
	// is only partly filled, so it counts whole).
	cum := func(m int) float64 { return d.total(m) }
	spendSh := shapeOf(sample, all, mSpend, tau, f.cfg.Interval, z)
	out.ActivityShare = spendSh.share
	if len(sample) == 0 {
		out.ActivityShare = tau
	}
	// Events behind each metric, for the Poisson part of the interval.
	unitSpend := 0.0
	if ev, sp := sumAll(sample, d, mCostEv), sumAll(sample, d, mSpend); ev > 0 && sp > 0 {
		unitSpend = sp / ev
	}
	unitRev := 0.0
	if cv, rv := sumAll(sample, d, mConv), sumAll(sample, d, mRev); cv > 0 && rv > 0 {
		unitRev = rv / cv
	}
	out.Spend = project(cum(mSpend), spendSh, unitSpend, z)
	// Conversions and revenue follow the traffic the spend buys: what is
	// done plus the spend still to come at today's yield (far more events
	// than the conversions themselves, so a steadier pace). A campaign
	// without spend is projected from its own pace.
	convSh, revSh := shapeOf(sample, all, mConv, tau, f.cfg.Interval, z), shapeOf(sample, all, mRev, tau, f.cfg.Interval, z)
	if spendSh.total+cum(mSpend) > 0 {
		out.Conversions = follow(cum(mConv), cum(mSpend), out.Spend, convSh.total, spendSh.total, 1, z)
		out.Revenue = follow(cum(mRev), cum(mSpend), out.Spend, revSh.total, spendSh.total, unitRev, z)
	} else {
		out.Conversions = project(cum(mConv), convSh, 1, z)
		out.Revenue = project(cum(mRev), revSh, unitRev, z)
	}
	out.ROAS = Projection{Actual: ratio(out.Revenue.Actual, out.Spend.Actual), Projected: ratio(out.Revenue.Projected, out.Spend.Projected),
		Low: ratio(out.Revenue.Low, out.Spend.High), High: ratio(out.Revenue.High, out.Spend.Low)}
	return out, nil
}

// sumAll is the total of metric m over the sample days and today so far.
func sumAll(sample []*day, today *day, m int) float64 {
	s := today.total(m)
	for _, d := range sample {
		s += d.total(m)
	}
	return s
}

// project combines the pace estimate (so far ÷ typical share) with the
// typical day's total, each weighted by its inverse variance. unit is the
// money per event (1 for counts, 0 when unknown: no Poisson term).
func project(sofar float64, sh shape, unit, z float64) Projection {
	p := Projection{Actual: sofar}
	s := sh.share
	// The pace estimate and its variance.
	var pace, paceVar float64
	if s > 1e-6 {
		pace = sofar / s
		rel := sh.shareSD / s
		if math.IsInf(rel, 1) {
			// Too few days to measure the shape's spread: assume one as wide
			// as a day's progress is uncertain (it narrows to 0 at midnight).
			rel = 0.5 * (1 - s) / math.Sqrt(s)
		}
		paceVar = pace * pace * rel * rel
		if unit > 0 {
			paceVar += pace * (1 - s) * unit // Poisson noise of what remains
		}
	} else {
		paceVar = math.Inf(1)
	}
	// The typical day's total, never below what is already done, and at
	// least as uncertain as the Poisson noise of a day's events.
	hist, histVar := max(sh.total, sofar), sh.totalSD*sh.totalSD
	if unit > 0 {
		histVar += hist * unit
	}
	if sh.days == 0 {
		histVar = math.Inf(1)
	}
	// A day whose pace is far from the typical day's total (beyond three
	// standard deviations of both) is not a typical day: its own pace
	// projects it.
	if d := pace - hist; !math.IsInf(paceVar, 1) && !math.IsInf(histVar, 1) && d*d > 9*(paceVar+histVar) {
		histVar = math.Inf(1)
	}
	switch {
	case math.IsInf(paceVar, 1) && math.IsInf(histVar, 1):
		p.Projected = max(pace, sofar, hist)
		p.Low, p.High = sofar, math.Inf(1)
		if pace > 0 {
			p.High = pace * 3
		}
		return p
	case math.IsInf(histVar, 1):
		p.Projected = pace
	case math.IsInf(paceVar, 1):
		p.Projected = hist
	default:
		wp, wh := 1/max(paceVar, 1e-12), 1/max(histVar, 1e-12)
		p.Projected = (pace*wp + hist*wh) / (wp + wh)
		paceVar = 1 / (wp + wh)
	}
	sd := math.Sqrt(paceVar)
	if math.IsInf(sd, 1) {
		sd = math.Sqrt(histVar)
	}
	p.Projected = max(p.Projected, sofar)
	p.Low = max(sofar, p.Projected-z*sd)
	p.High = p.Projected + z*sd
	return p
}

// follow projects a metric that follows spend: what is done plus the spend
// still to come times the metric per unit of spend (today's so far, shrunk
// toward a typical day's with the weight of one day). typNum and typSpend
// are a typical day's totals; unit is the metric per event (1 for counts, 0
// when unknown).
func follow(sofar, spent float64, spend Projection, typNum, typSpend, unit, z float64) Projection {
	p := Projection{Actual: sofar}
	num, den := sofar+typNum, spent+typSpend
	rate := num / den
	rest := rate * max(0, spend.Projected-spent)
	p.Projected = sofar + rest
	spendSD := (spend.High - spend.Low) / (2 * z)
	variance := rate * rate * spendSD * spendSD // the spend to come is uncertain
	if unit > 0 {
		variance += rest * unit                    // Poisson noise of the events to come
		variance += rest * rest / max(num/unit, 1) // and of the yield's estimate
	}
	if math.IsInf(spendSD, 1) || math.IsNaN(variance) {
		p.Low, p.High = sofar, math.Inf(1)
		return p
	}
	sd := math.Sqrt(variance)
	p.Low = max(sofar, p.Projected-z*sd)
	p.High = p.Projected + z*sd
	return p
}

func ratio(a, b float64) float64 {
	if b <= 0 || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return 0
	}
	return a / b
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mad(xs []float64, c float64) float64 {
	d := make([]float64, len(xs))
	for i, x := range xs {
		d[i] = math.Abs(x - c)
	}
	return median(d)
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// normalQuantile is the standard normal quantile, by bisection on the CDF
// (exact to 1e-9; called once per forecast).
func normalQuantile(p float64) float64 {
	lo, hi := -10.0, 10.0
	for range 80 {
		mid := (lo + hi) / 2
		if 0.5*math.Erfc(-mid/math.Sqrt2) < p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}
