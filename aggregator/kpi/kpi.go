// Package kpi turns merged series-minutes into the numbers marketers read:
// totals per event type, uniques merged from the sketches, and the ratios
// built from them.
package kpi

import (
	"fmt"
	"maps"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// KPIs is the KPI contract: one flat object of numbers. Ratios with a zero
// denominator are 0.
type KPIs struct {
	Impressions uint64 `json:"impressions"`
	Clicks      uint64 `json:"clicks"`
	Conversions uint64 `json:"conversions"`
	Pageviews   uint64 `json:"pageviews"`
	// Uniques is the number of distinct visitors over the whole window and
	// every event type but cost, from the merged HyperLogLogs.
	Uniques uint64  `json:"uniques"`
	Revenue float64 `json:"revenue"`
	Cost    float64 `json:"cost"`
	// CTR is clicks/impressions, CVR conversions/clicks, CPA
	// cost/conversions and ROAS revenue/cost.
	CTR          float64 `json:"ctr"`
	CVR          float64 `json:"cvr"`
	CPA          float64 `json:"cpa"`
	ROAS         float64 `json:"roas"`
	BotsFiltered uint64  `json:"bots_filtered"`
}

// Totals are the exact sums behind KPIs, kept in integer units.
type Totals struct {
	ByType      map[string]uint64
	ValueMicros int64
	CostMicros  int64
	Bots        map[string]uint64
	// Votes counts poll votes by sketch.VoteKey.
	Votes map[string]uint64
}

// Compute merges points into KPIs. It does not modify the points.
func Compute(points []sketch.Minute) (KPIs, Totals, error) {
	var a Accumulator
	for _, p := range points {
		if err := a.Add(p); err != nil {
			return KPIs{}, a.Totals(), err
		}
	}
	k, t := a.Result()
	return k, t, nil
}

// Accumulator merges points one at a time, so a caller can fold a stream
// of points into many buckets without holding the points. The zero value
// is ready for use; it is not safe for concurrent use.
type Accumulator struct {
	// SkipUniques leaves the visitor sketches out: KPIs.Uniques stays 0,
	// and an accumulator costs a few hundred bytes instead of up to 16 KB.
	SkipUniques bool

	byType   map[string]uint64
	counters sketch.State // sums, bots and votes of every point (its Uniques unused)
	// uniques is the union of the points' visitor sketches, decoded or
	// still stored (sketch.State.UniquesStored), estimated once in Result.
	uniques sketch.Union
}

// Add merges one point into a. It does not modify or keep the point.
func (a *Accumulator) Add(p sketch.Minute) error {
	st := p.State
	if a.byType == nil {
		a.byType = make(map[string]uint64, 4)
	}
	a.byType[p.Series.Type] += st.Count
	a.counters.MergeCounters(st)
	if !a.SkipUniques && p.Series.Type != "cost" {
		if err := a.uniques.MergeSketch(st.Uniques); err != nil {
			return fmt.Errorf("merge uniques of %v: %w", p.Series, err)
		}
		if len(st.UniquesStored) > 0 {
			if err := a.uniques.MergeStored(st.UniquesStored); err != nil {
				return fmt.Errorf("merge uniques of %v at minute %d: %w", p.Series, p.Minute, err)
			}
		}
	}
	return nil
}

// Totals returns copies of the exact sums so far.
func (a *Accumulator) Totals() Totals {
	t := Totals{ByType: maps.Clone(a.byType), ValueMicros: a.counters.ValueMicros, CostMicros: a.counters.CostMicros,
		Bots: maps.Clone(a.counters.Bots), Votes: maps.Clone(a.counters.Votes)}
	if t.ByType == nil {
		t.ByType = map[string]uint64{}
	}
	if t.Bots == nil {
		t.Bots = map[string]uint64{} // "by_reason": {} rather than null
	}
	// A reason or answer at 0 (an imported row that a later import took
	// for a human) is stored, not shown.
	maps.DeleteFunc(t.Bots, func(_ string, n uint64) bool { return n == 0 })
	maps.DeleteFunc(t.Votes, func(_ string, n uint64) bool { return n == 0 })
	return t
}

// Result returns the KPIs and the exact sums of everything added.
func (a *Accumulator) Result() (KPIs, Totals) {
	t := a.Totals()
	k := KPIs{
		Impressions: t.ByType["impression"],
		Clicks:      t.ByType["click"],
		Conversions: t.ByType["conversion"],
		Pageviews:   t.ByType["pageview"],
		Uniques:     a.uniques.Estimate(),
		Revenue:     sketch.FromMicros(t.ValueMicros),
		Cost:        sketch.FromMicros(t.CostMicros),
	}
	for _, n := range t.Bots {
		k.BotsFiltered += n
	}
	k.SetRatios()
	return k, t
}

// SetRatios computes CTR, CVR, CPA and ROAS from the counts and money.
func (k *KPIs) SetRatios() {
	k.CTR = ratio(float64(k.Clicks), float64(k.Impressions))
	k.CVR = ratio(float64(k.Conversions), float64(k.Clicks))
	k.CPA = ratio(k.Cost, float64(k.Conversions))
	k.ROAS = ratio(k.Revenue, k.Cost)
}

func ratio(num, den float64) float64 {
	if den == 0 {
		return 0
	}
	return num / den
}

// Filter selects the series-minutes of one campaign in [From, To).
// Empty dimension filters match everything.
type Filter struct {
	Campaign                                string
	From, To                                time.Time
	Source, Medium, Country, Device, Region string
}
