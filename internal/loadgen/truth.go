package loadgen

import (
	"maps"
	"sync"
	"time"
)

// Key identifies a ground-truth cell: campaign, type and minute.
type Key struct {
	Campaign string
	Type     string
	Minute   int64 // unix seconds of the minute start
}

// Cell is the exact ground truth of one cell.
type Cell struct {
	// Count is the number of non-bot events.
	Count uint64
	// Bots is the number of bot events.
	Bots uint64
	// ValueMicros and CostMicros are exact sums in micro-units.
	ValueMicros, CostMicros int64
}

// Truth accumulates what was accepted. It is safe for concurrent use.
type Truth struct {
	mu       sync.Mutex
	cells    map[Key]*Cell
	visitors map[string]map[string]int64 // campaign → visitor → last ts (ms)
	votes    map[string]map[Vote]uint64  // campaign → votes
}

// Vote is a poll's answer.
type Vote struct{ Poll, Answer string }

// NewTruth returns an empty Truth.
func NewTruth() *Truth {
	return &Truth{cells: map[Key]*Cell{}, visitors: map[string]map[string]int64{}, votes: map[string]map[Vote]uint64{}}
}

// Add records events the agent accepted.
func (t *Truth) Add(events []Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range events {
		e := &events[i]
		k := Key{Campaign: e.Campaign, Type: e.Type, Minute: time.UnixMilli(e.TS).Truncate(time.Minute).Unix()}
		c := t.cells[k]
		if c == nil {
			c = &Cell{}
			t.cells[k] = c
		}
		if e.Bot {
			c.Bots++
			continue
		}
		c.Count++
		switch e.Type {
		case "conversion":
			c.ValueMicros += e.cents * 10_000
		case "cost":
			c.CostMicros += e.cents * 10_000
		case "poll_vote":
			vs := t.votes[e.Campaign]
			if vs == nil {
				vs = map[Vote]uint64{}
				t.votes[e.Campaign] = vs
			}
			vs[Vote{e.Poll, e.Answer}]++
		}
		if e.Visitor != "" && e.Type != "cost" {
			vs := t.visitors[e.Campaign]
			if vs == nil {
				vs = map[string]int64{}
				t.visitors[e.Campaign] = vs
			}
			vs[e.Visitor] = e.TS
		}
	}
}

// Cells returns a copy of every cell.
func (t *Truth) Cells() map[Key]Cell {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[Key]Cell, len(t.cells))
	for k, c := range t.cells {
		out[k] = *c
	}
	return out
}

// Uniques returns the exact number of distinct visitors of a campaign.
func (t *Truth) Uniques(campaign string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.visitors[campaign])
}

// UniquesAll returns the exact number of distinct visitors over every
// campaign: a visitor of two campaigns counts once.
func (t *Truth) UniquesAll() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	all := map[string]bool{}
	for _, vs := range t.visitors {
		for v := range vs {
			all[v] = true
		}
	}
	return len(all)
}

// Votes returns the votes of a campaign's polls by answer (bots' votes
// are not votes).
func (t *Truth) Votes(campaign string) map[Vote]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.votes[campaign])
}

// Total returns the number of events recorded, bots included.
func (t *Truth) Total() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var n uint64
	for _, c := range t.cells {
		n += c.Count + c.Bots
	}
	return n
}
