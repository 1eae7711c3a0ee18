package anomaly

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// poisson draws a Poisson count of mean lambda (Knuth for small means, a
// rounded normal for large ones: enough for tests).
func poisson(r *rand.Rand, lambda float64) float64 {
	if lambda > 50 {
		return max(0, float64(int(lambda+r.NormFloat64()*sqrt(lambda)+0.5)))
	}
	l, k, p := exp(-lambda), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// TestPeekChangesNothing: a detector peeked at before every step judges
// every step, fires and resolves exactly as its twin that never peeks.
func TestPeekChangesNothing(t *testing.T) {
	for _, spec := range []Spec{{Kind: Count}, {Kind: Ratio}, {Kind: Amount}, {Kind: AmountRatio}} {
		t.Run(spec.Kind.String(), func(t *testing.T) {
			a := newDet(t, DefaultConfig(), time.Minute, spec)
			b := newDet(t, DefaultConfig(), time.Minute, spec)
			r := rand.New(rand.NewPCG(1, 2))
			n := 3*1440 + 240
			peeks := 0
			for i := range n {
				at := t0.Add(time.Duration(i) * time.Minute)
				lambda := 40.0
				if i > 3*1440+60 && i < 3*1440+90 {
					lambda = 160 // an episode, so the alert state moves too
				}
				o := Obs{Num: poisson(r, lambda), Den: poisson(r, 400), Events: poisson(r, lambda)}
				if i > 0 {
					f := 0.05 + 0.95*r.Float64()
					if _, err := a.Peek(at, Obs{Num: o.Num * f * 3, Den: o.Den * f, Events: o.Events * f}, f); err != nil {
						t.Fatal(err)
					}
					peeks++
				}
				ra, err := a.Observe(at, o)
				if err != nil {
					t.Fatal(err)
				}
				rb, err := b.Observe(at, o)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ra, rb) {
					t.Fatalf("step %d after %d peeks: %+v, twin without peeks %+v", i, peeks, ra, rb)
				}
			}
			if !reflect.DeepEqual(a.AlertState(), b.AlertState()) {
				t.Fatalf("alert state %+v, twin %+v", a.AlertState(), b.AlertState())
			}
		})
	}
}

// TestPeekFiresEarlyWithTheSameIdentity: tracking breaks (a count of 30 a
// minute falls to zero). The first empty minute is pending (persistence
// 2); a peek a fifth into the second minute fires, with the Start the
// settled second minute fires with.
func TestPeekFiresEarlyWithTheSameIdentity(t *testing.T) {
	d := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: Count})
	r := rand.New(rand.NewPCG(3, 4))
	n := 3 * 1440
	for i := range n {
		if _, err := d.Observe(t0.Add(time.Duration(i)*time.Minute), Obs{Num: poisson(r, 30)}); err != nil {
			t.Fatal(err)
		}
	}
	first := t0.Add(time.Duration(n) * time.Minute)
	res, err := d.Observe(first, Obs{Num: 0})
	if err != nil {
		t.Fatal(err)
	}
	if res.Transition != nil || res.Score > -DefaultConfig().Threshold {
		t.Fatalf("first empty minute: %+v, want anomalous and pending", res)
	}
	second := first.Add(time.Minute)
	peek, err := d.Peek(second, Obs{Num: 0}, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if peek.Transition == nil || peek.Transition.State != Firing || peek.Transition.Direction != Drop {
		t.Fatalf("peek a fifth into the second empty minute: %+v, want a drop firing", peek)
	}
	settled, err := d.Observe(second, Obs{Num: 0})
	if err != nil {
		t.Fatal(err)
	}
	if settled.Transition == nil || !settled.Transition.Start.Equal(peek.Transition.Start) {
		t.Fatalf("settled %+v, peek fired with start %v", settled.Transition, peek.Transition.Start)
	}
}

// TestPeekPartialMinuteIsNoDrop: the early part of a normal minute holds
// a part of its events; judged by the share elapsed it is neither a drop
// nor a spike.
func TestPeekPartialMinuteIsNoDrop(t *testing.T) {
	d := newDet(t, DefaultConfig(), time.Minute, Spec{Kind: Count})
	r := rand.New(rand.NewPCG(5, 6))
	n := 3 * 1440
	for i := range n {
		if _, err := d.Observe(t0.Add(time.Duration(i)*time.Minute), Obs{Num: poisson(r, 60)}); err != nil {
			t.Fatal(err)
		}
	}
	next := t0.Add(time.Duration(n) * time.Minute)
	for _, f := range []float64{0.05, 0.1, 0.25, 0.5, 0.75, 1} {
		for range 20 {
			res, err := d.Peek(next, Obs{Num: poisson(r, 60*f)}, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Score <= -DefaultConfig().Threshold || res.Score >= DefaultConfig().Threshold {
				t.Fatalf("a normal minute %.0f%% in scores %.1f (%+v)", f*100, res.Score, res)
			}
		}
	}
	if _, err := d.Peek(next.Add(time.Minute), Obs{}, 0.5); err == nil {
		t.Fatal("peek two steps ahead: no error")
	}
	if _, err := d.Peek(next, Obs{}, 0); err == nil {
		t.Fatal("peek with no exposure: no error")
	}
}

func sqrt(x float64) float64 { return math.Sqrt(x) }
func exp(x float64) float64  { return math.Exp(x) }

// TestMonitorRestoredMidEpisode: a campaign's monitor is rebuilt halfway
// through broken tracking, by warming the same history and restoring the
// alert states: from there on it reports exactly what the original does
// (no second firing, one resolution), and a peek adds no share detector.
func TestMonitorRestoredMidEpisode(t *testing.T) {
	t.Parallel()
	a, err := NewMonitor(DefaultMonitorConfig(), step5)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewMonitor(DefaultMonitorConfig(), step5)
	if err != nil {
		t.Fatal(err)
	}
	step := func(i int) Counters {
		c := campaign()
		if i >= threeDays && i < threeDays+12 {
			c.Conversions, c.Revenue = 0, 0
		}
		return c
	}
	cut := threeDays + 4 // two points after the alerts fired
	var before []Event
	for i := range cut {
		at := t0.Add(time.Duration(i) * step5)
		evs, err := a.Observe(at, step(i))
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, evs...)
		if err := b.Warm(at, step(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(before) == 0 {
		t.Fatal("nothing fired before the cut")
	}
	if err := b.SetAlertStates(a.AlertStates()); err != nil {
		t.Fatal(err)
	}
	c := campaign()
	c.SourceClicks["newcomer"] = 50
	if _, err := b.Peek(t0.Add(time.Duration(cut)*step5), c, 0.4, 0.5); err != nil {
		t.Fatal(err)
	}
	if b.Detector(ShareMetric("newcomer")) != nil {
		t.Fatal("a peek added a share detector")
	}
	resolved := 0
	for i := cut; i < threeDays+30; i++ {
		at := t0.Add(time.Duration(i) * step5)
		ea, err := a.Observe(at, step(i))
		if err != nil {
			t.Fatal(err)
		}
		eb, err := b.Observe(at, step(i))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ea, eb) {
			t.Fatalf("step %d: original %+v, rebuilt %+v", i, ea, eb)
		}
		for _, e := range eb {
			if e.State == Firing {
				t.Fatalf("step %d: %s fired again after the rebuild", i, e.Metric)
			}
			resolved++
		}
	}
	if resolved != len(before) {
		t.Fatalf("%d resolutions after the rebuild, %d alerts fired before", resolved, len(before))
	}
}

// TestMonitorPeekBounds: a campaign of 10,000 clicks a minute, 40 % into a
// normal minute; the data's delay makes the share covered known within
// [30 %, 50 %]. Judged at either end alone, the minute reads as a spike
// (30 %) or a drop (50 %); judged as Peek does, it is neither. A real
// drop to zero still fires.
func TestMonitorPeekBounds(t *testing.T) {
	t.Parallel()
	cfg := DefaultMonitorConfig()
	cfg.Metrics = []Metric{Clicks}
	cfg.MaxShares = 0
	m, err := NewMonitor(cfg, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	n := 2*1440 + 60
	for i := range n {
		if _, err := m.Observe(t0.Add(time.Duration(i)*time.Minute), Counters{Clicks: poisson(r, 10000)}); err != nil {
			t.Fatal(err)
		}
	}
	next := t0.Add(time.Duration(n) * time.Minute)
	partial := Counters{Clicks: 4000}
	d := m.Detector(Clicks)
	for _, f := range []float64{0.3, 0.5} {
		res, err := d.Peek(next, Obs{Num: partial.Clicks}, f)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(res.Score) < DefaultConfig().Threshold {
			t.Fatalf("judged at %.0f%% alone the partial minute scores %.1f: the test needs it to look anomalous", f*100, res.Score)
		}
	}
	if evs, err := m.Peek(next, partial, 0.3, 0.5); err != nil || len(evs) != 0 {
		t.Fatalf("peek within [30%%, 50%%]: %+v (%v), want nothing", evs, err)
	}
	if _, err := m.Observe(next, Counters{}); err != nil { // tracking breaks
		t.Fatal(err)
	}
	evs, err := m.Peek(next.Add(time.Minute), Counters{}, 0.3, 0.5)
	if err != nil || len(evs) != 1 || evs[0].Direction != Drop {
		t.Fatalf("peek after a minute without clicks: %+v (%v), want the drop firing", evs, err)
	}
	if _, err := m.Peek(next, partial, 0.6, 0.5); err == nil {
		t.Fatal("lo above hi: no error")
	}
	if err := m.SetFiring(Clicks, Spike, next, 9); err != nil {
		t.Fatal(err)
	}
	if s := d.AlertState(); s.Firing != Spike || !s.Start.Equal(next) {
		t.Fatalf("after SetFiring: %+v", s)
	}
}
