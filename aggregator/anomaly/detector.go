package anomaly

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Kind says what a series measures and so how its noise is judged.
type Kind uint8

const (
	// Count is events per step (impressions, clicks, uniques): the exposure
	// is time, and the noise is at least Poisson.
	Count Kind = iota + 1
	// Amount is money per step (spend, revenue), carried by Events events:
	// the Poisson floor applies to the events behind the money.
	Amount
	// Ratio is events per unit of a denominator (CTR: clicks per
	// impression, a source's share of clicks): judged as the numerator's
	// count against the baseline rate times the step's denominator.
	Ratio
	// AmountRatio is money per unit of a denominator (ROAS: revenue per
	// unit of spend), carried by Events events.
	AmountRatio
)

func (k Kind) String() string {
	switch k {
	case Count:
		return "count"
	case Amount:
		return "amount"
	case Ratio:
		return "ratio"
	case AmountRatio:
		return "amount_ratio"
	}
	return fmt.Sprintf("kind(%d)", k)
}

func (k Kind) valid() bool        { return k >= Count && k <= AmountRatio }
func (k Kind) hasDen() bool       { return k == Ratio || k == AmountRatio }
func (k Kind) hasEvents() bool    { return k == Amount || k == AmountRatio }
func (k Kind) exposureTime() bool { return !k.hasDen() }

// Spec describes one series.
type Spec struct {
	Kind Kind
	// RelErr is the relative standard error of Num as measured: 0 for exact
	// counters, 1.04/√m for a HyperLogLog of m registers (uniques). The
	// detector widens its noise floor by it.
	RelErr float64
}

// Obs is one step of one series.
type Obs struct {
	// Num is the step's events (Count, Ratio) or money (Amount,
	// AmountRatio); below zero counts as zero.
	Num float64
	// Den is the step's denominator of a Ratio or AmountRatio (impressions
	// for CTR, spend for ROAS); ignored for the other kinds.
	Den float64
	// Events is the number of events behind Num for Amount and AmountRatio
	// (cost events behind spend, conversions behind revenue); ignored for
	// the other kinds.
	Events float64
}

// Direction is the sign of a deviation.
type Direction int8

// The directions of a deviation.
const (
	Spike Direction = 1  // more than expected
	Drop  Direction = -1 // less than expected
)

func (d Direction) String() string {
	switch d {
	case Spike:
		return "spike"
	case Drop:
		return "drop"
	}
	return "none"
}

func (d Direction) index() int {
	if d == Drop {
		return 1
	}
	return 0
}

// State is an alert's state.
type State uint8

// The states of an alert.
const (
	Normal   State = iota // no alert
	Firing                // an alert is firing
	Resolved              // reported once, on the point that resolved it
)

func (s State) String() string {
	switch s {
	case Firing:
		return "firing"
	case Resolved:
		return "resolved"
	}
	return "normal"
}

// Baseline names where the expected value of a point came from.
type Baseline uint8

const (
	// NoBaseline: too little history to judge the point.
	NoBaseline Baseline = iota
	// Rolling: the recent past (before there is seasonal history).
	Rolling
	// Seasonal: the same time of day and of week in previous days and weeks.
	Seasonal
)

func (b Baseline) String() string {
	switch b {
	case Rolling:
		return "rolling"
	case Seasonal:
		return "seasonal"
	}
	return "none"
}

// Result is the judgement of one point.
type Result struct {
	Time time.Time
	// Score is the signed deviation of the window that deviates most, in
	// standard deviations of its variance-stabilised noise; 0 when the
	// point could not be judged (too little history or volume). With
	// seasonal history it is the milder of the daily and weekly scores, or
	// the daily one alone when that is below the resolve threshold.
	Score float64
	// Window is the length of that window; Observed and Expected are its
	// sum of Num and the baseline's expectation of it.
	Window             time.Duration
	Observed, Expected float64
	Baseline           Baseline
	// State is the alert state after this point; Transition is set when
	// this point fired or resolved an alert.
	State      State
	Direction  Direction
	Transition *Transition
}

// Transition is an alert that fired or resolved.
type Transition struct {
	State     State // Firing or Resolved
	Direction Direction
	// Start is the time of the point that fired: with the campaign, the
	// metric and the rule it is the alert's identity, the same on every
	// node that rebuilds the detector from the same history.
	Start time.Time
	// At is the time of the point that made this transition.
	At time.Time
	// Score is the score that fired (Firing) or the peak score of the
	// episode (Resolved).
	Score              float64
	Window             time.Duration
	Observed, Expected float64
}

// AlertState is the part of a detector's state that is not history: what
// a node that takes a campaign over restores from stored alerts after
// warming the history (see Warm).
type AlertState struct {
	// Firing is the direction of the firing alert, 0 when none.
	Firing Direction `json:"firing,omitempty"`
	// Start and Peak describe the firing alert.
	Start time.Time `json:"start,omitzero"`
	Peak  float64   `json:"peak,omitempty"`
	// LastResolved is when the last alert of each direction resolved
	// (cooldown), zero when never.
	LastSpikeResolved time.Time `json:"last_spike_resolved,omitzero"`
	LastDropResolved  time.Time `json:"last_drop_resolved,omitzero"`
	// Pending counts the consecutive anomalous points of direction
	// PendingDir not yet fired (persistence); Calm the consecutive quiet
	// points of a firing alert (resolution).
	Pending    int       `json:"pending,omitempty"`
	PendingDir Direction `json:"pending_dir,omitempty"`
	Calm       int       `json:"calm,omitempty"`
}

// Errors of Observe and Warm.
var (
	ErrOutOfOrder = errors.New("anomaly: point not after the previous one")
	ErrOffGrid    = errors.New("anomaly: point not on the series' step grid")
	ErrTimeRange  = errors.New("anomaly: time outside the years 1900-2200")
)

const noStep = math.MinInt64

// Detector judges one series, point by point, in time order. Its state
// depends only on the points it was given, so two nodes fed the same
// history hold the same state and fire the same alerts at the same points.
// It is not safe for concurrent use.
type Detector struct {
	cfg  Config
	spec Spec
	step int64 // nanoseconds
	// phase is the offset of the step grid: points are at n*step+phase.
	phase int64
	sps   int64   // steps per slot
	win   []int64 // windows in steps, ascending
	maxW  int64
	nb    int64   // neighbourhood in slots
	day   float64 // steps per day
	week  float64

	minHist, minSeasonal, rolling, cooldown int64 // in steps

	// recent holds the last maxW steps (ring indexed by step).
	rNum, rDen, rEv []float64

	// history holds completed slots (ring indexed by slot). hDen is nil
	// when the exposure is time, hEv when there are no events.
	hNum, hDen, hEv []float32
	cur             int64 // slot being filled
	pNum, pDen, pEv float64

	first, last int64 // first and last step observed; last == noStep before any

	// alert state
	firing     Direction
	start      int64
	peak       float64
	pending    int
	pendingDir Direction
	calm       int
	resolved   [2]int64

	scratch, scratch2 []float64
}

// New returns a detector for a series of the given step (one minute live;
// any regular step in a replay).
func New(cfg Config, step time.Duration, spec Spec) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if step < time.Second || step > 24*time.Hour {
		return nil, fmt.Errorf("anomaly: step %v: must be in [1s, 24h]", step)
	}
	if !spec.Kind.valid() {
		return nil, fmt.Errorf("anomaly: unknown kind %v", spec.Kind)
	}
	if spec.RelErr < 0 || spec.RelErr > 1 || math.IsNaN(spec.RelErr) {
		return nil, fmt.Errorf("anomaly: relative error %v: must be in [0, 1]", spec.RelErr)
	}
	st := int64(step)
	d := &Detector{cfg: cfg, spec: spec, step: st, last: noStep}
	d.sps = max(1, (int64(cfg.Slot)+st/2)/st)
	for _, w := range cfg.Windows {
		d.win = append(d.win, max(1, (int64(w)+st/2)/st))
	}
	slices.Sort(d.win)
	d.win = slices.Compact(d.win)
	d.maxW = d.win[len(d.win)-1]
	slot := d.sps * st
	d.nb = (int64(cfg.Neighbourhood) + slot/2) / slot
	d.day = float64(24*time.Hour) / float64(st)
	d.week = 7 * d.day
	steps := func(x time.Duration) int64 { return (int64(x) + st - 1) / st }
	d.minHist = steps(cfg.MinHistory)
	d.minSeasonal = steps(cfg.MinSeasonalHistory)
	d.rolling = steps(cfg.RollingWindow)
	d.cooldown = steps(cfg.Cooldown)

	// The history must reach back to the oldest sample any window can ask
	// for: the farthest season, its neighbourhood and the window itself.
	back := max(float64(cfg.SeasonalDays)*d.day, float64(cfg.SeasonalWeeks)*d.week) + float64((d.nb+1)*d.sps+d.maxW)
	back = max(back, float64(d.rolling+d.maxW+d.sps))
	n := int(math.Ceil(back/float64(d.sps))) + 2
	d.hNum = make([]float32, n)
	if spec.Kind.hasDen() {
		d.hDen = make([]float32, n)
	}
	if spec.Kind.hasEvents() {
		d.hEv = make([]float32, n)
	}
	d.rNum = make([]float64, d.maxW)
	d.rDen = make([]float64, d.maxW)
	d.rEv = make([]float64, d.maxW)
	d.resolved = [2]int64{noStep, noStep}
	return d, nil
}

// Step is the series' step.
func (d *Detector) Step() time.Duration { return time.Duration(d.step) }

// HistoryBytes is the memory the detector's history takes.
func (d *Detector) HistoryBytes() int {
	return 4*(len(d.hNum)+len(d.hDen)+len(d.hEv)) + 8*3*len(d.rNum)
}

// Observe adds the point at t and judges it. Points must come in time order
// on the step grid of the first point; a step that was skipped counts as a
// step without events (its denominator zero) and is not judged.
func (d *Detector) Observe(t time.Time, o Obs) (Result, error) {
	n, err := d.push(t, o)
	if err != nil {
		return Result{}, err
	}
	return d.judge(n), nil
}

// Warm adds the point at t to the history without judging it or changing
// the alert state: the fast way to rebuild a detector from stored history
// before restoring its AlertState. The same rules as Observe apply.
func (d *Detector) Warm(t time.Time, o Obs) error {
	_, err := d.push(t, o)
	return err
}

// ErrNotNext is returned by Peek for a point that is not the step right
// after the last one observed.
var ErrNotNext = errors.New("anomaly: peek is only for the step after the last one")

// Peek judges the step in progress at t, the step right after the last one
// observed, from what it holds so far (o) and the share of the step that
// has elapsed (exposure, in (0, 1]), without changing the detector: the
// history, the alert state and what a later Observe returns stay exactly
// as they were. A series whose exposure is time expects exposure × its
// usual rate of the step (a ratio's denominator is o.Den as it stands).
//
// It is how a campaign's owner alerts before a minute is over: an
// anomaly that Observe would fire on this step's settled value (the
// persistence count already pending) usually shows in its first seconds.
// A Firing transition from Peek has the identity (Start) that Observe
// would give the same episode on this step.
func (d *Detector) Peek(t time.Time, o Obs, exposure float64) (Result, error) {
	if d.last == noStep {
		return Result{Time: t}, nil // nothing to judge against
	}
	if !(exposure > 0 && exposure <= 1) {
		return Result{}, fmt.Errorf("anomaly: exposure %v: must be in (0, 1]", exposure)
	}
	ns := t.UnixNano()
	if (ns-d.phase)%d.step != 0 {
		return Result{}, fmt.Errorf("%w: %v", ErrOffGrid, t)
	}
	n := (ns - d.phase) / d.step
	if n != d.last+1 {
		return Result{}, fmt.Errorf("%w: %v", ErrNotNext, t)
	}
	// What record and step1 change for one step after the last: the
	// recent ring's cell, the partial slot, the slot it may close, and the
	// alert state.
	i := mod(n, d.maxW)
	rNum, rDen, rEv := d.rNum[i], d.rDen[i], d.rEv[i]
	pNum, pDen, pEv, cur, last := d.pNum, d.pDen, d.pEv, d.cur, d.last
	hi := mod(d.cur, int64(len(d.hNum)))
	var hNum, hDen, hEv float32
	hNum = d.hNum[hi]
	if d.hDen != nil {
		hDen = d.hDen[hi]
	}
	if d.hEv != nil {
		hEv = d.hEv[hi]
	}
	firing, start, peak, pending, pendingDir, calm, resolved := d.firing, d.start, d.peak, d.pending, d.pendingDir, d.calm, d.resolved
	defer func() {
		d.rNum[i], d.rDen[i], d.rEv[i] = rNum, rDen, rEv
		d.pNum, d.pDen, d.pEv, d.cur, d.last = pNum, pDen, pEv, cur, last
		d.hNum[hi] = hNum
		if d.hDen != nil {
			d.hDen[hi] = hDen
		}
		if d.hEv != nil {
			d.hEv[hi] = hEv
		}
		d.firing, d.start, d.peak, d.pending, d.pendingDir, d.calm, d.resolved = firing, start, peak, pending, pendingDir, calm, resolved
	}()
	d.record(n, o, exposure)
	return d.judge(n), nil
}

// Last is the time of the last point observed or warmed; zero before any.
func (d *Detector) Last() time.Time {
	if d.last == noStep {
		return time.Time{}
	}
	return d.time(d.last)
}

// AlertState returns the detector's alert state.
func (d *Detector) AlertState() AlertState {
	var s AlertState
	if d.firing != 0 {
		s.Firing, s.Start, s.Peak = d.firing, d.time(d.start), d.peak
	}
	if d.resolved[0] != noStep {
		s.LastSpikeResolved = d.time(d.resolved[0])
	}
	if d.resolved[1] != noStep {
		s.LastDropResolved = d.time(d.resolved[1])
	}
	s.Pending, s.PendingDir, s.Calm = d.pending, d.pendingDir, d.calm
	return s
}

// SetAlertState restores an alert state (from stored alerts) on a detector
// whose history was rebuilt with Warm. Times must lie on the step grid.
func (d *Detector) SetAlertState(s AlertState) error {
	idx := func(t time.Time) (int64, error) {
		if t.IsZero() {
			return noStep, nil
		}
		if d.last == noStep {
			return 0, errors.New("anomaly: alert state before any point")
		}
		ns := t.UnixNano() - d.phase
		if ns%d.step != 0 {
			return 0, fmt.Errorf("%w: %v", ErrOffGrid, t)
		}
		return ns / d.step, nil
	}
	start, err := idx(s.Start)
	if err != nil {
		return err
	}
	rs, err := idx(s.LastSpikeResolved)
	if err != nil {
		return err
	}
	rd, err := idx(s.LastDropResolved)
	if err != nil {
		return err
	}
	if s.Firing != 0 && s.Firing != Spike && s.Firing != Drop {
		return fmt.Errorf("anomaly: firing direction %d", s.Firing)
	}
	if s.Firing != 0 && start == noStep {
		return errors.New("anomaly: firing alert without a start")
	}
	if s.PendingDir != 0 && s.PendingDir != Spike && s.PendingDir != Drop || s.Pending < 0 || s.Calm < 0 {
		return errors.New("anomaly: bad pending or calm count")
	}
	d.firing, d.start, d.peak = s.Firing, start, s.Peak
	d.resolved = [2]int64{rs, rd}
	d.pending, d.pendingDir, d.calm = s.Pending, s.PendingDir, s.Calm
	return nil
}

func (d *Detector) time(n int64) time.Time { return time.Unix(0, n*d.step+d.phase).UTC() }

// push records a point and returns its step index.
func (d *Detector) push(t time.Time, o Obs) (int64, error) {
	if y := t.Year(); y < 1900 || y > 2200 {
		return 0, fmt.Errorf("%w: %v", ErrTimeRange, t) // UnixNano holds 1678-2262
	}
	ns := t.UnixNano()
	if d.last == noStep {
		d.phase = ((ns % d.step) + d.step) % d.step
	}
	if (ns-d.phase)%d.step != 0 {
		return 0, fmt.Errorf("%w: %v", ErrOffGrid, t)
	}
	n := (ns - d.phase) / d.step
	if d.last == noStep {
		d.first, d.last = n, n-1
		d.cur = floorDiv(n, d.sps)
	}
	if n <= d.last {
		return 0, fmt.Errorf("%w: %v", ErrOutOfOrder, t)
	}
	// Skipped steps: no events, no denominator. A gap longer than the
	// history is not walked step by step.
	if gap := n - d.last - 1; gap > 0 {
		limit := int64(len(d.hNum)+2)*d.sps + d.maxW
		from := d.last + 1
		if gap > limit {
			from = n - limit
		}
		for k := from; k < n; k++ {
			d.record(k, Obs{}, 1)
		}
	}
	d.record(n, o, 1)
	return n, nil
}

// record puts the point of step n (n > d.last) into the rings. exposure
// is the share of the step the point covers (1 but for Peek): the
// denominator of a series whose exposure is time.
func (d *Detector) record(n int64, o Obs, exposure float64) {
	num := clean(o.Num)
	den, ev := exposure, 0.0
	if d.spec.Kind.hasDen() {
		den = clean(o.Den)
	}
	if d.spec.Kind.hasEvents() {
		ev = clean(o.Events)
	}
	i := mod(n, d.maxW)
	d.rNum[i], d.rDen[i], d.rEv[i] = num, den, ev

	s := floorDiv(n, d.sps)
	if s != d.cur {
		d.closeSlots(s)
	}
	d.pNum += num
	d.pDen += den
	d.pEv += ev
	d.last = n
}

// closeSlots moves the partial slot into the history and opens slot s,
// clearing the slots skipped in between.
func (d *Detector) closeSlots(s int64) {
	size := int64(len(d.hNum))
	d.setSlot(d.cur, d.pNum, d.pDen, d.pEv)
	for j := d.cur + 1; j < s && j < d.cur+1+size; j++ {
		d.setSlot(j, 0, 0, 0)
	}
	d.cur = s
	d.pNum, d.pDen, d.pEv = 0, 0, 0
}

func (d *Detector) setSlot(j int64, num, den, ev float64) {
	i := mod(j, int64(len(d.hNum)))
	d.hNum[i] = float32(num)
	if d.hDen != nil {
		d.hDen[i] = float32(den)
	}
	if d.hEv != nil {
		d.hEv[i] = float32(ev)
	}
}

func clean(x float64) float64 {
	if x > 0 && !math.IsInf(x, 1) {
		return x
	}
	return 0 // negative, NaN and +Inf carry no events
}

// mod is a's non-negative remainder by b (times before 1970 have negative
// step indexes).
func mod(a, b int64) int64 {
	if r := a % b; r < 0 {
		return r + b
	}
	return a % b
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// sum returns the totals of the history over the steps [a, b) (fractional
// ends are pro-rated within their slot); ok is false when the range is not
// all in completed, retained history.
func (d *Detector) sum(a, b float64) (num, den, ev float64, ok bool) {
	sps := float64(d.sps)
	oldest := d.cur - int64(len(d.hNum)) + 1
	if a < float64(d.first) || b > float64(d.cur*d.sps) || a < float64(oldest*d.sps) || b <= a {
		return 0, 0, 0, false
	}
	size := int64(len(d.hNum))
	for j := int64(math.Floor(a / sps)); float64(j)*sps < b; j++ {
		lo, hi := max(a, float64(j)*sps), min(b, float64(j+1)*sps)
		f := (hi - lo) / sps
		i := mod(j, size)
		num += f * float64(d.hNum[i])
		if d.hDen != nil {
			den += f * float64(d.hDen[i])
		} else {
			// Exposure is time: the steps of the slot that were observed.
			covered := float64(d.sps - max(0, min(d.sps, d.first-j*d.sps)))
			den += f * covered
		}
		if d.hEv != nil {
			ev += f * float64(d.hEv[i])
		}
	}
	return num, den, ev, true
}

// judge scores step n (just recorded) and steps the alert state machine.
func (d *Detector) judge(n int64) Result {
	r := Result{Time: d.time(n), State: d.stateNow(), Direction: d.firing}
	if n-d.first+1 < max(d.minHist, 1) {
		return r
	}
	seasonal := n-d.first+1 >= d.minSeasonal
	r.Baseline = Rolling
	if seasonal {
		r.Baseline = Seasonal
	}
	best := 0.0
	for _, w := range d.win {
		z, obs, exp, ok := d.judgeWindow(n, w, seasonal)
		if ok && math.Abs(z) > math.Abs(best) {
			best = z
			r.Window, r.Observed, r.Expected = time.Duration(w*d.step), obs, exp
		}
	}
	r.Score = best
	r.Transition = d.step1(n, best, r)
	r.State, r.Direction = d.stateNow(), d.firing
	if r.Transition != nil && r.Transition.State == Resolved {
		r.State, r.Direction = Resolved, r.Transition.Direction
	}
	return r
}

func (d *Detector) stateNow() State {
	if d.firing != 0 {
		return Firing
	}
	return Normal
}

// judgeWindow scores the window of w steps ending with step n. With
// seasonal history the window must deviate from the same time of day in
// previous days and from the same time of week in previous weeks alike:
// the milder of the two scores counts, and none when they disagree, so a
// weekly pattern (quiet weekends) never reads as a daily anomaly. Either
// baseline alone serves while the other has too little history. A daily
// score below the resolve threshold is final: the weekly one could only
// lower it, and no state changes on scores that low (half the work for
// a quiet point).
func (d *Detector) judgeWindow(n, w int64, seasonal bool) (z, obs, exp float64, ok bool) {
	if !seasonal {
		return d.score(n, w, sampleRolling)
	}
	z, obs, exp, ok = d.score(n, w, sampleDaily)
	if ok && math.Abs(z) < d.cfg.ResolveThreshold {
		return z, obs, exp, ok
	}
	zw, obsw, expw, okw := d.score(n, w, sampleWeekly)
	switch {
	case !okw:
		return z, obs, exp, ok
	case !ok:
		return zw, obsw, expw, okw
	case zw*z <= 0:
		return 0, obs, exp, true
	case math.Abs(zw) < math.Abs(z):
		return zw, obsw, expw, true
	}
	return z, obs, exp, true
}

// Where score takes its samples from.
const (
	sampleRolling = iota
	sampleDaily
	sampleWeekly
)

// score judges the window of w steps ending with step n against the
// samples of one baseline.
func (d *Detector) score(n, w int64, which int) (z, obs, exp float64, ok bool) {
	var num, den, ev float64
	for k := max(n-w+1, d.first); k <= n; k++ {
		i := mod(k, d.maxW)
		num += d.rNum[i]
		den += d.rDen[i]
		ev += d.rEv[i]
	}
	end := float64(n + 1)
	rates := d.scratch[:0]
	var poolNum, poolEv float64
	add := func(e float64) {
		sn, sd, se, ok := d.sum(e-float64(w), e)
		if !ok || sd <= 0 {
			return
		}
		rates = append(rates, sn/sd)
		poolNum += sn
		poolEv += se
	}
	switch which {
	case sampleDaily, sampleWeekly:
		period, count := d.day, d.cfg.SeasonalDays
		if which == sampleWeekly {
			period, count = d.week, d.cfg.SeasonalWeeks
		}
		for k := 1; k <= count; k++ {
			for o := -d.nb; o <= d.nb; o++ {
				add(end - float64(k)*period + float64(o*d.sps))
			}
		}
	default:
		// Rolling: windows of the same length ending at slot boundaries
		// before the current window, back to RollingWindow.
		top := float64(floorDiv(n+1-w, d.sps) * d.sps)
		for e := top; e > end-float64(d.rolling); e -= float64(d.sps) {
			add(e)
		}
	}
	d.scratch = rates
	if len(rates) < 3 || den <= 0 {
		return 0, num, 0, false
	}
	center := median(rates, &d.scratch2)
	spread := 1.4826 * mad(rates, center, &d.scratch2)
	exp = center * den
	sd := spread * den

	// Money is judged in events: divide by the money per event.
	unit := 1.0
	if d.spec.Kind.hasEvents() {
		if poolEv+ev > 0 && poolNum+num > 0 {
			unit = (poolNum + num) / (poolEv + ev)
		}
	}
	obsC, expC, sdC := num/unit, exp/unit, sd/unit
	if max(obsC, expC) < d.cfg.MinVolume {
		return 0, num, exp, true
	}
	// Anscombe's transform makes Poisson noise unit-variance at any count;
	// the observed spread of the baseline and the measurement error can
	// only widen it (the Poisson floor).
	resid := 2 * (math.Sqrt(obsC+0.375) - math.Sqrt(expC+0.375))
	floor := math.Sqrt(1 + d.spec.RelErr*d.spec.RelErr*expC)
	spreadT := sdC / math.Sqrt(expC+0.375)
	return resid / max(floor, spreadT), num, exp, true
}

// step1 advances the alert state machine with the score of step n.
func (d *Detector) step1(n int64, z float64, r Result) *Transition {
	dir := Direction(0)
	switch {
	case z >= d.cfg.Threshold && d.cfg.spikes():
		dir = Spike
	case z <= -d.cfg.Threshold && d.cfg.drops():
		dir = Drop
	}
	if d.firing != 0 {
		if float64(d.firing)*z >= d.cfg.ResolveThreshold {
			d.calm = 0
			d.peak = max(d.peak, math.Abs(z))
			return nil
		}
		d.calm++
		if d.calm < d.cfg.ResolvePoints {
			return nil
		}
		tr := &Transition{State: Resolved, Direction: d.firing, Start: d.time(d.start), At: r.Time,
			Score: d.peak, Window: r.Window, Observed: r.Observed, Expected: r.Expected}
		d.resolved[d.firing.index()] = n
		d.firing, d.calm, d.pending, d.pendingDir = 0, 0, 0, 0
		return tr
	}
	if dir == 0 {
		d.pending, d.pendingDir = 0, 0
		return nil
	}
	if dir != d.pendingDir {
		d.pending, d.pendingDir = 0, dir
	}
	d.pending++
	if d.pending < d.cfg.Persistence {
		return nil
	}
	if last := d.resolved[dir.index()]; last != noStep && n-last < d.cooldown {
		return nil // cooling down; stays pending
	}
	d.firing, d.start, d.peak, d.calm, d.pending = dir, n, math.Abs(z), 0, 0
	return &Transition{State: Firing, Direction: dir, Start: r.Time, At: r.Time, Score: z,
		Window: r.Window, Observed: r.Observed, Expected: r.Expected}
}
