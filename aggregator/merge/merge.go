// Package merge is the aggregator's merge store: for every series-minute
// it keeps one contribution per (agent, CID) and derives the merged value
// from them (ARCHITECTURE invariant 2).
//
// A contribution's counters and quantiles are replaced when a higher
// version arrives and ignored otherwise; its HyperLogLog is the union of
// every delta received. Both rules make re-delivery harmless, in any order.
// The merged value is the merge of all contributions, recomputed when the
// minute is written, so InfluxDB always receives the complete value.
//
// # Late minutes
//
// A series-minute that is not in memory may still have state in storage:
// it is older than the window rebuilt at start (Rebuilt), or it was
// evicted. Apply creates such a minute *pending*: it takes contributions
// like any other, but TakeDirty does not hand it out for writing (unless
// the caller says its campaign is owned elsewhere, where only
// contributions are handed over) until FinishLoad has merged what
// storage holds for its campaign-minute. A merged point written from part
// of the contributions would otherwise overwrite a complete one.
//
// # Ledgers: merging after the contribution points are gone
//
// Contribution points are kept only while another node may rebuild the
// minute from them (influx.Retention.Contributions). So that later data
// still merges exactly, every merged minute is written with its ledger
// (TakeDirty sets sketch.Minute.Ledger): each contribution's agent, CID,
// version, counters and quantiles, without its HyperLogLog. A late load
// (influx.Reader.LoadContributionsOf) turns a ledger back into
// contributions, plus one of agent FoldedAgent holding the minute's
// HyperLogLog. Then the usual rules apply: a newer version of a ledger
// entry replaces its counters, an older or equal one is ignored, a new
// CID adds, and every HyperLogLog unions with the folded one, which
// already holds what the ledger's contributions saw. The folded
// contribution is never written as a contribution point nor handed over.
//
// # The live view
//
// For every campaign-minute of the last LiveWindow the store keeps the
// union of the visitors of its series (all types but cost) as the
// contributions arrive, so the live view of a campaign-minute costs one
// estimate, not a merge of every series' sketch (CampaignView).
package merge

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
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
	// wire is the cumulative state encoded as the wire carries it (for
	// hand-overs and the quarantine), and entry as it is stored (a
	// sketch.StoredContribsV1 entry with its HyperLogLog), each computed
	// when first needed and dropped when the contribution changes: a
	// round re-encodes only the contributions that changed.
	wire  *wire.Contribution
	entry []byte
}

type minute struct {
	contribs    map[ContribID]*contrib
	gen         uint64          // bumped on every change
	written     uint64          // gen last written durably
	dirtyAgents map[string]bool // agents whose contribution point must be rewritten
	touched     time.Time
	// cache is the merge of contribs until one of them changes (nil:
	// none), and ledger the stored list of contribs without their
	// HyperLogLogs (sketch.Minute.Ledger). Callers share both and must
	// not modify them.
	cache  *sketch.State
	ledger []byte
	// pending: storage may hold more of this minute (see the package
	// doc); it is not written until FinishLoad.
	pending bool
	// walFrom is 1 + the write-ahead log position of the earliest change
	// not yet written (0: none). The log may be released only before the
	// smallest walFrom of all dirty minutes (ReleasePoint).
	walFrom uint64
}

// campaignMinute indexes the series of one campaign in one minute.
type campaignMinute struct {
	series map[sketch.Series]struct{}
	// uniques is the union of every non-cost series' visitors, kept
	// while the minute is within the live window (nil otherwise).
	uniques *hyperloglog.Sketch
	live    bool
	// estimate is the uniques estimate while estimated: computed once per
	// change of the union, however often the live view asks for it.
	estimate  uint64
	estimated bool
}

// uniquesEstimate returns the estimate of the live union (0 without one).
func (c *campaignMinute) uniquesEstimate() uint64 {
	if c.uniques == nil {
		return 0
	}
	if !c.estimated {
		c.estimate, c.estimated = (&sketch.State{Uniques: c.uniques}).UniquesEstimate(), true
	}
	return c.estimate
}

// CampaignMinute names one campaign in one minute.
type CampaignMinute struct {
	Campaign string
	Minute   int64
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Minutes, Contributions          int
	Applied, Stale, Loaded, Evicted uint64
	DirtyMinutes                    int
	// PendingLoads counts campaign-minutes waiting for FinishLoad.
	PendingLoads int
}

// DefaultLiveWindow is how far back the live view is kept by default:
// the live hub's hour and a margin for minutes that are still written.
const DefaultLiveWindow = 65 * time.Minute

// Store holds open minutes. It is safe for concurrent use.
type Store struct {
	now        func() time.Time
	liveWindow time.Duration

	mu        sync.Mutex
	minutes   map[sketch.Key]*minute
	dirty     map[sketch.Key]struct{}
	campaigns map[CampaignMinute]*campaignMinute
	pending   map[CampaignMinute]struct{}
	// loadedFrom is the first minute rebuilt at start: older minutes not
	// in memory may have state in storage.
	loadedFrom                      int64
	maxEvicted                      int64 // latest minute ever evicted
	applied, stale, loaded, evicted uint64
}

// New returns an empty store.
func New() *Store {
	return &Store{now: time.Now, liveWindow: DefaultLiveWindow,
		minutes: make(map[sketch.Key]*minute, 4096), dirty: map[sketch.Key]struct{}{},
		campaigns: map[CampaignMinute]*campaignMinute{}, pending: map[CampaignMinute]struct{}{}}
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

// Rebuilt records that every minute from the given one on (unix seconds)
// was rebuilt from storage: an older minute that is not in memory is
// created pending.
func (s *Store) Rebuilt(from int64) {
	s.mu.Lock()
	s.loadedFrom = from
	s.mu.Unlock()
}

// Contains reports whether the store holds the series-minute.
func (s *Store) Contains(k sketch.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.minutes[k]
	return ok
}

// Applied is what one Apply did.
type Applied struct {
	// Changed counts the contributions that changed the store.
	Changed int
	// Late lists the campaign-minutes that got their first pending
	// minute: what storage must be asked for.
	Late []CampaignMinute
}

// Apply merges decoded contributions (as received: HLL deltas) that the
// write-ahead log holds from position at on. A minute it creates that
// storage may already hold is pending (see the package doc). The store
// keeps references to the decoded sketches; callers must not reuse them.
func (s *Store) Apply(ds []Decoded, at uint64) (Applied, error) {
	return s.applyAll(ds, at, fromWire)
}

// Replay is Apply for contributions replayed from the write-ahead log at
// start, on top of what Load rebuilt from storage: each one marks its
// minute changed, even when it brings nothing newer than what was loaded.
//
// The log holds every change not known to be written, but storage may
// hold part of it: a write round sends the contribution points and the
// merged points in separate requests, so a crash between them leaves
// contribution points that are ahead of their merged point. Loaded, they
// count as written; replayed, a contribution of the same version without
// new visitors (bots, spend, a returning visitor) changes nothing, so
// Apply would never rewrite the merged point, which would keep missing
// that contribution's last change for good.
func (s *Store) Replay(ds []Decoded, at uint64) (Applied, error) {
	return s.applyAll(ds, at, fromLog)
}

func (s *Store) applyAll(ds []Decoded, at uint64, from source) (Applied, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var res Applied
	now := s.now()
	for i := range ds {
		ok, err := s.apply(&ds[i], now, from, &res, at)
		if err != nil {
			return res, err
		}
		if ok {
			res.Changed++
		}
	}
	return res, nil
}

// Load installs contributions rebuilt from storage (cumulative HLLs). They
// count as written: loading never triggers a rewrite by itself.
func (s *Store) Load(ds []Decoded) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loadLocked(ds)
}

func (s *Store) loadLocked(ds []Decoded) error {
	now := s.now()
	for i := range ds {
		if _, err := s.apply(&ds[i], now, fromStorage, nil, 0); err != nil {
			return err
		}
	}
	return nil
}

// PendingLoads returns up to max campaign-minutes waiting for a load
// (0 = all), oldest minute first.
func (s *Store) PendingLoads(max int) []CampaignMinute {
	s.mu.Lock()
	out := make([]CampaignMinute, 0, len(s.pending))
	for cm := range s.pending {
		out = append(out, cm)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b CampaignMinute) int {
		if a.Minute != b.Minute {
			return int(a.Minute - b.Minute)
		}
		if a.Campaign < b.Campaign {
			return -1
		}
		if a.Campaign > b.Campaign {
			return 1
		}
		return 0
	})
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

// FinishLoad installs what storage held for the campaign-minutes cms
// (every series of each, as rebuilt from storage) and makes their pending
// minutes writable. A minute created pending after the caller read
// storage is made writable too: the read covered its whole
// campaign-minute.
func (s *Store) FinishLoad(cms []CampaignMinute, ds []Decoded) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(ds); err != nil {
		return err
	}
	for _, cm := range cms {
		if _, ok := s.pending[cm]; !ok {
			continue
		}
		delete(s.pending, cm)
		if c := s.campaigns[cm]; c != nil {
			for series := range c.series {
				if m := s.minutes[sketch.Key{Series: series, Minute: cm.Minute}]; m != nil {
					m.pending = false
				}
			}
		}
	}
	return nil
}

// mayBeStored reports whether a minute not in memory may have state in
// storage. The caller holds s.mu.
func (s *Store) mayBeStored(minute int64) bool {
	return minute < s.loadedFrom || minute <= s.maxEvicted
}

// source says where contributions come from, which decides what counts
// as a change (see Apply, Load and Replay).
type source int

const (
	fromWire    source = iota // from an agent or a peer: a change if newer
	fromStorage               // rebuilt from storage: already written
	fromLog                   // replayed from the write-ahead log: always a change
)

// keepReasons gives st, a contribution's current counters, a zero entry
// for every bot reason and vote answer that other, another version of the
// same contribution, has and st lacks. A newer version of an imported row
// may have fewer (a row that a later import no longer takes for a bot);
// the merged point then writes those fields as 0 rather than leaving them
// out, which would keep their old values in InfluxDB. So the keys of a
// contribution only ever grow, in whatever order its versions arrive.
// It reports whether st changed. The maps are replaced, never changed in
// place: they may be shared with the decoded state.
func keepReasons(st, other *sketch.State) bool {
	bots, addedBots := withKeys(st.Bots, other.Bots)
	votes, addedVotes := withKeys(st.Votes, other.Votes)
	st.Bots, st.Votes = bots, votes
	return addedBots || addedVotes
}

// withKeys returns m, or a copy of m with a zero entry for each key of
// other that m lacks, and whether it added any.
func withKeys(m, other map[string]uint64) (map[string]uint64, bool) {
	var out map[string]uint64
	for k := range other {
		if _, ok := m[k]; ok {
			continue
		}
		if out == nil {
			out = make(map[string]uint64, len(m)+len(other))
			maps.Copy(out, m)
		}
		out[k] = 0
	}
	if out == nil {
		return m, false
	}
	return out, true
}

func (s *Store) apply(d *Decoded, now time.Time, from source, res *Applied, at uint64) (bool, error) {
	k := d.Key
	m := s.minutes[k]
	cm := CampaignMinute{k.Series.Campaign, k.Minute}
	if m == nil {
		m = &minute{contribs: make(map[ContribID]*contrib, 2)}
		if from != fromStorage && s.mayBeStored(k.Minute) {
			m.pending = true
			if _, ok := s.pending[cm]; !ok {
				s.pending[cm] = struct{}{}
				if res != nil {
					res.Late = append(res.Late, cm)
				}
			}
		}
		s.minutes[k] = m
		c := s.campaigns[cm]
		if c == nil {
			c = &campaignMinute{series: map[sketch.Series]struct{}{}, live: k.Minute >= now.Add(-s.liveWindow).Unix()}
			s.campaigns[cm] = c
		}
		c.series[k.Series] = struct{}{}
	}
	m.touched = now
	m.cache, m.ledger = nil, nil // whatever d changes, the merge is computed again
	c := m.contribs[d.ID]
	if c == nil {
		c = &contrib{}
		m.contribs[d.ID] = c
	}
	changed := false
	if u := d.State.Uniques; u != nil {
		if c.uniques == nil {
			c.uniques = u
		} else if err := c.uniques.Merge(u); err != nil {
			return false, fmt.Errorf("merge uniques of %v: %w", d.ID, err)
		}
		// A union can leave the sketch as it was; we cannot cheaply
		// tell, so count it as a change: rewriting is idempotent.
		changed = true
		if err := s.unionLive(cm, k.Series.Type, u); err != nil {
			return false, err
		}
	}
	if d.Version > c.version {
		c.version = d.Version
		counters := *d.State
		counters.Uniques = nil
		if c.counters != nil {
			keepReasons(&counters, c.counters)
		}
		c.counters = &counters
		changed = true
	} else {
		if c.counters != nil && keepReasons(c.counters, d.State) {
			c.wire, c.entry = nil, nil
		}
		if d.State.Uniques == nil {
			s.stale++
		}
	}
	if changed {
		c.wire, c.entry = nil, nil
	}
	if from == fromLog {
		changed = true
	}
	if from == fromStorage {
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
		s.dirty[k] = struct{}{}
		if m.walFrom == 0 {
			m.walFrom = at + 1
		}
	}
	return changed, nil
}

// unionLive adds visitors to the live union of a campaign-minute. Cost
// events have no visitors worth counting (KPIs leave them out). The
// caller holds s.mu.
func (s *Store) unionLive(cm CampaignMinute, typ string, u *hyperloglog.Sketch) error {
	c := s.campaigns[cm]
	if c == nil || !c.live || typ == "cost" {
		return nil
	}
	if c.uniques == nil {
		c.uniques = sketch.NewHLL()
	}
	c.estimated = false
	if err := c.uniques.Merge(u); err != nil {
		return fmt.Errorf("merge uniques of campaign %q minute %d: %w", cm.Campaign, cm.Minute, err)
	}
	return nil
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

// ledgerOf returns the minute's ledger: every contribution (but the
// folded one a load stands on, see merge's package doc) with its
// version, counters and quantiles, ordered by agent and CID. It is
// computed once per change, like merged.
func (m *minute) ledgerOf(k sketch.Key) ([]byte, error) {
	if m.ledger != nil {
		return m.ledger, nil
	}
	ids := make([]ContribID, 0, len(m.contribs))
	for id, c := range m.contribs {
		if id.Agent != FoldedAgent && c.counters != nil {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b ContribID) int {
		if a.Agent != b.Agent {
			return strings.Compare(a.Agent, b.Agent)
		}
		return cmp.Compare(a.CID, b.CID)
	})
	entries := make([]sketch.StoredContrib, len(ids))
	for i, id := range ids {
		c := m.contribs[id]
		entries[i] = sketch.StoredContrib{Agent: id.Agent, CID: id.CID, Version: c.version, State: c.counters}
	}
	b, err := sketch.AppendStoredContribs(nil, entries, false)
	if err != nil {
		return nil, fmt.Errorf("ledger of %v: %w", k.Series, err)
	}
	m.ledger = b
	return b, nil
}

// storedEntry returns the contribution's stored entry (agent index 0,
// its HyperLogLog kept), encoding it only when it changed since the last
// call.
func (c *contrib) storedEntry(k sketch.Key, cid uint64) ([]byte, error) {
	if c.entry != nil {
		return c.entry, nil
	}
	st := sketch.State{}
	if c.counters != nil {
		st = *c.counters
	}
	st.Uniques = c.uniques
	b, err := sketch.AppendStoredContribEntry(nil, &sketch.StoredContrib{CID: cid, Version: c.version, State: &st}, 0, true)
	if err != nil {
		return nil, fmt.Errorf("encode %s@%d cid %x: %w", k.Series, k.Minute, cid, err)
	}
	c.entry = b
	return b, nil
}

// encoded returns the contribution's cumulative state as the wire
// carries it, encoding it only when it changed since the last call.
func (c *contrib) encoded(k sketch.Key, cid uint64) (wire.Contribution, error) {
	if c.wire != nil {
		return *c.wire, nil
	}
	st := sketch.State{}
	if c.counters != nil {
		st = *c.counters
	}
	st.Uniques = c.uniques
	enc, err := st.Encode()
	if err != nil {
		return wire.Contribution{}, fmt.Errorf("encode %s@%d cid %x: %w", k.Series, k.Minute, cid, err)
	}
	c.wire = &wire.Contribution{Series: k.Series, Minute: k.Minute, CID: cid, Version: c.version, State: enc}
	return *c.wire, nil
}

// AgentContribs is everything one agent contributed to one series-minute,
// with cumulative HLLs: the unit stored for rebuilds and handed to owners.
// A snapshot fills Contribs (the wire's form) for minutes handed to
// another owner, and Entries (the stored form, see
// influx.ContribPoint.Entries) with Count for the minutes it writes.
type AgentContribs struct {
	Key      sketch.Key
	Agent    string
	Contribs []wire.Contribution
	Entries  [][]byte
	Count    uint64
}

// FoldedAgent is the agent of the contribution a merged minute's ledger
// stands on (influx.FoldedAgent): it holds the minute's visitors as they
// were stored, adds no counts, and is neither stored as a contribution
// point nor handed over.
const FoldedAgent = ""

// agentContribs returns agent's contributions to m, sorted by CID, in
// the wire's form, or in the stored form when stored is true. The caller
// holds s.mu.
func agentContribs(k sketch.Key, m *minute, agent string, stored bool) (AgentContribs, error) {
	ac := AgentContribs{Key: k, Agent: agent}
	ids := make([]uint64, 0, len(m.contribs))
	for id := range m.contribs {
		if id.Agent == agent {
			ids = append(ids, id.CID)
		}
	}
	slices.Sort(ids)
	for _, cid := range ids {
		c := m.contribs[ContribID{Agent: agent, CID: cid}]
		if stored {
			e, err := c.storedEntry(k, cid)
			if err != nil {
				return ac, err
			}
			ac.Entries = append(ac.Entries, e)
			if c.counters != nil {
				ac.Count += c.counters.Count
			}
			continue
		}
		wc, err := c.encoded(k, cid)
		if err != nil {
			return ac, err
		}
		ac.Contribs = append(ac.Contribs, wc)
	}
	return ac, nil
}

// Snapshot is a set of changes to write, and the generations it covers.
type Snapshot struct {
	Minutes  []sketch.Minute
	Contribs []AgentContribs
	gens     map[sketch.Key]uint64
	// at is the write-ahead log's end when the snapshot was taken: every
	// change before it is in the snapshot (or in a minute it skipped).
	at uint64
}

// Len is the number of series-minutes in the snapshot.
func (sn *Snapshot) Len() int { return len(sn.Minutes) }

// TakeDirty returns the merged value of every changed series-minute and
// the contribution points to rewrite, up to max series-minutes (0 = all).
// A pending minute (see the package doc) is left out unless foreign says
// its campaign is owned elsewhere (its contributions are then handed
// over, which needs no complete merge). foreign may be nil. Nothing is
// marked clean until MarkWritten.
//
// at is the write-ahead log's end position, taken so that every change
// applied before it is in the store and none after it is (the caller
// orders log appends and applies under one lock with this call).
func (s *Store) TakeDirty(max int, foreign func(campaign string) bool, at uint64) (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := &Snapshot{gens: make(map[sketch.Key]uint64, len(s.dirty)), at: at}
	for k := range s.dirty {
		m := s.minutes[k]
		if m.pending && (foreign == nil || !foreign(k.Series.Campaign)) {
			continue
		}
		if max > 0 && len(sn.Minutes) >= max {
			break
		}
		merged, err := m.merged(k)
		if err != nil {
			return nil, err
		}
		owned := foreign == nil || !foreign(k.Series.Campaign)
		var ledger []byte
		if owned {
			if ledger, err = m.ledgerOf(k); err != nil {
				return nil, err
			}
		}
		sn.Minutes = append(sn.Minutes, sketch.Minute{Series: k.Series, Minute: k.Minute, State: merged, Ledger: ledger})
		sn.gens[k] = m.gen
		for agent := range m.dirtyAgents {
			if agent == FoldedAgent {
				continue
			}
			ac, err := agentContribs(k, m, agent, owned)
			if err != nil {
				return nil, err
			}
			sn.Contribs = append(sn.Contribs, ac)
		}
	}
	return sn, nil
}

// ContributionsOf returns every agent's contributions to k (cumulative),
// or nothing when k is not in memory: what a quarantine keeps of a
// series-minute storage refused.
func (s *Store) ContributionsOf(k sketch.Key) ([]AgentContribs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.minutes[k]
	if m == nil {
		return nil, nil
	}
	agents := map[string]bool{}
	for id := range m.contribs {
		if id.Agent != FoldedAgent {
			agents[id.Agent] = true
		}
	}
	var out []AgentContribs
	for _, a := range slices.Sorted(mapKeys(agents)) {
		ac, err := agentContribs(k, m, a, false)
		if err != nil {
			return nil, err
		}
		out = append(out, ac)
	}
	return out, nil
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// MarkWritten records that a snapshot is durable. Minutes that changed
// again since the snapshot stay dirty; what they still need from the
// write-ahead log starts at or after the snapshot's position.
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
			m.walFrom = 0
			delete(s.dirty, k)
		} else if m.walFrom != 0 && m.walFrom < sn.at+1 {
			m.walFrom = sn.at + 1
		}
	}
}

// ReleasePoint returns the write-ahead log position before which nothing
// is needed any more: the earliest change of a dirty minute that is not
// yet written, or ceiling (the position of the latest cut) when there is
// none.
func (s *Store) ReleasePoint(ceiling uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.dirty {
		if f := s.minutes[k].walFrom; f != 0 && f-1 < ceiling {
			ceiling = f - 1
		}
	}
	return ceiling
}

// Evict drops clean minutes that nobody touched since before. It returns
// how many it dropped. Dirty minutes are never dropped.
func (s *Store) Evict(before time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, m := range s.minutes {
		if m.gen == m.written && !m.pending && m.touched.Before(before) {
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

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Minutes: len(s.minutes), Applied: s.applied, Stale: s.stale, Loaded: s.loaded, Evicted: s.evicted,
		DirtyMinutes: len(s.dirty), PendingLoads: len(s.pending)}
	for _, m := range s.minutes {
		st.Contributions += len(m.contribs)
	}
	return st
}

// Counts returns the number of minutes in memory, dirty ones and
// campaign-minutes waiting for a load, without walking the store (for
// gauges scraped often).
func (s *Store) Counts() (minutes, dirty, pending int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.minutes), len(s.dirty), len(s.pending)
}

// Subset returns the part of a snapshot whose series-minutes keep
// selects, to mark written separately (e.g. what was written to storage
// versus what was handed to another node).
func (sn *Snapshot) Subset(keep func(sketch.Key) bool) *Snapshot {
	out := &Snapshot{gens: map[sketch.Key]uint64{}}
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
		}
	}
	out.at = sn.at
	return out
}

// CampaignView calls fn for each campaign-minute of cms within the live
// window, with the merged value of each of its series in memory and the
// estimate of its visitors over every series but cost ones: the live
// view. The estimate comes from a union kept as contributions arrive, so
// it costs one estimate however many series the campaign has. fn runs
// under the store's lock: it must be quick and must not call the store.
func (s *Store) CampaignView(cms []CampaignMinute, fn func(cm CampaignMinute, series []sketch.Minute, uniques uint64)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []sketch.Minute
	for _, cm := range cms {
		c := s.campaigns[cm]
		if c == nil || !c.live {
			continue
		}
		buf = buf[:0]
		for series := range c.series {
			k := sketch.Key{Series: series, Minute: cm.Minute}
			merged, err := s.minutes[k].merged(k)
			if err != nil {
				return err
			}
			buf = append(buf, sketch.Minute{Series: series, Minute: cm.Minute, State: merged})
		}
		uniques := c.uniquesEstimate()
		fn(cm, buf, uniques)
	}
	return nil
}

// AgeLive stops keeping the live union of campaign-minutes older than the
// live window, freeing their sketches. It returns how many it stopped.
func (s *Store) AgeLive() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.now().Add(-s.liveWindow).Unix()
	n := 0
	for cm, c := range s.campaigns {
		if c.live && cm.Minute < cut {
			c.live, c.uniques = false, nil
			n++
		}
	}
	return n
}

// forget removes a minute and its index entries. The caller holds s.mu.
func (s *Store) forget(k sketch.Key) {
	delete(s.minutes, k)
	delete(s.dirty, k)
	cm := CampaignMinute{k.Series.Campaign, k.Minute}
	if c := s.campaigns[cm]; c != nil {
		delete(c.series, k.Series)
		if len(c.series) == 0 {
			delete(s.campaigns, cm)
			delete(s.pending, cm)
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
		s.dirty[k] = struct{}{}
		n++
	}
	return n
}

// AgentEpoch names one agent's restart epoch: the live agent's
// contributions of that epoch are those whose CID has the epoch in its
// high 32 bits (and the top bit clear).
type AgentEpoch struct {
	Agent string
	Epoch uint32
}

// EpochOf returns the restart epoch of a live agent's contribution id,
// and false for the ids of backfills and imported rows (top bit set),
// which have no live counters.
func EpochOf(cid uint64) (uint32, bool) {
	if cid>>63 != 0 {
		return 0, false
	}
	return uint32(cid >> 32), true
}

// CampaignLive is CampaignView for the live view (aggregator/liveview):
// for each campaign-minute of cms within the live window it also gives the
// counters every live agent epoch has contributed to it, summed over its
// series, all read under one hold of the store's lock so they agree. fn
// runs under that lock: it must be quick, must not call the store, and
// must not keep series or totals.
func (s *Store) CampaignLive(cms []CampaignMinute, fn func(cm CampaignMinute, series []sketch.Minute, uniques uint64, totals map[AgentEpoch]wire.LiveCounters)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []sketch.Minute
	totals := map[AgentEpoch]wire.LiveCounters{}
	for _, cm := range cms {
		c := s.campaigns[cm]
		if c == nil || !c.live {
			continue
		}
		buf = buf[:0]
		clear(totals)
		for series := range c.series {
			k := sketch.Key{Series: series, Minute: cm.Minute}
			m := s.minutes[k]
			merged, err := m.merged(k)
			if err != nil {
				return err
			}
			buf = append(buf, sketch.Minute{Series: series, Minute: cm.Minute, State: merged})
			for id, ct := range m.contribs {
				ep, ok := EpochOf(id.CID)
				if !ok || ct.counters == nil {
					continue
				}
				ae := AgentEpoch{id.Agent, ep}
				t := totals[ae]
				t.AddState(series.Type, ct.counters)
				totals[ae] = t
			}
		}
		uniques := c.uniquesEstimate()
		fn(cm, buf, uniques, totals)
	}
	return nil
}
