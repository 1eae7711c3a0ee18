// Package kpi turns merged series-minutes into the numbers marketers read:
// totals per event type, uniques merged from the sketches, and the ratios
// built from them.
package kpi

import (
	"fmt"
	"time"

	"github.com/tally-edge/tally/sketch"
)

// Point is one merged series-minute.
type Point struct {
	Series sketch.Series
	Minute int64
	State  *sketch.State
}

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
}

// Compute merges points into KPIs. It does not modify the points.
func Compute(points []Point) (KPIs, Totals, error) {
	t := Totals{ByType: map[string]uint64{}, Bots: map[string]uint64{}}
	var uniques sketch.State
	for _, p := range points {
		st := p.State
		t.ByType[p.Series.Type] += st.Count
		t.ValueMicros += st.ValueMicros
		t.CostMicros += st.CostMicros
		for r, n := range st.Bots {
			t.Bots[r] += n
		}
		if p.Series.Type != "cost" {
			if err := uniques.MergeUniques(st.Uniques); err != nil {
				return KPIs{}, t, fmt.Errorf("merge uniques of %v: %w", p.Series, err)
			}
		}
	}
	k := KPIs{
		Impressions: t.ByType["impression"],
		Clicks:      t.ByType["click"],
		Conversions: t.ByType["conversion"],
		Pageviews:   t.ByType["pageview"],
		Uniques:     uniques.UniquesEstimate(),
		Revenue:     sketch.FromMicros(t.ValueMicros),
		Cost:        sketch.FromMicros(t.CostMicros),
	}
	for _, n := range t.Bots {
		k.BotsFiltered += n
	}
	k.CTR = ratio(float64(k.Clicks), float64(k.Impressions))
	k.CVR = ratio(float64(k.Conversions), float64(k.Clicks))
	k.CPA = ratio(k.Cost, float64(k.Conversions))
	k.ROAS = ratio(k.Revenue, k.Cost)
	return k, t, nil
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
