// Package cardinality bounds the distinct values of the free-text series
// dimensions (campaign, source, medium) and of poll answers per minute,
// so a misbehaving client or a scanner sending random UTM values cannot
// blow up the number of series (or vote counters) at the agent, on the
// wire and in InfluxDB.
//
// Beyond the limit a value is folded into Other: its events still count,
// exactly, under the series ("(other)", …) or the poll's answer "(other)";
// only the label is lost. Every fold is counted per dimension.
//
// On top of the per-dimension limits, a per-minute series budget bounds
// the product: beyond MaxSeries distinct series in a minute, the events of
// a new series count in the overflow series of their type and device,
// whose campaign, source and medium are Other and country NoCountry. Type
// and device are closed sets, so the overflow adds at most a few dozen
// series whatever arrives.
package cardinality

import (
	"sync/atomic"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

// Other replaces a value over the limit.
const Other = "(other)"

// Dimensions guarded, in the order of Folded. "answer" counts the distinct
// (poll, answer) pairs of votes; "series" the events folded into an
// overflow series by the series budget.
var Dimensions = [numDims]string{"campaign", "source", "medium", "answer", "series"}

const (
	numDims   = 5
	numValues = 4 // the dimensions with value sets
	answer    = 3 // the index of "answer" in Dimensions
	series    = 4 // the index of "series" in Dimensions
)

// Config sets the limits: distinct values per dimension per minute, and
// distinct series per minute. Zero means the default (1000 values, 100000
// series); a negative value means unlimited.
type Config struct {
	MaxCampaigns, MaxSources, MaxMediums, MaxAnswers int
	MaxSeries                                        int
}

// DefaultMaxSeries is the series budget of a zero Config.MaxSeries.
const DefaultMaxSeries = 100_000

func limit(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return int(^uint(0) >> 1)
	}
	return v
}

type minuteSets struct {
	values  [numValues]map[string]struct{}
	series  map[uint64]struct{} // hashes of the series admitted
	touched int64
}

// Guard folds values over the limits. It is not safe for concurrent use:
// the collector calls it under the rollup's lock, so folding follows the
// journal's order and a replay folds nothing differently.
type Guard struct {
	limits  [numDims]int
	minutes map[int64]*minuteSets
	folded  [numDims]atomic.Uint64 // read by metrics from any goroutine
}

// New returns a Guard.
func New(cfg Config) *Guard {
	return &Guard{limits: [numDims]int{limit(cfg.MaxCampaigns, 1000), limit(cfg.MaxSources, 1000), limit(cfg.MaxMediums, 1000),
		limit(cfg.MaxAnswers, 1000), limit(cfg.MaxSeries, DefaultMaxSeries)},
		minutes: make(map[int64]*minuteSets)}
}

// overflow reports whether s is an overflow series (which the budget
// always admits: it is where the overflow goes).
func overflow(s *sketch.Series) bool {
	return s.Campaign == Other && s.Source == Other && s.Medium == Other && s.Country == event.NoCountry
}

// admitSeries records the series s (of hash k) in m and reports whether
// the budget admits it.
func (g *Guard) admitSeries(m *minuteSets, s *sketch.Series, k uint64) bool {
	if overflow(s) {
		return true
	}
	if _, ok := m.series[k]; ok {
		return true
	}
	if len(m.series) >= g.limits[series] {
		return false
	}
	m.series[k] = struct{}{}
	return true
}

// Fold rewrites, in place, the dimension values of events that would
// exceed a limit for their minute, and sets each event's Hash to that of
// its final series. now is the wall-clock unix second, used to evict idle
// minutes.
func (g *Guard) Fold(events []event.Event, now int64) {
	m, mMinute := (*minuteSets)(nil), int64(0)
	for i := range events {
		e := &events[i]
		if minute := sketch.MinuteOf(e.UnixMillis); m == nil || minute != mMinute {
			m, mMinute = g.minute(minute, now), minute
		}
		h := event.HashSeries(&e.Series)
		if _, ok := m.series[h]; ok {
			// This very series was admitted before: its values are in
			// their sets, and the budget has room for it.
			if e.Vote != "" && g.over(m, answer, e.Vote) {
				poll, _ := sketch.SplitVote(e.Vote)
				e.Vote = sketch.VoteKey(poll, Other)
			}
			e.Hash = h
			continue
		}
		folded := false
		for d, p := range [3]*string{&e.Series.Campaign, &e.Series.Source, &e.Series.Medium} {
			if g.over(m, d, *p) {
				*p, folded = Other, true
			}
		}
		if e.Vote != "" && g.over(m, answer, e.Vote) {
			poll, _ := sketch.SplitVote(e.Vote)
			e.Vote = sketch.VoteKey(poll, Other)
		}
		if folded {
			h = event.HashSeries(&e.Series)
		}
		if !g.admitSeries(m, &e.Series, h) {
			e.Series.Campaign, e.Series.Source, e.Series.Medium, e.Series.Country = Other, Other, Other, event.NoCountry
			g.folded[series].Add(1)
			h = event.HashSeries(&e.Series)
		}
		e.Hash = h
	}
}

// over records v in dimension d of minute m and reports whether it is
// over the limit (and counts the fold).
func (g *Guard) over(m *minuteSets, d int, v string) bool {
	set := m.values[d]
	if _, ok := set[v]; ok {
		return false
	}
	if len(set) >= g.limits[d] {
		g.folded[d].Add(1)
		return true
	}
	set[v] = struct{}{}
	return false
}

// Observe records events that are already folded (a journal replay)
// without counting folds again.
func (g *Guard) Observe(events []event.Event, now int64) {
	for i := range events {
		e := &events[i]
		m := g.minute(sketch.MinuteOf(e.UnixMillis), now)
		for d, v := range [3]string{e.Series.Campaign, e.Series.Source, e.Series.Medium} {
			m.values[d][v] = struct{}{}
		}
		if e.Vote != "" {
			m.values[answer][e.Vote] = struct{}{}
		}
		e.Hash = event.HashSeries(&e.Series)
		if !overflow(&e.Series) {
			m.series[e.Hash] = struct{}{}
		}
	}
}

func (g *Guard) minute(minute, now int64) *minuteSets {
	m := g.minutes[minute]
	if m == nil {
		m = &minuteSets{series: make(map[uint64]struct{})}
		for d := range m.values {
			m.values[d] = make(map[string]struct{})
		}
		g.minutes[minute] = m
	}
	m.touched = now
	return m
}

// Evict forgets minutes not touched since before (unix seconds).
func (g *Guard) Evict(before int64) {
	for k, m := range g.minutes {
		if m.touched < before {
			delete(g.minutes, k)
		}
	}
}

// EvictMinutes forgets the minutes before minute (unix seconds of event
// time): for backfills, which read hours of log in seconds, so that a
// minute the log has moved past is not kept until wall-clock time catches
// up. A late line for a forgotten minute starts its sets afresh: the
// limits then hold per contribution of that minute, still bounded.
func (g *Guard) EvictMinutes(minute int64) {
	for k := range g.minutes {
		if k < minute {
			delete(g.minutes, k)
		}
	}
}

// Folded returns how many values were folded per dimension (Dimensions order).
// It is safe to call concurrently with Fold.
func (g *Guard) Folded() [numDims]uint64 {
	var n [numDims]uint64
	for d := range n {
		n[d] = g.folded[d].Load()
	}
	return n
}
