package api

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tally-edge/tally/aggregator/kpi"
	"github.com/tally-edge/tally/sketch"
)

// Query selects merged series-minutes: minutes starting in [From, To) of
// the listed campaigns (or of all of them) matching the dimension
// filters ("" matches everything).
type Query struct {
	Campaigns    []string
	AllCampaigns bool
	From, To     time.Time

	Source, Medium, Country, Device, Region string
	// Type, when set, selects the series of one event type (the polls
	// endpoint reads poll_vote series only).
	Type string

	// CountersOnly: the answer needs no uniques, so the source may leave
	// the sketches out (they are most of the bytes).
	CountersOnly bool
	// StoredUniques: the caller folds uniques with kpi.Accumulator, so
	// the source may hand HyperLogLogs over still in their stored
	// encoding (sketch.State.UniquesStored) instead of decoded Uniques.
	StoredUniques bool
	// NoQuantiles: the caller never reads the value sketches, so the
	// source may leave them out (nil Values).
	NoQuantiles bool

	// Step is the length of the buckets the answer folds points into,
	// aligned to multiples of it since the Unix epoch (0: one bucket for
	// the whole window), and Splits are instants at which the answer
	// folds into another bucket besides. A source may then yield, for a
	// whole hour or day whose minutes would all land in one bucket, one
	// point per series holding their merge (a rollup), with Minute the
	// start of the period: the folded answer is the same.
	Step   time.Duration
	Splits []time.Time
}

// Point is one merged series-minute, as a Source yields it. Code outside
// this package (sources, their fakes in tests) names it rather than the
// type it stands for.
type Point = sketch.Minute

// Source answers queries for merged series-minutes. EachMinute calls fn
// for every matching point, on the caller's goroutine, and stops at fn's
// first error, which it returns. A point may stand for a whole hour or
// day of minutes where Query.Step and Query.Splits allow it. Implementations
// must be safe for concurrent use.
type Source interface {
	EachMinute(ctx context.Context, q Query, fn func(sketch.Minute) error) error
}

// noneKey is the group key of an empty dimension value.
const noneKey = "(none)"

// dimension returns the function reading one dimension of a series.
func dimension(by string) func(sketch.Series) string {
	get := map[string]func(sketch.Series) string{
		"campaign": func(s sketch.Series) string { return s.Campaign },
		"source":   func(s sketch.Series) string { return s.Source },
		"medium":   func(s sketch.Series) string { return s.Medium },
		"country":  func(s sketch.Series) string { return s.Country },
		"device":   func(s sketch.Series) string { return s.Device },
		"region":   func(s sketch.Series) string { return s.Region },
	}[by]
	return func(s sketch.Series) string {
		if v := get(s); v != "" {
			return v
		}
		return noneKey
	}
}

// cell is one (time bucket, group) of a grid.
type cell struct {
	t   int64 // bucket start, unix seconds
	key string
}

// grid folds points into cells: time buckets of step (aligned to
// multiples of step since the Unix epoch, so 1d is a UTC day) times
// groups. Memory grows with the cells that hold data, bounded by
// maxCells; the answer's size grows with groups × buckets, bounded too.
type grid struct {
	step        int64 // seconds; 0: one bucket for the whole window
	first, last int64 // first and last bucket start
	keyOf       func(sketch.Series) string
	skipUniques bool
	maxCells    int
	boundParam  string // parameter named when the bound is hit

	cells  map[cell]*kpi.Accumulator
	groups map[string]struct{}
}

// tooLargeError is a query whose answer would exceed the bounds; it
// answers 400 naming the parameter to change.
type tooLargeError struct{ paramError }

func newGrid(w window, step time.Duration, keyOf func(sketch.Series) string, skipUniques bool, maxCells int, boundParam string) *grid {
	g := &grid{keyOf: keyOf, skipUniques: skipUniques, maxCells: maxCells, boundParam: boundParam,
		cells: make(map[cell]*kpi.Accumulator), groups: make(map[string]struct{})}
	if step > 0 {
		g.step = int64(step / time.Second)
		firstMinute := ceilMinute(w.From)
		lastMinute := ceilMinute(w.To) - 60
		g.first = floorTo(firstMinute, g.step)
		g.last = floorTo(max(lastMinute, firstMinute), g.step)
	}
	return g
}

// buckets is the number of time buckets in the window.
func (g *grid) buckets() int {
	if g.step == 0 {
		return 1
	}
	return int((g.last-g.first)/g.step) + 1
}

// add folds one point in.
func (g *grid) add(p sketch.Minute) error {
	c := cell{key: g.keyOf(p.Series)}
	if g.step > 0 {
		c.t = floorTo(p.Minute, g.step)
	}
	acc := g.cells[c]
	if acc == nil {
		if _, ok := g.groups[c.key]; !ok {
			if (len(g.groups)+1)*g.buckets() > g.maxCells {
				return &tooLargeError{paramError{g.boundParam, fmt.Sprintf(
					"the answer would exceed %d points (%d groups × %d steps so far): use a coarser step, a shorter window or fewer groups",
					g.maxCells, len(g.groups)+1, g.buckets())}}
			}
			g.groups[c.key] = struct{}{}
		}
		acc = &kpi.Accumulator{SkipUniques: g.skipUniques}
		g.cells[c] = acc
	}
	return acc.Add(p)
}

// keys returns the groups seen, sorted.
func (g *grid) keys() []string {
	ks := make([]string, 0, len(g.groups))
	for k := range g.groups {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// at returns the KPIs of a cell (zero when it holds no data).
func (g *grid) at(t int64, key string) kpi.KPIs {
	if acc := g.cells[cell{t, key}]; acc != nil {
		k, _ := acc.Result()
		return k
	}
	return kpi.KPIs{}
}

func ceilMinute(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s + (60-floorMod(s, 60))%60
}

func floorTo(v, step int64) int64 { return v - floorMod(v, step) }

func floorMod(v, m int64) int64 { return ((v % m) + m) % m }

// metricValue reads one metric of k.
func metricValue(k kpi.KPIs, m string) float64 {
	switch m {
	case "impressions":
		return float64(k.Impressions)
	case "clicks":
		return float64(k.Clicks)
	case "conversions":
		return float64(k.Conversions)
	case "pageviews":
		return float64(k.Pageviews)
	case "uniques":
		return float64(k.Uniques)
	case "revenue":
		return k.Revenue
	case "cost":
		return k.Cost
	case "ctr":
		return k.CTR
	case "cvr":
		return k.CVR
	case "cpa":
		return k.CPA
	case "roas":
		return k.ROAS
	case "bots_filtered":
		return float64(k.BotsFiltered)
	}
	panic("unknown metric " + m) // parseMetrics admits only Metrics
}
