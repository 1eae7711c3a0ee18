// Package merge is the aggregator's merge store: for every series-minute
// it keeps one contribution per (agent, CID) and derives the merged value
// from them (ARCHITECTURE invariant 2).
//
// A contribution's counters and quantiles are replaced when a higher
// version arrives and ignored otherwise; its HyperLogLog is the union of
// every delta received. Both rules make re-delivery harmless, in any order.
// The merged value is the merge of all contributions, recomputed when the
// minute is written, so InfluxDB always receives the complete value.
package merge

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/axiomhq/hyperloglog"

	"github.com/tally-edge/tally/sketch"
	"github.com/tally-edge/tally/wire"
)

// ContribID identifies one agent-side state object.
type ContribID struct {
	Agent string
	CID   uint64
}

type contrib struct {
	version  uint64
	counters *sketch.State // counters and quantiles of the latest version; Uniques unused
	uniques  *hyperloglog.Sketch
}

type minute struct {
	contribs    map[ContribID]*contrib
	gen         uint64          // bumped on every change
	written     uint64          // gen last written durably
	dirtyAgents map[string]bool // agents whose contribution point must be rewritten
	touched     time.Time
	// cache is the merge of contribs until one of them changes (nil:
	// none). Callers share it and must not modify it.
	cache *sketch.State
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Minutes, Contributions          int
	Applied, Stale, Loaded, Evicted uint64
	DirtyMinutes                    int
}

// Store holds open minutes. It is safe for concurrent use.
type Store struct {
	now func() time.Time

	mu      sync.Mutex
	minutes map[sketch.Key]*minute
	// byCampaign indexes minutes by campaign and minute, so the live
	// view of one campaign-minute does not scan the store.
	byCampaign                      map[CampaignMinute]map[sketch.Series]struct{}
	applied, stale, loaded, evicted uint64
	maxEvicted                      int64 // latest minute ever evicted
}

// New returns an empty store.
func New() *Store {
	return &Store{now: time.Now, minutes: make(map[sketch.Key]*minute, 4096), byCampaign: map[CampaignMinute]map[sketch.Series]struct{}{}}
}

// Decoded is a contribution whose sketches are decoded, ready to apply.
// Decoding happens outside the store's lock.
type Decoded struct {
	Key     sketch.Key
	ID      ContribID
	Version uint64
	State   *sketch.State
}

// Decode decodes a wire contribution from agent.
func Decode(agent string, c *wire.Contribution) (Decoded, error) {
	st, err := c.State.Decode()
	if err != nil {
		return Decoded{}, fmt.Errorf("contribution %s@%d cid %x: %w", c.Series, c.Minute, c.CID, err)
	}
	return Decoded{Key: sketch.Key{Series: c.Series, Minute: c.Minute}, ID: ContribID{Agent: agent, CID: c.CID}, Version: c.Version, State: st}, nil
}

// Contains reports whether the store holds the series-minute.
func (s *Store) Contains(k sketch.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.minutes[k]
	return ok
}

// Apply merges decoded contributions (as received: HLL deltas). It returns
// how many changed the store. The store keeps references to the decoded
// sketches; callers must not reuse them.
func (s *Store) Apply(ds []Decoded) (changed int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for i := range ds {
		ok, err := s.apply(&ds[i], now, false)
		if err != nil {
			return changed, err
		}
		if ok {
			changed++
		}
	}
	return changed, nil
}

// Load installs contributions rebuilt from storage (cumulative HLLs). They
// count as written: loading never triggers a rewrite by itself.
func (s *Store) Load(ds []Decoded) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for i := range ds {
		if _, err := s.apply(&ds[i], now, true); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) apply(d *Decoded, now time.Time, loaded bool) (bool, error) {
	m := s.minutes[d.Key]
	if m == nil {
		m = &minute{contribs: make(map[ContribID]*contrib, 2)}
		s.minutes[d.Key] = m
		cm := CampaignMinute{d.Key.Series.Campaign, d.Key.Minute}
		set := s.byCampaign[cm]
		if set == nil {
			set = map[sketch.Series]struct{}{}
			s.byCampaign[cm] = set
		}
		set[d.Key.Series] = struct{}{}
	}
	m.touched = now
	m.cache = nil // whatever d changes, the merge is computed again
	c := m.contribs[d.ID]
	if c == nil {
		c = &contrib{}
		m.contribs[d.ID] = c
	}
	changed := false
	if d.State.Uniques != nil {
		if c.uniques == nil {
			c.uniques = d.State.Uniques
			changed = true
		} else {
			// A union can leave the sketch as it was; we cannot cheaply
			// tell, so count it as a change: rewriting is idempotent.
			if err := c.uniques.Merge(d.State.Uniques); err != nil {
				return false, fmt.Errorf("merge uniques of %v: %w", d.ID, err)
			}
			changed = true
		}
	}
	if d.Version > c.version {
		c.version = d.Version
		counters := *d.State
		counters.Uniques = nil
		c.counters = &counters
		changed = true
	} else if d.State.Uniques == nil {
		s.stale++
	}
	if loaded {
		s.loaded++
		return false, nil
	}
	if changed {
		s.applied++
		m.gen++
		if m.dirtyAgents == nil {
			m.dirtyAgents = make(map[string]bool, 1)
		}
		m.dirtyAgents[d.ID.Agent] = true
	}
	return changed, nil
}

// merged returns the merge of the minute's contributions. It is computed
// once per change: a write round's snapshot and its live updates, and the
// live updates of the other series of a campaign-minute round after round,
// share it. Callers must not modify it.
func (m *minute) merged(k sketch.Key) (*sketch.State, error) {
	if m.cache != nil {
		return m.cache, nil
	}
	merged := &sketch.State{}
	for _, c := range m.contribs {
		if c.counters != nil {
			if err := merged.Merge(c.counters); err != nil {
				return nil, fmt.Errorf("merge %v: %w", k.Series, err)
			}
		}
		if err := merged.MergeUniques(c.uniques); err != nil {
			return nil, fmt.Errorf("merge %v: %w", k.Series, err)
		}
	}
	m.cache = merged
	return merged, nil
}

// AgentContribs is everything one agent contributed to one series-minute,
// with cumulative HLLs: the unit stored for rebuilds.
type AgentContribs struct {
	Key      sketch.Key
	Agent    string
	Contribs []wire.Contribution
}

// Snapshot is a set of changes to write, and the generations it covers.
type Snapshot struct {
	Minutes  []sketch.Minute
	Contribs []AgentContribs
	gens     map[sketch.Key]uint64
	agents   map[sketch.Key][]string
}

// Len is the number of series-minutes in the snapshot.
func (sn *Snapshot) Len() int { return len(sn.Minutes) }

// TakeDirty returns the merged value of every changed series-minute and
// the contribution points to rewrite, up to max series-minutes (0 = all).
// Nothing is marked clean until MarkWritten.
func (s *Store) TakeDirty(max int) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := &Snapshot{gens: map[sketch.Key]uint64{}, agents: map[sketch.Key][]string{}}
	for k, m := range s.minutes {
		if m.gen == m.written {
			continue
		}
		if max > 0 && len(sn.Minutes) >= max {
			break
		}
		merged, err := m.merged(k)
		if err != nil {
			return nil, err
		}
		sn.Minutes = append(sn.Minutes, sketch.Minute{Series: k.Series, Minute: k.Minute, State: merged})
		sn.gens[k] = m.gen
		for agent := range m.dirtyAgents {
			ac := AgentContribs{Key: k, Agent: agent}
			for id, c := range m.contribs {
				if id.Agent != agent {
					continue
				}
				st := sketch.State{}
				if c.counters != nil {
					st = *c.counters
				}
				st.Uniques = c.uniques
				enc, err := st.Encode()
				if err != nil {
					return nil, err
				}
				ac.Contribs = append(ac.Contribs, wire.Contribution{Series: k.Series, Minute: k.Minute, CID: id.CID, Version: c.version, State: enc})
			}
			sort.Slice(ac.Contribs, func(i, j int) bool { return ac.Contribs[i].CID < ac.Contribs[j].CID })
			sn.Contribs = append(sn.Contribs, ac)
			sn.agents[k] = append(sn.agents[k], agent)
		}
	}
	return sn, nil
}

// MarkWritten records that a snapshot is durable. Minutes that changed
// again since the snapshot stay dirty.
func (s *Store) MarkWritten(sn *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, gen := range sn.gens {
		m := s.minutes[k]
		if m == nil {
			continue
		}
		if gen > m.written {
			m.written = gen
		}
		if m.gen == m.written {
			m.dirtyAgents = nil
		}
	}
}

// Evict drops clean minutes that nobody touched since before. It returns
// how many it dropped. Dirty minutes are never dropped.
func (s *Store) Evict(before time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, m := range s.minutes {
		if m.gen == m.written && m.touched.Before(before) {
			s.forget(k)
			if k.Minute > s.maxEvicted {
				s.maxEvicted = k.Minute
			}
			n++
		}
	}
	s.evicted += uint64(n)
	return n
}

// MaxEvictedMinute returns the latest minute ever evicted (0 if none).
// A minute at or before it that is not in memory may have state in
// storage that must be loaded before new data is merged into it.
func (s *Store) MaxEvictedMinute() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxEvicted
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Minutes: len(s.minutes), Applied: s.applied, Stale: s.stale, Loaded: s.loaded, Evicted: s.evicted}
	for _, m := range s.minutes {
		st.Contributions += len(m.contribs)
		if m.gen != m.written {
			st.DirtyMinutes++
		}
	}
	return st
}

// Subset returns the part of a snapshot whose series-minutes keep
// selects, to mark written separately (e.g. what was written to storage
// versus what was handed to another node).
func (sn *Snapshot) Subset(keep func(sketch.Key) bool) *Snapshot {
	out := &Snapshot{gens: map[sketch.Key]uint64{}, agents: map[sketch.Key][]string{}}
	for _, m := range sn.Minutes {
		if keep(m.Key()) {
			out.Minutes = append(out.Minutes, m)
		}
	}
	for _, c := range sn.Contribs {
		if keep(c.Key) {
			out.Contribs = append(out.Contribs, c)
		}
	}
	for k, g := range sn.gens {
		if keep(k) {
			out.gens[k] = g
			out.agents[k] = sn.agents[k]
		}
	}
	return out
}

// CampaignMinute names one campaign in one minute.
type CampaignMinute struct {
	Campaign string
	Minute   int64
}

// MergedOf returns the merged value of every series-minute in memory of
// the given campaign-minutes (the live view of what a write round
// touched), found through an index rather than a scan of the store.
func (s *Store) MergedOf(cms []CampaignMinute) ([]sketch.Minute, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sketch.Minute
	for _, cm := range cms {
		for series := range s.byCampaign[cm] {
			k := sketch.Key{Series: series, Minute: cm.Minute}
			merged, err := s.minutes[k].merged(k)
			if err != nil {
				return nil, err
			}
			out = append(out, sketch.Minute{Series: k.Series, Minute: k.Minute, State: merged})
		}
	}
	return out, nil
}

// forget removes a minute and its index entry. The caller holds s.mu.
func (s *Store) forget(k sketch.Key) {
	delete(s.minutes, k)
	cm := CampaignMinute{k.Series.Campaign, k.Minute}
	if set := s.byCampaign[cm]; set != nil {
		delete(set, k.Series)
		if len(set) == 0 {
			delete(s.byCampaign, cm)
		}
	}
}

// DropClean forgets the clean series-minutes that drop selects (those of
// campaigns another node now owns: if one comes back, it is rebuilt from
// storage rather than from a copy that may have fallen behind). Dirty
// minutes stay until they are written or handed over. It returns how
// many it dropped.
func (s *Store) DropClean(drop func(sketch.Key) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, m := range s.minutes {
		if m.gen == m.written && drop(k) {
			s.forget(k)
			n++
		}
	}
	return n
}

// MarkDirty marks every series-minute that keep selects as changed, with
// all its agents' contribution points, so the next write rewrites them
// from everything the store holds. A node that takes a campaign over does
// this: the merged point in storage may have been written by another node
// from fewer contributions. It returns how many it marked.
func (s *Store) MarkDirty(keep func(sketch.Key) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, m := range s.minutes {
		if !keep(k) {
			continue
		}
		m.gen++
		if m.dirtyAgents == nil {
			m.dirtyAgents = make(map[string]bool, len(m.contribs))
		}
		for id := range m.contribs {
			m.dirtyAgents[id.Agent] = true
		}
		n++
	}
	return n
}
