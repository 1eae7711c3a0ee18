package anomaly

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday

const step5 = 5 * time.Minute

// run feeds n points of step from t0 and returns every result.
func run(t *testing.T, d *Detector, step time.Duration, n int, f func(i int, at time.Time) Obs) []Result {
	t.Helper()
	out := make([]Result, 0, n)
	for i := range n {
		at := t0.Add(time.Duration(i) * step)
		r, err := d.Observe(at, f(i, at))
		if err != nil {
			t.Fatalf("point %d: %v", i, err)
		}
		out = append(out, r)
	}
	return out
}

func fired(rs []Result) []Transition {
	var out []Transition
	for _, r := range rs {
		if r.Transition != nil && r.Transition.State == Firing {
			out = append(out, *r.Transition)
		}
	}
	return out
}

func newDet(t *testing.T, cfg Config, step time.Duration, spec Spec) *Detector {
	t.Helper()
	d, err := New(cfg, step, spec)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const threeDays = 3 * 288 // points of 5 minutes

// TestCountPoissonFloor: a series that never varied has no measured spread,
// yet 30 % more of 100 events is Poisson noise, not an anomaly; three times
// as many is.
func TestCountPoissonFloor(t *testing.T) {
	for _, tc := range []struct {
		bump   float64
		alerts int
	}{{130, 0}, {300, 1}} {
		d := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
		rs := run(t, d, step5, threeDays+6, func(i int, _ time.Time) Obs {
			if i >= threeDays {
				return Obs{Num: tc.bump}
			}
			return Obs{Num: 100}
		})
		if got := fired(rs); len(got) != tc.alerts {
			t.Fatalf("100 -> %v: %d alerts %+v, want %d", tc.bump, len(got), got, tc.alerts)
		}
		last := rs[len(rs)-1]
		if last.Baseline != Seasonal {
			t.Fatalf("after 3 days the baseline is %v, want seasonal", last.Baseline)
		}
		if tc.alerts == 1 && fired(rs)[0].Direction != Spike {
			t.Fatalf("direction %v, want spike", fired(rs)[0].Direction)
		}
	}
}

// TestRatioJudgedAsRatioOfCounts: CTR stays put when impressions double (the
// click count alerts, the ratio does not); 14 % instead of 10 % on 500
// impressions is within the binomial noise of 50 clicks; a collapse to 2 %
// is a drop.
func TestRatioJudgedAsRatioOfCounts(t *testing.T) {
	feed := func(kind Kind, imp, clk float64) []Transition {
		d := newDet(t, DefaultConfig(), step5, Spec{Kind: kind})
		rs := run(t, d, step5, threeDays+6, func(i int, _ time.Time) Obs {
			if i >= threeDays {
				if kind == Count {
					return Obs{Num: clk}
				}
				return Obs{Num: clk, Den: imp}
			}
			if kind == Count {
				return Obs{Num: 50}
			}
			return Obs{Num: 50, Den: 500}
		})
		return fired(rs)
	}
	if got := feed(Ratio, 1000, 100); len(got) != 0 {
		t.Fatalf("CTR alerted when impressions and clicks doubled: %+v", got)
	}
	if got := feed(Count, 1000, 100); len(got) != 1 || got[0].Direction != Spike {
		t.Fatalf("clicks doubled: %+v, want one spike", got)
	}
	if got := feed(Ratio, 500, 70); len(got) != 0 {
		t.Fatalf("CTR 10%% -> 14%% on 500 impressions alerted: %+v", got)
	}
	got := feed(Ratio, 1000, 20)
	if len(got) != 1 || got[0].Direction != Drop {
		t.Fatalf("CTR 10%% -> 2%%: %+v, want one drop", got)
	}
	if math.Abs(got[0].Expected-got[0].Observed) < 1 || got[0].Expected < 100 {
		t.Fatalf("expected %v clicks for the window, observed %v", got[0].Expected, got[0].Observed)
	}
}

// TestUniquesWidenedByHLLError: at a million uniques a step, 3 % is within
// the HyperLogLog's error (though far beyond Poisson noise); 15 % is not.
func TestUniquesWidenedByHLLError(t *testing.T) {
	feed := func(relErr, bump float64) int {
		d := newDet(t, DefaultConfig(), step5, Spec{Kind: Count, RelErr: relErr})
		rs := run(t, d, step5, threeDays+6, func(i int, _ time.Time) Obs {
			if i >= threeDays {
				return Obs{Num: 1e6 * bump}
			}
			return Obs{Num: 1e6}
		})
		return len(fired(rs))
	}
	if n := feed(HLLRelErr, 1.03); n != 0 {
		t.Fatalf("+3%% uniques with the HLL error: %d alerts, want 0", n)
	}
	if n := feed(0, 1.03); n != 1 {
		t.Fatalf("+3%% of an exact count of 1e6: %d alerts, want 1 (the floor must come from the HLL error)", n)
	}
	if n := feed(HLLRelErr, 1.15); n != 1 {
		t.Fatalf("+15%% uniques: %d alerts, want 1", n)
	}
}

// TestAmountJudgedInEvents: spend of 1000 a step from 20 cost events of 50;
// 1400 (28 events) is Poisson noise of the events, though 1000 -> 1400 would
// be significant if money were counted as events; 5000 is a spike.
func TestAmountJudgedInEvents(t *testing.T) {
	feed := func(kind Kind, money, events float64) int {
		d := newDet(t, DefaultConfig(), step5, Spec{Kind: kind})
		rs := run(t, d, step5, threeDays+6, func(i int, _ time.Time) Obs {
			if i >= threeDays {
				return Obs{Num: money, Events: events}
			}
			return Obs{Num: 1000, Events: 20}
		})
		return len(fired(rs))
	}
	if n := feed(Amount, 1400, 28); n != 0 {
		t.Fatalf("spend 1000 -> 1400 (20 -> 28 events): %d alerts, want 0", n)
	}
	if n := feed(Count, 1400, 28); n != 1 {
		t.Fatalf("the same numbers as a count: %d alerts, want 1", n)
	}
	if n := feed(Amount, 5000, 100); n != 1 {
		t.Fatalf("spend 1000 -> 5000: %d alerts, want 1", n)
	}
}

// daily is a square wave: 20 events a step at night, 200 from 08:00 to
// 20:00, with Poisson-like noise from a fixed seed.
func daily(rng *rand.Rand, at time.Time, night, day float64) float64 {
	base := night
	if h := at.Hour(); h >= 8 && h < 20 {
		base = day
	}
	return math.Round(base + rng.NormFloat64()*math.Sqrt(base))
}

// TestSeasonalBaseline: on the first day the rolling baseline knows no
// daily pattern and the morning rise and evening fall alert; from the third day the same
// rise is expected; a day that stays at its night level is a drop.
func TestSeasonalBaseline(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	d := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	const days = 6
	rs := run(t, d, step5, days*288, func(i int, at time.Time) Obs {
		if at.Day() == t0.Day()+4 { // day 5 never rises
			return Obs{Num: daily(rng, at, 20, 20)}
		}
		return Obs{Num: daily(rng, at, 20, 200)}
	})
	var first, seasonal []Transition
	for _, tr := range fired(rs) {
		if tr.Start.Before(t0.Add(24 * time.Hour)) {
			first = append(first, tr)
		} else if !tr.Start.Before(t0.Add(48 * time.Hour)) {
			seasonal = append(seasonal, tr)
		}
	}
	if len(first) != 2 || first[0].Direction != Spike || first[0].Start.Hour() != 8 ||
		first[1].Direction != Drop || first[1].Start.Hour() != 20 {
		t.Fatalf("first day (rolling baseline): %+v, want a spike at 08:xx and a drop at 20:xx", first)
	}
	if len(seasonal) != 1 || seasonal[0].Direction != Drop || seasonal[0].Start.Day() != t0.Day()+4 || seasonal[0].Start.Hour() != 8 {
		t.Fatalf("days 3-6 (seasonal baseline): %+v, want exactly the drop of day 5 at 08:xx", seasonal)
	}
	if rs[2*288-2].Baseline != Rolling || rs[2*288-1].Baseline != Seasonal { // 48h of points, the last included
		t.Fatalf("baselines around 48h: %v then %v, want rolling then seasonal", rs[2*288-2].Baseline, rs[2*288-1].Baseline)
	}
	if rs[10].Baseline != NoBaseline || rs[10].Score != 0 {
		t.Fatalf("before min_history: %+v, want no judgement", rs[10])
	}
}

// TestWeeklyPattern: weekends at a quarter of weekdays. With weekly history
// the weekend is expected; the same-time-of-day baseline alone (five
// weekdays in every seven days) would read every Saturday as a drop.
func TestWeeklyPattern(t *testing.T) {
	t.Parallel()
	feed := func(weeks int) []Transition {
		cfg := DefaultConfig()
		cfg.SeasonalWeeks = weeks
		rng := rand.New(rand.NewPCG(3, 4))
		d := newDet(t, cfg, 15*time.Minute, Spec{Kind: Count})
		var out []Transition
		for _, tr := range fired(run(t, d, 15*time.Minute, 4*7*96, func(i int, at time.Time) Obs {
			day := 200.0
			if wd := at.Weekday(); wd == time.Saturday || wd == time.Sunday {
				day = 50
			}
			return Obs{Num: daily(rng, at, 20, day)}
		})) {
			if !tr.Start.Before(t0.Add(14 * 24 * time.Hour)) { // weeks 3 and 4
				out = append(out, tr)
			}
		}
		return out
	}
	if got := feed(2); len(got) != 0 {
		t.Fatalf("weeks 3-4 with the weekly baseline: %+v, want no alert", got)
	}
	got := feed(0)
	if len(got) == 0 || got[0].Direction != Drop || got[0].Start.Weekday() != time.Saturday {
		t.Fatalf("daily baseline only: %+v, want a drop on Saturday (the reason for the weekly rule)", got)
	}
}

// TestMinVolume: with a sensitive threshold, 6 events where there were none
// scores high but is too small to matter; 15 is enough.
func TestMinVolume(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Threshold, cfg.ResolveThreshold = 3, 1
	cfg.Windows = []time.Duration{time.Nanosecond} // volume is per window: judge points alone
	for _, tc := range []struct {
		minVol, bump float64
		alerts       int
	}{{10, 6, 0}, {0, 6, 1}, {10, 15, 1}} {
		cfg.MinVolume = tc.minVol
		d := newDet(t, cfg, step5, Spec{Kind: Count})
		rs := run(t, d, step5, threeDays+4, func(i int, _ time.Time) Obs {
			if i >= threeDays {
				return Obs{Num: tc.bump}
			}
			return Obs{}
		})
		if got := fired(rs); len(got) != tc.alerts {
			t.Fatalf("min_volume %v, 0 -> %v events: %d alerts, want %d", tc.minVol, tc.bump, len(got), tc.alerts)
		}
	}
}

// quiet returns a one-window detector on a flat series of 100, ready to
// judge, and the index of the next point.
func quiet(t *testing.T, cfg Config) (*Detector, int) {
	t.Helper()
	cfg.Windows = []time.Duration{time.Nanosecond} // one step: judge points alone
	d := newDet(t, cfg, step5, Spec{Kind: Count})
	run(t, d, step5, threeDays, func(int, time.Time) Obs { return Obs{Num: 100} })
	return d, threeDays
}

// feedAt feeds values from point index i on and returns the results.
func feedAt(t *testing.T, d *Detector, i int, vals ...float64) []Result {
	t.Helper()
	var out []Result
	for k, v := range vals {
		r, err := d.Observe(t0.Add(time.Duration(i+k)*step5), Obs{Num: v})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestPersistence: one anomalous point does not fire; two in a row do, at
// the second.
func TestPersistence(t *testing.T) {
	d, i := quiet(t, DefaultConfig())
	if got := fired(feedAt(t, d, i, 400, 100, 400, 100)); len(got) != 0 {
		t.Fatalf("isolated anomalous points fired: %+v", got)
	}
	rs := feedAt(t, d, i+4, 400, 400)
	if rs[0].Transition != nil || rs[1].Transition == nil || rs[1].Transition.State != Firing {
		t.Fatalf("two anomalous points: %+v, want firing at the second", rs)
	}
	if !rs[1].Transition.Start.Equal(t0.Add(time.Duration(i+5) * step5)) {
		t.Fatalf("start %v, want the second point's time", rs[1].Transition.Start)
	}
}

// TestHysteresis: between the thresholds a firing alert keeps firing;
// ResolvePoints quiet points resolve it.
func TestHysteresis(t *testing.T) {
	d, i := quiet(t, DefaultConfig())
	rs := feedAt(t, d, i, 400, 400)
	if rs[1].State != Firing {
		t.Fatalf("state %v, want firing", rs[1].State)
	}
	// 140 scores about 3.7: under the firing threshold, over the resolving one.
	rs = feedAt(t, d, i+2, 140, 140, 140, 140, 140)
	for _, r := range rs {
		if r.State != Firing || r.Transition != nil || r.Score < 3 || r.Score >= 8 {
			t.Fatalf("between thresholds: %+v, want firing without transition", r)
		}
	}
	rs = feedAt(t, d, i+7, 100, 100, 100)
	if rs[0].State != Firing || rs[1].State != Firing || rs[2].Transition == nil || rs[2].Transition.State != Resolved {
		t.Fatalf("three quiet points: %+v, want resolved at the third", rs)
	}
	if tr := rs[2].Transition; tr.Direction != Spike || tr.Score < 8 || !tr.Start.Equal(t0.Add(time.Duration(i+1)*step5)) {
		t.Fatalf("resolved %+v: want the spike's start and its peak score", tr)
	}
}

// TestCooldown: a second spike within the cooldown of the first's
// resolution does not fire; after it, it does. A drop is not held back by
// a spike's cooldown.
func TestCooldown(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cooldown = time.Hour
	d, i := quiet(t, cfg)
	episode := []float64{400, 400, 100, 100, 100}
	if got := fired(feedAt(t, d, i, episode...)); len(got) != 1 {
		t.Fatalf("first episode: %d alerts", len(got))
	}
	i += len(episode)
	// 30 minutes later: cooling down.
	if got := fired(feedAt(t, d, i, 100, 100, 100, 100, 400, 400, 400, 100, 100, 100)); len(got) != 0 {
		t.Fatalf("spike within the cooldown fired: %+v", got)
	}
	i += 10
	if got := fired(feedAt(t, d, i, 10, 10)); len(got) != 1 || got[0].Direction != Drop {
		t.Fatalf("drop right after a spike: %+v, want one drop", got)
	}
	i += 2
	feedAt(t, d, i, 100, 100, 100)
	i += 3
	quietSteps := make([]float64, 12)
	for k := range quietSteps {
		quietSteps[k] = 100
	}
	feedAt(t, d, i, quietSteps...)
	i += len(quietSteps)
	if got := fired(feedAt(t, d, i, 400, 400)); len(got) != 1 || got[0].Direction != Spike {
		t.Fatalf("spike after the cooldown: %+v, want one", got)
	}
}

// TestDirections: drops and spikes can each be turned off.
func TestDirections(t *testing.T) {
	off := false
	cfg := DefaultConfig()
	cfg.Drops = &off
	d, i := quiet(t, cfg)
	if got := fired(feedAt(t, d, i, 5, 5, 5)); len(got) != 0 {
		t.Fatalf("drops off, a drop fired: %+v", got)
	}
	cfg = DefaultConfig()
	cfg.Spikes = &off
	d, i = quiet(t, cfg)
	if got := fired(feedAt(t, d, i, 500, 500, 500)); len(got) != 0 {
		t.Fatalf("spikes off, a spike fired: %+v", got)
	}
	if got := fired(feedAt(t, d, i+3, 100, 100, 100, 5, 5)); len(got) != 1 || got[0].Direction != Drop {
		t.Fatalf("spikes off, a drop: %+v, want one drop", got)
	}
}

// TestRebuild: a detector rebuilt from the same history, warmed without
// judging and given the live detector's alert state, judges every later
// point exactly as the live one does. Two detectors fed the same points are
// identical.
func TestRebuild(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	vals := make([]float64, 9*288)
	for i := range vals {
		at := t0.Add(time.Duration(i) * step5)
		vals[i] = daily(rng, at, 20, 200)
		if i%700 > 690 { // spikes now and then
			vals[i] *= 4
		}
		if i > 8*288 && i < 8*288+40 { // and a drop in the replayed part
			vals[i] = 0
		}
	}
	obs := func(i int, _ time.Time) Obs { return Obs{Num: vals[i]} }
	live := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	twin := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	var liveRs []Result
	var states []AlertState // after each point
	for i := range vals {
		at := t0.Add(time.Duration(i) * step5)
		r, err := live.Observe(at, obs(i, at))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := twin.Observe(at, obs(i, at))
		if err != nil {
			t.Fatal(err)
		}
		if r.Score != r2.Score || r.State != r2.State {
			t.Fatalf("point %d: twins differ: %+v vs %+v", i, r, r2)
		}
		liveRs = append(liveRs, r)
		states = append(states, live.AlertState())
	}
	// Cut where the state machine is mid-way (a pending or calm count), so
	// the restored state is all of it.
	cut := -1
	for i := 8 * 288; i < len(vals); i++ {
		if st := states[i-1]; st.Pending > 0 || st.Calm > 0 {
			cut = i
			break
		}
	}
	if cut < 0 || len(fired(liveRs[cut:])) == 0 {
		t.Fatalf("no cut mid-way before an alert (cut %d): the test would prove little", cut)
	}
	rebuilt := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	for i := range cut {
		at := t0.Add(time.Duration(i) * step5)
		if err := rebuilt.Warm(at, obs(i, at)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rebuilt.SetAlertState(states[cut-1]); err != nil {
		t.Fatal(err)
	}
	for i := cut; i < len(vals); i++ {
		want := liveRs[i]
		at := t0.Add(time.Duration(i) * step5)
		got, err := rebuilt.Observe(at, obs(i, at))
		if err != nil {
			t.Fatal(err)
		}
		if got.Score != want.Score || got.State != want.State || (got.Transition == nil) != (want.Transition == nil) ||
			(got.Transition != nil && *got.Transition != *want.Transition) {
			t.Fatalf("point %d: rebuilt %+v, live %+v", i, got, want)
		}
	}
}

// TestAlertStateCooldownSurvivesRebuild: a restored cooldown holds back the
// alert a fresh detector would fire.
func TestAlertStateCooldownSurvivesRebuild(t *testing.T) {
	d, i := quiet(t, DefaultConfig())
	st := d.AlertState()
	st.LastSpikeResolved = t0.Add(time.Duration(i-1) * step5)
	if err := d.SetAlertState(st); err != nil {
		t.Fatal(err)
	}
	if got := fired(feedAt(t, d, i, 400, 400, 400)); len(got) != 0 {
		t.Fatalf("restored cooldown ignored: %+v", got)
	}
	if err := d.SetAlertState(AlertState{LastSpikeResolved: t0.Add(time.Minute)}); !errors.Is(err, ErrOffGrid) {
		t.Fatalf("off-grid time: %v, want ErrOffGrid", err)
	}
	if err := d.SetAlertState(AlertState{Firing: Spike}); err == nil {
		t.Fatal("firing without start accepted")
	}
}

// TestObserveOrderAndGaps: points must move forward on the grid; a skipped
// step counts as a step without events.
func TestObserveOrderAndGaps(t *testing.T) {
	d := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	at := t0.Add(13 * time.Second) // the grid's phase comes from the first point
	if _, err := d.Observe(at, Obs{Num: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Observe(at, Obs{Num: 1}); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("same time again: %v, want ErrOutOfOrder", err)
	}
	if _, err := d.Observe(at.Add(time.Minute), Obs{Num: 1}); !errors.Is(err, ErrOffGrid) {
		t.Fatalf("off the grid: %v, want ErrOffGrid", err)
	}
	if _, err := d.Observe(at.Add(3*step5), Obs{Num: 1}); err != nil {
		t.Fatal(err)
	}

	// A detector fed the zeros explicitly holds the same history.
	e := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	for k, v := range []float64{1, 0, 0, 1} {
		if err := e.Warm(at.Add(time.Duration(k)*step5), Obs{Num: v}); err != nil {
			t.Fatal(err)
		}
	}
	a1, b1, _, _ := d.sum(float64(d.first), float64(d.cur*d.sps))
	a2, b2, _, _ := e.sum(float64(e.first), float64(e.cur*e.sps))
	if a1 != a2 || b1 != b2 || a1 != 1 || b1 != 3 {
		t.Fatalf("history with a gap %v/%v, with explicit zeros %v/%v, want 1 event in 3 steps", a1, b1, a2, b2)
	}
	// The recent window forgets what the skipped steps' ring slots held.
	w := newDet(t, DefaultConfig(), step5, Spec{Kind: Count})
	for k := range 12 {
		if err := w.Warm(at.Add(time.Duration(k)*step5), Obs{Num: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Warm(at.Add(14*step5), Obs{Num: 1}); err != nil {
		t.Fatal(err)
	}
	if _, obs, _, _ := w.score(w.last, 3, sampleRolling); obs != 1 {
		t.Fatalf("15-minute window over a gap holds %v events, want 1 (the skipped steps are empty)", obs)
	}

	// A gap longer than the history is not walked step by step.
	start := time.Now()
	if _, err := d.Observe(at.Add(100*365*24*time.Hour), Obs{Num: 1}); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("a century-long gap took seconds")
	}
}

// TestHostileNumbers: NaN, infinities and negative values carry no events.
func TestHostileNumbers(t *testing.T) {
	d := newDet(t, DefaultConfig(), step5, Spec{Kind: Ratio})
	for k, o := range []Obs{{Num: math.NaN(), Den: 1}, {Num: math.Inf(1), Den: math.Inf(-1)}, {Num: -5, Den: -1}, {Num: 1, Den: 2}} {
		if _, err := d.Observe(t0.Add(time.Duration(k)*step5), o); err != nil {
			t.Fatal(err)
		}
	}
	d.closeSlots(d.cur + 1)
	num, den, _, ok := d.sum(float64(d.first), float64(d.cur*d.sps))
	if !ok || num != 1 || den != 3 {
		t.Fatalf("history %v/%v ok=%v, want 1/3", num, den, ok)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	off := false
	for name, mut := range map[string]func(c *Config){
		"threshold":      func(c *Config) { c.Threshold = 0 },
		"resolve":        func(c *Config) { c.ResolveThreshold = c.Threshold },
		"persistence":    func(c *Config) { c.Persistence = 0 },
		"windows":        func(c *Config) { c.Windows = nil },
		"window too big": func(c *Config) { c.Windows = []time.Duration{48 * time.Hour} },
		"slot":           func(c *Config) { c.Slot = 0 },
		"no seasons":     func(c *Config) { c.SeasonalDays, c.SeasonalWeeks = 0, 0 },
		"weeks":          func(c *Config) { c.SeasonalWeeks = 100 },
		"min seasonal":   func(c *Config) { c.MinSeasonalHistory = time.Hour },
		"min history":    func(c *Config) { c.MinHistory = 72 * time.Hour },
		"no direction":   func(c *Config) { c.Spikes, c.Drops = &off, &off },
		"volume":         func(c *Config) { c.MinVolume = -1 },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(DefaultConfig(), 0, Spec{Kind: Count}); err == nil {
		t.Error("zero step accepted")
	}
	if _, err := New(DefaultConfig(), time.Minute, Spec{Kind: 9}); err == nil {
		t.Error("unknown kind accepted")
	}
}

// TestHistoryBytes pins the memory of one live series (one-minute steps):
// the documented figure in docs/alerts.md.
func TestHistoryBytes(t *testing.T) {
	d := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: Count})
	if b := d.HistoryBytes(); b < 16_000 || b > 20_000 {
		t.Fatalf("count series at 1m steps: %d bytes of history", b)
	}
	r := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: AmountRatio})
	if b := r.HistoryBytes(); b < 48_000 || b > 52_000 {
		t.Fatalf("amount ratio series: %d bytes", b)
	}
}
