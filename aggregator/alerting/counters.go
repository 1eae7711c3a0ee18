package alerting

import (
	"math"
	"time"

	"github.com/tally-edge/tally/aggregator/anomaly"
	"github.com/tally-edge/tally/aggregator/forecast"
	"github.com/tally-edge/tally/aggregator/influx"
	"github.com/tally-edge/tally/sketch"
)

// Step is one step (a minute live, a few minutes of history) of one
// campaign, as every detector, forecast and rule reads it.
type Step struct {
	// Counters are what the detectors judge.
	anomaly.Counters
}

// Amounts is the step as the forecaster reads it.
func (s Step) Amounts() forecast.Amounts {
	return forecast.Amounts{Spend: s.Spend, Conversions: s.Conversions, Revenue: s.Revenue, CostEvents: s.CostEvents}
}

// StepOfSeries sums the merged series-minutes of one campaign-minute.
// Uniques are the sum of each series' distinct visitors (cost series
// left out): the figure InfluxDB holds for every stored minute, so that
// the live minutes and the history they are judged against are the same
// quantity. withUniques false leaves them NaN (unknown: a peek does not
// judge them, the sketches' estimate being the one costly part).
func StepOfSeries(series []sketch.Minute, withUniques bool) Step {
	var s Step
	if !withUniques {
		s.Uniques = math.NaN()
	}
	for _, m := range series {
		st := m.State
		if st == nil {
			continue
		}
		n := float64(st.Count)
		s.add(m.Series.Type, m.Series.Source, n, float64(st.BotTotal()), sketch.FromMicros(st.ValueMicros), sketch.FromMicros(st.CostMicros))
		if withUniques && m.Series.Type != "cost" {
			s.Uniques += float64(st.UniquesEstimate())
		}
	}
	return s
}

// StepOfTotals is a stored step of history.
func StepOfTotals(t influx.StepTotals) Step {
	var s Step
	for typ, n := range t.Count {
		s.add(typ, "", float64(n), 0, 0, 0)
	}
	s.Bots = float64(t.Bots)
	s.Revenue, s.Spend = t.Revenue, t.Cost
	s.Uniques = float64(t.Uniques)
	for src, n := range t.ClicksBySource {
		if s.SourceClicks == nil {
			s.SourceClicks = map[string]float64{}
		}
		s.SourceClicks[src] += float64(n)
	}
	return s
}

func (s *Step) add(typ, source string, n, bots, value, cost float64) {
	switch typ {
	case "impression":
		s.Impressions += n
	case "click":
		s.Clicks += n
		if source != "" {
			if s.SourceClicks == nil {
				s.SourceClicks = map[string]float64{}
			}
			s.SourceClicks[source] += n
		}
	case "conversion":
		s.Conversions += n
	case "pageview":
		s.Pageviews += n
	case "cost":
		s.CostEvents += n
	}
	s.Events += n
	s.Bots += bots
	s.Revenue += value
	s.Spend += cost
}

// ring keeps a campaign's recent steps for the threshold rules and the
// budget targets: every minute of the last two hours, and hourly sums of
// the last 31 days. Steps are added in time order. A window of up to two
// hours is summed minute by minute; a longer one hour by hour, its oldest
// hour pro-rated.
type ring struct {
	minutes [120]Step
	mLast   int64 // last minute added (unix minutes); 0 before any
	hours   [31 * 24]Step
	hLast   int64 // last hour added (unix hours)
}

// add records the step that starts at t: a minute, or several minutes of
// history (those older than two hours reach only the hourly sums).
func (r *ring) add(t time.Time, s Step) {
	h, m := t.Unix()/3600, t.Unix()/60
	if r.mLast == 0 {
		r.hLast, r.mLast = h-1, m-1
	}
	nh := int64(len(r.hours))
	for k := r.hLast + 1; k <= h && k <= r.hLast+nh; k++ {
		r.hours[mod(k, nh)] = Step{}
	}
	r.hLast = max(r.hLast, h)
	if h > r.hLast-nh {
		r.hours[mod(h, nh)].merge(s)
	}
	nm := int64(len(r.minutes))
	for k := r.mLast + 1; k <= m && k <= r.mLast+nm; k++ {
		r.minutes[mod(k, nm)] = Step{}
	}
	r.mLast = max(r.mLast, m)
	if m > r.mLast-nm {
		r.minutes[mod(m, nm)].merge(s)
	}
}

// window sums the d before end (a minute boundary just after the last step
// added); ok is false when the ring holds nothing.
func (r *ring) window(end time.Time, d time.Duration) (Step, bool) {
	var sum Step
	if r.mLast == 0 || d < time.Minute {
		return sum, false
	}
	em := end.Unix() / 60
	from := em - int64(d/time.Minute)
	nm := int64(len(r.minutes))
	if from > r.mLast-nm {
		for m := from; m < em && m <= r.mLast; m++ {
			sum.merge(r.minutes[mod(m, nm)])
		}
		return sum, true
	}
	nh := int64(len(r.hours))
	fromH, lastH := from/60, (em-1)/60
	for h := max(fromH, r.hLast-nh+1); h <= lastH && h <= r.hLast; h++ {
		f := 1.0
		if h == fromH {
			f = float64(h*60+60-from) / 60
		}
		sum.mergeScaled(r.hours[mod(h, nh)], f)
	}
	return sum, true
}

func (s *Step) merge(o Step) {
	s.Impressions += o.Impressions
	s.Clicks += o.Clicks
	s.Conversions += o.Conversions
	s.Pageviews += o.Pageviews
	if !math.IsNaN(o.Uniques) {
		s.Uniques += o.Uniques
	}
	s.Revenue += o.Revenue
	s.Spend += o.Spend
	s.CostEvents += o.CostEvents
	s.Events += o.Events
	s.Bots += o.Bots
	for src, n := range o.SourceClicks {
		if s.SourceClicks == nil {
			s.SourceClicks = map[string]float64{}
		}
		s.SourceClicks[src] += n
	}
}

func (s *Step) mergeScaled(o Step, f float64) {
	s.Impressions += f * o.Impressions
	s.Clicks += f * o.Clicks
	s.Conversions += f * o.Conversions
	s.Pageviews += f * o.Pageviews
	s.Uniques += f * o.Uniques
	s.Revenue += f * o.Revenue
	s.Spend += f * o.Spend
	s.CostEvents += f * o.CostEvents
	s.Events += f * o.Events
	s.Bots += f * o.Bots
	for src, n := range o.SourceClicks {
		if s.SourceClicks == nil {
			s.SourceClicks = map[string]float64{}
		}
		s.SourceClicks[src] += f * n
	}
}

func mod(a, b int64) int64 {
	if r := a % b; r < 0 {
		return r + b
	}
	return a % b
}

// metricValue is a metric of a summed window and the volume behind it
// (the events of a count, the denominator's events of a ratio).
func metricValue(s Step, metric string) (value, volume float64, ok bool) {
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	switch anomaly.Metric(metric) {
	case anomaly.Impressions:
		return s.Impressions, s.Impressions, true
	case anomaly.Clicks:
		return s.Clicks, s.Clicks, true
	case anomaly.Conversions:
		return s.Conversions, s.Conversions, true
	case anomaly.Pageviews:
		return s.Pageviews, s.Pageviews, true
	case anomaly.Uniques:
		return s.Uniques, s.Uniques, !math.IsNaN(s.Uniques)
	case anomaly.Revenue:
		return s.Revenue, s.Conversions, true
	case anomaly.Spend:
		return s.Spend, s.CostEvents, true
	case anomaly.CTR:
		return ratio(s.Clicks, s.Impressions), s.Impressions, true
	case anomaly.CVR:
		return ratio(s.Conversions, s.Clicks), s.Clicks, true
	case anomaly.CPA:
		return ratio(s.Spend, s.Conversions), s.Conversions, true
	case anomaly.ROAS:
		return ratio(s.Revenue, s.Spend), s.CostEvents, true
	case anomaly.BotShare:
		return ratio(s.Bots, s.Bots+s.Events), s.Bots + s.Events, true
	}
	if src, ok := cutShare(metric); ok {
		return ratio(s.SourceClicks[src], s.Clicks), s.Clicks, true
	}
	return 0, 0, false
}

func cutShare(metric string) (string, bool) {
	const p = "share:source="
	if len(metric) > len(p) && metric[:len(p)] == p {
		return metric[len(p):], true
	}
	return "", false
}
