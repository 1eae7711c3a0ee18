package alerts

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tally-edge/tally/internal/harness"
	"github.com/tally-edge/tally/internal/loadgen"
)

// model is one generated campaign: events a minute of each type at the
// daily peak, spread over its sources (each shipped by one agent).
type model struct {
	campaign string
	peak     map[string]float64
	sources  []string
	// value of a conversion and cost of a cost event, in cents.
	valueCents, costCents int64
	// ua, when set, is every visitor's user agent (one device a
	// campaign: few series); else one of loadgen.BrowserUAs by visitor.
	ua string
}

// anomaly changes a campaign's traffic in [start, end).
type anomaly struct {
	campaign   string
	kind       string // "spike" (clicks times factor), "drop" (every event kept with probability factor), "tracking" (no conversions)
	factor     float64
	start, end time.Time
}

// traffic is the generator: seasonal Poisson counts (a daily peak at
// peakAt UTC and optionally a second one, weekends at 60 %, a day level
// that wanders ±6 %), a deterministic rate function of event time, so the
// backfilled history and the live minutes after it follow the same shape;
// the same events for a minute whoever asks, anomalies where the plan
// says.
type traffic struct {
	seed   uint64
	peakAt time.Duration // time of day of the daily peak
	// flatness is the share of the peak rate that does not follow the
	// day's shape (default 0.25): close to 1 for a test whose history is
	// shorter than the two days a seasonal baseline needs. When set,
	// weekends are as busy as weekdays too.
	flatness float64
	// evening, when set, is a second daily peak that long after peakAt,
	// eveningShare as high as the first: a double-peak day.
	evening      time.Duration
	eveningShare float64
	models       []model

	mu        sync.Mutex
	anomalies []anomaly
}

// plan adds anomalies (the live sender reads them as minutes come).
func (g *traffic) plan(as ...anomaly) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.anomalies = append(g.anomalies, as...)
}

// level is the share of the peak rate at t.
func (g *traffic) level(t time.Time) float64 {
	day := t.Truncate(24 * time.Hour)
	h := fnv.New64a()
	fmt.Fprint(h, day.Unix())
	r := rand.New(rand.NewPCG(g.seed, h.Sum64()))
	dayLevel := 1 + 0.06*(2*r.Float64()-1)
	if wd := t.Weekday(); g.flatness == 0 && (wd == time.Saturday || wd == time.Sunday) {
		dayLevel *= 0.6
	}
	flat := g.flatness
	if flat == 0 {
		flat = 0.25
	}
	shape := bump(t.Sub(day), g.peakAt)
	if g.evening > 0 {
		shape = math.Min(1, shape+g.eveningShare*bump(t.Sub(day), g.peakAt+g.evening))
	}
	return dayLevel * (flat + (1-flat)*shape)
}

// bump is a daily peak at the time of day at: 1 there, falling as a
// Gaussian of three hours' deviation, the short way round the clock.
func bump(tod, at time.Duration) float64 {
	d := math.Mod(math.Abs(tod.Hours()-at.Hours()), 24)
	d = math.Min(d, 24-d)
	return math.Exp(-d * d / 18)
}

func poisson(r *rand.Rand, lambda float64) int {
	if lambda > 60 {
		return int(math.Max(0, math.Round(lambda+r.NormFloat64()*math.Sqrt(lambda))))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// minute returns the events of m in the minute starting at t, anomalies
// applied.
func (g *traffic) minute(m model, t time.Time) []loadgen.Event {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", m.campaign, t.Unix())
	r := rand.New(rand.NewPCG(g.seed, h.Sum64()))
	lvl := g.level(t)
	var out []loadgen.Event
	for _, typ := range []string{"click", "conversion", "pageview", "cost"} {
		n := poisson(r, m.peak[typ]*lvl)
		for range n {
			ts := t.Add(time.Duration(r.IntN(60_000)) * time.Millisecond)
			out = append(out, g.event(r, m, typ, ts))
		}
	}
	g.mu.Lock()
	plan := append([]anomaly(nil), g.anomalies...)
	g.mu.Unlock()
	for _, a := range plan {
		if a.campaign != m.campaign || !t.Add(time.Minute).After(a.start) || !t.Before(a.end) {
			continue
		}
		kept := out[:0:0]
		for _, e := range out {
			ts := time.UnixMilli(e.TS)
			in := !ts.Before(a.start) && ts.Before(a.end)
			switch {
			case !in:
				kept = append(kept, e)
			case a.kind == "tracking" && e.Type == "conversion":
			case a.kind == "drop" && r.Float64() >= a.factor:
			case a.kind == "spike" && e.Type == "click":
				kept = append(kept, e)
				for k := 1; k < int(a.factor); k++ {
					kept = append(kept, g.event(r, m, "click", ts.Add(time.Duration(r.IntN(1000))*time.Millisecond)))
				}
			default:
				kept = append(kept, e)
			}
		}
		out = kept
	}
	return out
}

func (g *traffic) event(r *rand.Rand, m model, typ string, ts time.Time) loadgen.Event {
	src := m.sources[r.IntN(len(m.sources))]
	e := loadgen.Event{Type: typ, TS: ts.UnixMilli(), Campaign: m.campaign, Source: src, Medium: "cpc", Country: "DE"}
	if typ == "cost" {
		c := float64(m.costCents) / 100
		e.Cost = &c
		return e
	}
	v := r.IntN(200_000)
	e.Visitor = fmt.Sprintf("%s-v%06d", m.campaign, v)
	e.IP = fmt.Sprintf("10.%d.%d.%d", v>>16&255, v>>8&255, v&255)
	e.UA = loadgen.BrowserUAs[v%len(loadgen.BrowserUAs)]
	if m.ua != "" {
		e.UA = m.ua
	}
	if typ == "conversion" {
		val := float64(m.valueCents) / 100
		e.Value = &val
	}
	return e
}

// dayTotals are a campaign's totals of one UTC day.
type dayTotals struct {
	spendCents, conversions int64
}

// sender posts events to the agents: each source to one agent.
type sender struct {
	agents  []string // events URLs
	agentOf map[string]int
	mu      sync.Mutex
	totals  map[string]map[time.Time]*dayTotals // campaign → day → totals
	clicked map[string]int64                    // campaign → clicks
	sent    int
}

func newSender(agents []string, models []model) *sender {
	s := &sender{agents: agents, agentOf: map[string]int{}, totals: map[string]map[time.Time]*dayTotals{}, clicked: map[string]int64{}}
	i := 0
	for _, m := range models {
		for _, src := range m.sources {
			if _, ok := s.agentOf[src]; !ok {
				s.agentOf[src] = i % len(agents)
				i++
			}
		}
	}
	return s
}

// post sends events, split by agent, and counts them into the totals.
func (s *sender) post(ctx context.Context, events []loadgen.Event) error {
	by := make([][]loadgen.Event, len(s.agents))
	s.mu.Lock()
	for _, e := range events {
		by[s.agentOf[e.Source]] = append(by[s.agentOf[e.Source]], e)
		day := time.UnixMilli(e.TS).UTC().Truncate(24 * time.Hour)
		dt := s.totals[e.Campaign][day]
		if dt == nil {
			if s.totals[e.Campaign] == nil {
				s.totals[e.Campaign] = map[time.Time]*dayTotals{}
			}
			dt = &dayTotals{}
			s.totals[e.Campaign][day] = dt
		}
		switch {
		case e.Type == "cost" && e.Cost != nil:
			dt.spendCents += int64(math.Round(*e.Cost * 100))
		case e.Type == "conversion":
			dt.conversions++
		case e.Type == "click":
			s.clicked[e.Campaign]++
		}
	}
	s.sent += len(events)
	s.mu.Unlock()
	g, gctx := errgroup.WithContext(ctx)
	for i, evs := range by {
		if len(evs) == 0 {
			continue
		}
		c := &loadgen.Client{URL: s.agents[i], Token: harness.DefaultServerToken}
		g.Go(func() error { return c.Post(gctx, evs) })
	}
	return g.Wait()
}

// backfill sends every minute of [from, to) of every model, in batches
// of about batch events, with a few requests in flight.
func (s *sender) backfill(ctx context.Context, g *traffic, from, to time.Time, batch int) error {
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(4)
	var buf []loadgen.Event
	for t := from; t.Before(to); t = t.Add(time.Minute) {
		for _, m := range g.models {
			buf = append(buf, g.minute(m, t)...)
		}
		if len(buf) >= batch || !t.Add(time.Minute).Before(to) {
			evs := buf
			buf = nil
			eg.Go(func() error { return s.post(ectx, evs) })
		}
		if ectx.Err() != nil {
			break
		}
	}
	return eg.Wait()
}

// live sends the events of every model as their time comes (each half
// second, what is due), from start until ctx ends.
func (s *sender) live(ctx context.Context, g *traffic, start time.Time) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	cur := start.Truncate(time.Minute)
	var pending []loadgen.Event
	load := func(m time.Time) {
		for _, md := range g.models {
			for _, e := range g.minute(md, m) {
				if !time.UnixMilli(e.TS).Before(start) {
					pending = append(pending, e)
				}
			}
		}
	}
	load(cur)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		for !cur.Add(time.Minute).After(now) {
			cur = cur.Add(time.Minute)
			load(cur)
		}
		var due []loadgen.Event
		rest := pending[:0:0]
		for _, e := range pending {
			if time.UnixMilli(e.TS).After(now) {
				rest = append(rest, e)
			} else {
				due = append(due, e)
			}
		}
		pending = rest
		if len(due) > 0 {
			if err := s.post(ctx, due); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// sentCount returns how many events were sent so far.
func (s *sender) sentCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// dayTotal returns a campaign's totals of a UTC day as sent.
func (s *sender) dayTotal(campaign string, day time.Time) dayTotals {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dt := s.totals[campaign][day]; dt != nil {
		return *dt
	}
	return dayTotals{}
}

// clicks returns the clicks of campaign sent so far.
func (s *sender) clicks(campaign string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clicked[campaign]
}
