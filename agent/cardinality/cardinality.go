// Package cardinality bounds the distinct values of the free-text series
// dimensions (campaign, source, medium) and of poll answers per minute,
// so a misbehaving client or a scanner sending random UTM values cannot
// blow up the number of series (or vote counters) at the agent, on the
// wire and in InfluxDB.
//
// Beyond the limit a value is folded into Other: its events still count,
// exactly, under the series ("(other)", …) or the poll's answer "(other)";
// only the label is lost. Every fold is counted per dimension.
package cardinality

import (
	"sync/atomic"

	"github.com/tally-edge/tally/agent/event"
	"github.com/tally-edge/tally/sketch"
)

// Other replaces a value over the limit.
const Other = "(other)"

// Dimensions guarded, in the order of Folded. "answer" counts the distinct
// (poll, answer) pairs of votes.
var Dimensions = [numDims]string{"campaign", "source", "medium", "answer"}

const numDims = 4

// Config sets the limits: distinct values per dimension per minute. Zero
// means the default of 1000; a negative value means unlimited.
type Config struct {
	MaxCampaigns, MaxSources, MaxMediums, MaxAnswers int
}

func limit(v int) int {
	switch {
	case v == 0:
		return 1000
	case v < 0:
		return int(^uint(0) >> 1)
	}
	return v
}

type minuteSets struct {
	values  [numDims]map[string]struct{}
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
	return &Guard{limits: [numDims]int{limit(cfg.MaxCampaigns), limit(cfg.MaxSources), limit(cfg.MaxMediums), limit(cfg.MaxAnswers)},
		minutes: make(map[int64]*minuteSets)}
}

// Fold rewrites, in place, the dimension values of events that would
// exceed a limit for their minute. now is the wall-clock unix second,
// used to evict idle minutes.
func (g *Guard) Fold(events []event.Event, now int64) {
	for i := range events {
		e := &events[i]
		m := g.minute(sketch.MinuteOf(e.UnixMillis), now)
		for d, p := range [3]*string{&e.Series.Campaign, &e.Series.Source, &e.Series.Medium} {
			if g.over(m, d, *p) {
				*p = Other
			}
		}
		if e.Vote != "" && g.over(m, answer, e.Vote) {
			poll, _ := sketch.SplitVote(e.Vote)
			e.Vote = sketch.VoteKey(poll, Other)
		}
	}
}

const answer = 3 // the index of "answer" in Dimensions

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
	}
}

func (g *Guard) minute(minute, now int64) *minuteSets {
	m := g.minutes[minute]
	if m == nil {
		m = &minuteSets{}
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

// Folded returns how many values were folded per dimension (Dimensions order).
// It is safe to call concurrently with Fold.
func (g *Guard) Folded() [numDims]uint64 {
	var n [numDims]uint64
	for d := range n {
		n[d] = g.folded[d].Load()
	}
	return n
}
